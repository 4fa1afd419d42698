"""Leader election (k8s/leader.py) against a fake API server on loopback: a free Lease is taken, of two
candidates racing for it one wins (the other's write conflicts), a Lease its holder stopped renewing is
taken over after its duration, a leader that cannot renew (errors, a request that hangs) or whose Lease
another took stops leading, and so stops writing, before anyone may take over; a clean shutdown frees it.
Durations here are a second or less."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from falapp_operator.k8s.client import ApiError, KubeApi, NotLeading
from falapp_operator.k8s.leader import LeaderElector
from tests.unit.fake_api import FakeApiServer, serving

LEASES = "/apis/coordination.k8s.io/v1/namespaces/ops/leases"
LEASE = f"{LEASES}/falapp-operator"
DURATION, RENEW_DEADLINE, RETRY = 1.0, 0.5, 0.05


@pytest_asyncio.fixture(loop_scope="function")
async def served() -> AsyncIterator[tuple[FakeApiServer, KubeApi]]:
    async with serving() as pair:
        yield pair


def candidate(api: KubeApi, identity: str) -> LeaderElector:
    return LeaderElector(api, "falapp-operator", "ops", identity, DURATION, RENEW_DEADLINE, RETRY)


class Campaign:
    """A candidate's run() in the background."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.elected = asyncio.Event()
        self.task = asyncio.create_task(elector.run(self.elected.set))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def within(seconds: float, condition: Callable[[], bool]) -> float:
    """Wait until `condition` holds, at most `seconds`; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def holder(fake: FakeApiServer) -> str | None:
    return fake.objects[LEASE]["spec"].get("holderIdentity")


async def test_a_free_lease_is_taken_and_renewed(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    campaign = Campaign(candidate(api, "a"))
    await asyncio.wait_for(campaign.elected.wait(), 2)
    assert campaign.elector.leading()
    created = fake.requests[1]  # after the read that found no Lease
    assert (created.method, created.path) == ("POST", LEASES)
    spec = fake.objects[LEASE]["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 1 and spec["leaseTransitions"] == 0
    acquired, renewed = spec["acquireTime"], spec["renewTime"]
    await within(2, lambda: fake.objects[LEASE]["spec"]["renewTime"] != renewed)
    spec = fake.objects[LEASE]["spec"]
    assert fake.requests[-1].method == "PUT" and spec["acquireTime"] == acquired and spec["leaseTransitions"] == 0
    await campaign.stop()
    assert not campaign.elector.leading()


async def test_of_two_candidates_racing_for_a_free_lease_one_leads(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    campaigns = [Campaign(candidate(api, name)) for name in ("a", "b")]
    await asyncio.wait_for(asyncio.wait([asyncio.create_task(c.elected.wait()) for c in campaigns],
                                        return_when=asyncio.FIRST_COMPLETED), 2)
    await asyncio.sleep(5 * RETRY)  # the loser keeps trying meanwhile
    leading = [c.elector.identity for c in campaigns if c.elector.leading()]
    assert leading == [holder(fake)]
    assert len([r for r in fake.requests if r.method == "POST"]) == 2, "both tried to create it"
    for campaign in campaigns:
        await campaign.stop()


async def test_a_lease_its_holder_stopped_renewing_is_taken_over_after_its_duration(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    long_ago = "2025-01-01T00:00:00.000000Z"
    fake.put(LEASE, {"metadata": {"name": "falapp-operator", "namespace": "ops"},
                     "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1, "leaseTransitions": 4,
                              "acquireTime": long_ago, "renewTime": long_ago}})
    campaign = Campaign(candidate(api, "b"))
    took = await within(3, campaign.elector.leading)
    assert took >= 0.9, "taken before the holder's lease ran out on this candidate's own clock"
    spec = fake.objects[LEASE]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 5
    assert spec["acquireTime"] != long_ago
    await campaign.stop()


async def test_a_lease_renewed_by_its_holder_is_not_taken(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    leader = Campaign(candidate(api, "a"))
    await asyncio.wait_for(leader.elected.wait(), 2)
    other = Campaign(candidate(api, "b"))
    await asyncio.sleep(1.5 * DURATION)
    assert leader.elector.leading() and not other.elector.leading() and holder(fake) == "a"
    for campaign in (leader, other):
        await campaign.stop()


async def test_a_leader_whose_lease_another_took_stops_leading(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    elector = candidate(api, "a")
    api.may_write = elector.leading
    campaign = Campaign(elector)
    await asyncio.wait_for(campaign.elected.wait(), 2)
    lease = fake.objects[LEASE]
    fake.put(LEASE, {**lease, "spec": {**lease["spec"], "holderIdentity": "b"}})
    await asyncio.wait_for(campaign.task, 2)  # run() returns: the process stops writing and exits
    assert not elector.leading()
    with pytest.raises(NotLeading):
        await api.patch_falapp_status("team-a", "llm", {})


@pytest.mark.parametrize("trouble", ["errors", "hangs"])
async def test_a_leader_that_cannot_renew_stops_before_anyone_may_take_over(
        served: tuple[FakeApiServer, KubeApi], trouble: str) -> None:
    fake, api = served
    elector = candidate(api, "a")
    campaign = Campaign(elector)
    await asyncio.wait_for(campaign.elected.wait(), 2)
    renewed = fake.objects[LEASE]["spec"]["renewTime"]
    await within(2, lambda: fake.objects[LEASE]["spec"]["renewTime"] != renewed)
    if trouble == "errors":
        fake.fail("GET", LEASE, 503, times=1000)
    else:
        fake.slow("GET", LEASE, 2 * DURATION, times=1000)
    since = time.monotonic()
    took = await within(2 * DURATION, lambda: not elector.leading())
    await asyncio.wait_for(campaign.task, 2 * DURATION)
    # leadership ends within the renew deadline of the last renewal's start: before the Lease's duration
    # lets a candidate take over
    assert took < DURATION, took
    assert time.monotonic() - since < 2 * DURATION


async def test_a_clean_shutdown_frees_the_lease_for_the_next_candidate(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    first = Campaign(candidate(api, "a"))
    await asyncio.wait_for(first.elected.wait(), 2)
    await first.stop()
    await first.elector.release()
    spec = fake.objects[LEASE]["spec"]
    assert "holderIdentity" not in spec and spec["leaseDurationSeconds"] == 1
    second = Campaign(candidate(api, "b"))
    took = await within(2, second.elector.leading)
    assert took < DURATION / 2, "the next candidate waited for the released Lease to expire"
    assert fake.objects[LEASE]["spec"]["leaseTransitions"] == 1
    await second.stop()


async def test_a_candidate_never_elected_releases_nothing(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    await candidate(api, "a").release()
    assert fake.requests == []


async def test_a_write_not_answered_while_its_sender_leads_is_given_up(served: tuple[FakeApiServer, KubeApi]) -> None:
    """A write held up (a saturated API server) must not land after a standby may have taken over: the
    client gives up on it once the Lease's duration has run from the last renewal's start, and its outcome
    is unknown (a transient error: read fresh next). (Was: it waited up to the request timeout, landing
    under the same field manager over the new leader's writes.)"""
    fake, api = served
    elector = candidate(api, "a")
    api.may_write, api.leading_for = elector.leading, elector.time_left
    campaign = Campaign(elector)
    await asyncio.wait_for(campaign.elected.wait(), 2)
    # a margin before the earliest takeover: the API server may still carry out a write given up on
    assert elector.time_left() <= DURATION - (DURATION - RENEW_DEADLINE) / 2
    fake.fail("GET", LEASE, 503, times=1000)  # no renewal from now on: leadership ends within RENEW_DEADLINE
    fake.slow("PATCH", "/falapps/llm/status", 2 * DURATION)
    sent = time.monotonic()
    with pytest.raises(ApiError) as refused:
        await api.patch_falapp_status("team-a", "llm", {})
    assert refused.value.transient and time.monotonic() - sent <= DURATION + 0.2
    await asyncio.wait_for(campaign.task, 2 * DURATION)
