"""ClaimTally kept pod by pod says what counting every pending pod afresh says, after any sequence of
pods claiming and releasing, apps coming and going, and the catalogue renaming a type's GPUs."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from falapp_operator.api.resources import Resources
from falapp_operator.k8s.claims import ClaimTally
from falapp_operator.placement import shape_of

AMD, NVIDIA = "amd.com/gpu", "nvidia.com/gpu"
TYPES = ("gpu-h100", "gpu-mi300", "cpu")
APPS = (("team-a", "llm"), ("team-a", "sdxl"), ("team-b", "llm"))
REQUESTS = [Resources.parse(r) for r in ({NVIDIA: "1", "cpu": "4"}, {NVIDIA: "8", "memory": "1Ti"},
                                          {AMD: "2", "cpu": "1"}, {"cpu": "500m"}, {})]

ops = st.one_of(
    st.tuples(st.just("claim"), st.integers(0, 7), st.sampled_from(TYPES), st.sampled_from(APPS),
              st.sampled_from(REQUESTS)),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.sampled_from(["admit", "retire"]), st.sampled_from(APPS)),
    st.tuples(st.just("gpus"), st.fixed_dictionaries({t: st.sampled_from([NVIDIA, AMD, None]) for t in TYPES})),
)


def recount(pods: dict, admitted: set, gpus: dict, exclude: tuple[str, str]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for machine_type, app, requests in pods.values():
        if app in admitted and app != exclude:
            out.setdefault(machine_type, Counter())[shape_of(requests.counting(gpus.get(machine_type)))] += 1
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, max_size=60))
def test_the_tally_matches_a_recount_after_every_change(changes: list) -> None:
    tally, pods, admitted, gpus = ClaimTally(), {}, set(), {}
    for change in changes:
        match change:
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
            assert tally.others(app) == recount(pods, admitted, gpus, app), (change, app)


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
