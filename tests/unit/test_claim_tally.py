"""ClaimTally kept pod by pod says what counting every pending pod and every replica asked for afresh
says, after any sequence of pods claiming and releasing, replicas asked for, seen and expiring, apps
coming and going, and the catalogue renaming a type's GPUs."""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from falapp_operator.api.resources import Resources
from falapp_operator.k8s.claims import ClaimTally
from falapp_operator.placement import shape_of

AMD, NVIDIA = "amd.com/gpu", "nvidia.com/gpu"
TYPES = ("gpu-h100", "gpu-mi300", "cpu")
APPS = (("team-a", "llm"), ("team-a", "sdxl"), ("team-b", "llm"))
REQUESTS = [Resources.parse(r) for r in ({NVIDIA: "1", "cpu": "4"}, {NVIDIA: "8", "memory": "1Ti"},
                                          {AMD: "2", "cpu": "1"}, {"cpu": "500m"}, {})]

SHAPES = [(1, 4000, 0), (8, 0, 2**40), (0, 500, 0)]

ops = st.one_of(
    st.tuples(st.just("claim"), st.integers(0, 7), st.sampled_from(TYPES), st.sampled_from(APPS),
              st.sampled_from(REQUESTS)),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.sampled_from(["admit", "retire"]), st.sampled_from(APPS)),
    st.tuples(st.just("gpus"), st.fixed_dictionaries({t: st.sampled_from([NVIDIA, AMD, None]) for t in TYPES})),
    st.tuples(st.just("expect"), st.sampled_from(APPS), st.sampled_from(TYPES), st.sampled_from(SHAPES),
              st.integers(0, 3)),
    st.tuples(st.just("seen"), st.sampled_from(APPS), st.sampled_from(TYPES)),
    st.tuples(st.just("expire"), st.integers(0, 2)),
    st.tuples(st.just("forget"), st.sampled_from(APPS)),
    st.tuples(st.just("at_most"), st.sampled_from(APPS), st.sampled_from(TYPES), st.integers(-1, 3)),
)


