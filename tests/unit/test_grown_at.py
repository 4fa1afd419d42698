"""The Deployment's fal.ai/grown-at annotation: when the operator last raised a type's replicas, the time a
lost pool's replicas count from. Written on a raise only, kept as it is otherwise (no write storm), and
a value nobody could have written as the operator (to come, or not a time) is not believed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from falapp_operator.api import format_micro_time, parse_time_or_none
from falapp_operator.api.names import GROWN_ANNOTATION
from falapp_operator.reconcile.app import plan
from falapp_operator.reconcile.observe import children_state
from tests.unit.status_samples import A100, H100, NOW, pod, room, snapshot, spec


def grown_at_written(snap) -> dict[str, str | None]:
    return {d["metadata"]["labels"]["fal.ai/machine-type"]: d["metadata"]["annotations"].get(GROWN_ANNOTATION)
            for d in plan(snap).deployments}


def test_a_raise_writes_the_time_and_a_steady_type_keeps_its_own() -> None:
    earlier = NOW - timedelta(hours=2)
    snap = snapshot(spec(replicas=2), counts={H100: 1}, pods=[pod("h1", H100, ready=True)])
    assert grown_at_written(replace(snap, grown_at={H100: earlier})) == {H100: format_micro_time(NOW)}
    steady = snapshot(spec(replicas=1), counts={H100: 1}, pods=[pod("h1", H100, ready=True)])
    assert grown_at_written(replace(steady, grown_at={H100: earlier})) == {H100: format_micro_time(earlier)}
    assert grown_at_written(steady) == {H100: None}, "a Deployment of an older version is not written for it"


def test_a_time_to_come_is_not_believed_nor_written_back() -> None:
    steady = snapshot(spec(replicas=1), counts={H100: 1}, pods=[pod("h1", H100, ready=True)])
    assert grown_at_written(replace(steady, grown_at={H100: NOW + timedelta(days=700)})) == {H100: None}
    # the clock's offset to the API server moves by up to a second: the operator's own time is kept
    assert grown_at_written(replace(steady, grown_at={H100: NOW + timedelta(seconds=1)})) == {
        H100: format_micro_time(NOW + timedelta(seconds=1))}


def test_what_is_not_a_time_reads_as_none() -> None:
    for value in ("0001-01-01T00:00:00+01:00", "soon", "", None, 7):
        assert parse_time_or_none(value) is None, value
    deployment = {"metadata": {"name": "d", "labels": {"fal.ai/machine-type": A100},
                               "annotations": {GROWN_ANNOTATION: "0001-01-01T00:00:00+01:00"}},
                  "spec": {"replicas": 1}}
    assert children_state([deployment]).grown_at == {}


def test_a_deployment_of_an_older_version_counts_as_raised_before_the_start_and_is_not_written_for_it() -> None:
    started = NOW - timedelta(minutes=5)
    steady = snapshot(spec(replicas=1), counts={H100: 1}, pods=[pod("h1", H100, ready=True)])
    assert grown_at_written(replace(steady, raised_before=started)) == {H100: None}, "no write on upgrade"
    # and its replicas that went with a lost pool are not waited for until its next raise
    lost = replace(snapshot(spec(replicas=2), counts={H100: 2}, free={H100: [], A100: room()}),
                   nodeless_since={H100: NOW - timedelta(minutes=2)}, raised_before=started)
    assert plan(lost).decision.counts == {A100: 2}
    assert plan(replace(lost, raised_before=None)).decision.counts == {H100: 2}, "else awaited"
