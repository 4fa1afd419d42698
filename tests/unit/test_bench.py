"""The benchmark scripts: each starts and explains itself (--help), and the counting they rely on
(Ready pods over time, metric samples) gives the right numbers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests import builders

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = ["fallback_latency.py", "mass_fallback.py", "scale.py"]


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_explains_itself(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--operator-rev" in done.stdout and "--external-operator" in done.stdout


def pod(name: str, ready: bool, type_: str = "h100", deleting: bool = False) -> dict:
    return builders.pod(name, labels={builders.TYPE_LABEL: type_}, ready=ready, deleting=deleting)


def test_the_objects_the_benchmarks_create_are_valid():
    common = load_common()
    for body in (common.pool_machine_type("bench-a"), common.one_gpu_app("app-0", "bench", ["BENCH-A"], 2, 1.5),
                 common.one_gpu_app("app-1", "bench", ["BENCH-A", "BENCH-B"], 1)):
        builders.model(body)
    node = common.fake_node("bench-a-0", "bench-a", gpus=4)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["metadata"]["labels"][builders.POOL_LABEL] == "bench-a"


def test_the_baseline_places_the_operators_own_pods_with_no_owner_and_no_app_label():
    """The scheduler-alone runs compare with the same pods: the operator's template for the app's first
    type, but no FalApp owns them and no label makes the operator take them for an app's."""
    from falapp_operator.api import FalAppSpec, MachineType
    from falapp_operator.placement.eligibility import type_option
    from falapp_operator.reconcile.children import AppRef, pod_template

    common = load_common()
    plain = common.plain_deployment("plain-0", "bench", "bench-a", 5)
    machine_type = MachineType.model_validate(common.pool_machine_type("bench-a"))
    spec = FalAppSpec.model_validate(common.one_gpu_app("plain-0", "bench", ["BENCH-A"], 5)["spec"])
    template = pod_template(AppRef("plain-0", "bench", "uid"), spec, type_option(spec, machine_type), machine_type)
    assert plain["spec"]["template"]["spec"] == template["spec"]
    assert plain["spec"]["replicas"] == 5 and "ownerReferences" not in plain["metadata"]
    labels = plain["spec"]["template"]["metadata"]["labels"]
    assert builders.APP_LABEL not in labels and labels[common.BASELINE_APP_LABEL] == "plain-0"
    assert labels[builders.TYPE_LABEL] == "bench-a"
    assert plain["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("events, counts, total_series", [
    ([("ADDED", pod("a", False), 1)], {}, []),
    ([("ADDED", pod("a", True), 1), ("MODIFIED", pod("a", True), 2)], {"h100": 1}, [(1, 1)]),
    ([("ADDED", pod("a", True), 1), ("ADDED", pod("b", True, "a100"), 2), ("DELETED", pod("a", True), 3)],
     {"h100": 0, "a100": 1}, [(1, 1), (2, 2), (3, 1)]),
    ([("LISTED", pod("a", True), 1), ("MODIFIED", pod("a", True, deleting=True), 2)], {"h100": 0}, [(1, 1), (2, 0)]),
    ([("ADDED", pod("a", True), 1), ("MODIFIED", pod("a", False), 2), ("MODIFIED", pod("a", True), 3)],
     {"h100": 1}, [(1, 1), (2, 0), (3, 1)]),
])
def test_ready_pods_counts_ready_pods_by_label_over_time(events, counts, total_series):
    ready = load_common().ReadyPods("fal.ai/machine-type")
    for event, obj, now in events:
        ready.observe(event, obj, now)
    assert {k: v for k, v in ready.counts.items()} == counts
    assert ready.total_series == total_series
    assert ready.total() == sum(counts.values())


METRICS = """# HELP falapp_api_writes_total Write requests
# TYPE falapp_api_writes_total counter
falapp_api_writes_total{write="apply"} 12.0
falapp_api_writes_total{write="status"} 3.0
falapp_api_writes_created{write="apply"} 1.7e+09
falapp_reconciles_total{result="ok"} 40.0
falapp_reconciles_total{result="error"} 2.0
falapp_leader 1.0
"""


@pytest.mark.parametrize("name, labels, value", [
    ("falapp_api_writes_total", {}, 15.0),
    ("falapp_api_writes_total", {"write": "status"}, 3.0),
    ("falapp_reconciles_total", {}, 42.0),
    ("falapp_reconciles_total", {"result": "ok"}, 40.0),
    ("falapp_leader", {}, 1.0),
    ("falapp_api_reads_total", {}, None),
    ("falapp_api_writes_total", {"write": "resize"}, None),
])
def test_metric_value_sums_matching_samples(name, labels, value):
    assert load_common().metric_value(METRICS, name, **labels) == value


def test_a_step_of_the_wall_clock_is_seen(monkeypatch):
    """The benchmarks time events by the wall clock: a round across which it stepped (seen once here: the
    machine paused for 13.8 s mid-round, etcd's log showing it) is told apart from a slow one."""
    common = load_common()
    clock = common.WallClock()
    assert abs(clock.stepped()) < common.CLOCK_STEP_LIMIT
    real = common.time.time
    monkeypatch.setattr(common.time, "time", lambda: real() + 13.8)
    assert clock.stepped() == pytest.approx(13.8, abs=0.1)


def test_a_mass_fallback_round_across_a_clock_step_is_not_counted(monkeypatch):
    """The round is run again; the median comes from the counted rounds, the discarded one is reported."""
    import argparse
    import asyncio

    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_mass_fallback", BENCH / "mass_fallback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = iter([(4.41, 13.8), (2.0, 0.0), (1.5, 0.01), (1.8, 0.0)])

    async def measure(args):
        ratio, step = next(made)
        return {"ratio": ratio, "ratio_to_by_hand": 1.0, "by_hand_ratio": 1.0, "operator_minus_timeout_s": 1.0,
                "by_hand_minus_timeout_s": 1.0, "scheduler_alone": {"all_ready_s": 1.0}, "clock_step_s": step}

    monkeypatch.setattr(module, "measure", measure)
    result = asyncio.run(module.measure_rounds(argparse.Namespace(rounds=3)))
    assert [r["ratio"] for r in result["rounds"]] == [2.0, 1.5, 1.8]
    assert result["ratio"] == 1.8 and result["medians"]["ratio"] == 1.8
    assert result["discarded_rounds"] == [{"ratio": 4.41, "clock_step_s": 13.8}]