def recount(pods: dict, expected: dict, admitted: set, gpus: dict, exclude: tuple[str, str]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for machine_type, app, requests in pods.values():
        if app in admitted and app != exclude:
            out.setdefault(machine_type, Counter())[shape_of(requests.counting(gpus.get(machine_type)))] += 1
    for (app, machine_type), entries in expected.items():
        for _, shape in entries:
            if app in admitted and app != exclude:
                out.setdefault(machine_type, Counter())[shape] += 1
    return out


@settings(max_examples=500, deadline=None)
@given(st.lists(ops, max_size=60))
# replicas asked for exactly `age` ago expire (found by mutating the expiry's comparison)
@example([("admit", APPS[0]), ("expect", APPS[0], "cpu", SHAPES[0], 2), ("expire", 1)])
# a batch expiring takes only its own replicas, not the newer ones of the same app and type (found in review)
@example([("admit", APPS[0]), ("expect", APPS[0], "cpu", SHAPES[0], 1), ("expect", APPS[0], "cpu", SHAPES[0], 1),
          ("expire", 2)])
# a replica seen is the oldest one asked for: the newer ones outlive it
@example([("admit", APPS[0]), ("expect", APPS[0], "cpu", SHAPES[0], 1), ("expect", APPS[0], "cpu", SHAPES[1], 1),
          ("seen", APPS[0], "cpu"), ("expire", 2)])
# fewer asked for: the newest go, and the oldest still expire with their batch
@example([("admit", APPS[0]), ("expect", APPS[0], "cpu", SHAPES[0], 1), ("expect", APPS[0], "cpu", SHAPES[1], 2),
          ("at_most", APPS[0], "cpu", 2), ("expire", 2), ("expire", 0)])
def test_the_tally_matches_a_recount_after_every_change(changes: list) -> None:
    tally, pods, admitted, gpus = ClaimTally(), {}, set(), {}
    expected: dict[tuple, list] = {}  # (app, type) -> [(when, shape)], oldest first
    for now, change in enumerate(changes):
        match change:
            case ("expect", app, machine_type, shape, count):
                tally.expect(app, machine_type, shape, count, now)
                expected.setdefault((app, machine_type), []).extend([(now, shape)] * count)
            case ("seen", app, machine_type):
                tally.seen(app, machine_type)
                if expected.get((app, machine_type)):
                    expected[app, machine_type].pop(0)
            case ("expire", age):
                tally.expire(now - age)
                expected = {k: [e for e in v if e[0] > now - age] for k, v in expected.items()}
            case ("at_most", app, machine_type, count):
                tally.expect_at_most(app, machine_type, count)
                kept = expected.get((app, machine_type), [])[:max(count, 0)]  # the oldest stay
                expected[app, machine_type] = kept
            case ("forget", app):
                tally.forget_expected(app)
                expected = {k: v for k, v in expected.items() if k[0] != app}
            case ("claim", uid, machine_type, app, requests):
                tally.claim(str(uid), machine_type, app, requests)
                pods[str(uid)] = (machine_type, app, requests)
            case ("release", uid):
                tally.release(str(uid))
                pods.pop(str(uid), None)
            case ("admit", app):
                tally.admit(app)
                admitted.add(app)
            case ("retire", app):
                tally.retire(app)
                admitted.discard(app)
            case ("gpus", mapping):
                tally.count_gpus_as(mapping)
                gpus = dict(mapping)
        for app in APPS:
            assert tally.expecting(app) == {t: len(v) for (a, t), v in expected.items() if a == app and v}
            assert tally.others(app) == recount(pods, expected, admitted, gpus, app), (change, app)


def test_an_app_that_is_not_admitted_claims_nothing_and_its_own_pods_still_count_for_others() -> None:
    tally = ClaimTally()
    tally.count_gpus_as({"gpu-h100": NVIDIA})
    one_gpu = REQUESTS[0]
    tally.claim("u1", "gpu-h100", APPS[0], one_gpu)
    tally.claim("u2", "gpu-h100", APPS[1], one_gpu)
    assert tally.others(APPS[2]) == {}  # nobody admitted: labels alone claim nothing
    tally.admit(APPS[0])
    tally.admit(APPS[1])
    assert tally.others(APPS[0]) == {"gpu-h100": Counter({shape_of(one_gpu.counting(NVIDIA)): 1})}
    assert tally.others(APPS[2]) == {"gpu-h100": Counter({shape_of(one_gpu.counting(NVIDIA)): 2})}
    tally.retire(APPS[1])
    tally.release("u1")
    assert tally.others(APPS[2]) == {}


def test_room_given_up_is_told_apart_from_a_claim_that_only_moves() -> None:
    """given_up (which wakes the apps that would move to those types) holds the types where an admitted
    app's claims gave up room for good, not where a pod bound or a replica's pod came (the room is still
    taken: every bind in a rollout of thousands would wake them), nor where replicas asked for expired
    (their pods are mostly late, not lost)."""
    tally = ClaimTally()
    tally.count_gpus_as({"gpu-h100": NVIDIA, "gpu-mi300": AMD})
    one_gpu, app, stranger = REQUESTS[0], APPS[0], APPS[1]
    tally.admit(app)
    steps = [
        (lambda: tally.claim("u1", "gpu-h100", app, one_gpu), set()),
        (lambda: tally.release("u1"), set()),  # bound (or judged unschedulable)
        (lambda: tally.claim("u2", "gpu-h100", app, one_gpu), set()),
        (lambda: tally.release("u2", gone=True), {"gpu-h100"}),  # deleted while pending
        (lambda: tally.release("u2", gone=True), set()),  # nothing claimed any more
        (lambda: tally.expect(app, "gpu-mi300", SHAPES[0], 3, at=1.0), set()),
        (lambda: tally.seen(app, "gpu-mi300"), set()),  # its pod came: the pod claims now
        (lambda: tally.expect_at_most(app, "gpu-mi300", 1), {"gpu-mi300"}),  # asked for fewer
        (lambda: tally.expire(deadline=1.0), set()),  # the last one is late
        (lambda: tally.claim("u3", "gpu-h100", stranger, one_gpu), set()),
        (lambda: tally.release("u3", gone=True), set()),  # a pod merely labelled as an app claimed nothing
        (lambda: tally.claim("u4", "gpu-h100", app, one_gpu), set()),
        (lambda: tally.expect(app, "gpu-mi300", SHAPES[0], 1, at=2.0), set()),
        (lambda: tally.retire(app), {"gpu-h100", "gpu-mi300"}),  # the app no longer counted: its claims go
        (lambda: tally.retire(app), set()),
    ]
    for i, (step, types) in enumerate(steps):
        tally.given_up.clear()
        step()
        assert tally.given_up == types, f"step {i}"
