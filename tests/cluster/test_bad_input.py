"""The bad-input table (tests/bad_input.py) applied for real: each row the models refuse, the API server
refuses naming the same field (and our message); each row only the operator can judge, the API server
accepts and the running operator reports Stalled=True InvalidSpec naming the field, creating nothing.
tests/unit/test_bad_input.py runs the same rows against the models."""

from __future__ import annotations

import json

import pytest

from tests.bad_input import BAD_INPUT, GOOD_INPUT, PRIVATE, BadCase, GoodCase, Judge, case_id
from tests.builders import falapp, machine_type
from tests.cluster.helpers import events_for, wait_condition
from tests.kube import Kubectl, condition


@pytest.mark.parametrize("case", [c for c in BAD_INPUT if c.judge is Judge.APPLY], ids=case_id)
def test_bad_input_is_refused_at_apply_naming_the_field(kubectl: Kubectl, crds, case: BadCase):
    # JSON, not YAML: kubectl reads a bare N or y in YAML as a boolean
    result = kubectl.apply(json.dumps(case.body), "--dry-run=server", check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert case.field in result.stderr, result.stderr
    if case.message:
        assert case.message in result.stderr, result.stderr


@pytest.mark.parametrize("case", GOOD_INPUT, ids=case_id)
def test_good_input_is_accepted_by_the_apiserver(kubectl: Kubectl, crds, case: GoodCase):
    result = kubectl.apply(json.dumps(case.body), "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr


def _in_namespace(value, namespace: str):
    """`value` with the row's private MachineType renamed gpu-<namespace> (MachineTypes are cluster-wide)."""
    name = f"gpu-{namespace}"
    return json.loads(json.dumps(value).replace(PRIVATE, name.upper()).replace(PRIVATE.lower(), name))


@pytest.mark.parametrize("case", [c for c in BAD_INPUT if c.judge is Judge.OPERATOR], ids=case_id)
def test_what_only_the_operator_judges_stalls_with_invalid_spec(kctl: Kubectl, kubectl: Kubectl, running_operator,
                                                                case: BadCase):
    app, words = _in_namespace(case.body, kctl.namespace), _in_namespace([case.field, case.message, *case.words],
                                                                        kctl.namespace)
    name = app["metadata"]["name"]
    if case.machine_type:
        kubectl.apply(_in_namespace(case.machine_type, kctl.namespace))
    try:
        kctl.apply(json.dumps(app))  # the API server accepts it
        stalled = wait_condition(kctl, "falapp", name, "Stalled", "True", "InvalidSpec", timeout=30)
        for word in words:
            assert word in stalled["message"]
        ready = condition(kctl.get("falapp", name), "Ready")
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        warnings = events_for(kctl, name, "InvalidSpec")
        assert warnings and warnings[0]["type"] == "Warning"
        assert not kctl.get("deployments")["items"], "children were created for an invalid spec"
        if not case.machine_type:  # fixing the spec recovers without a restart
            kctl.apply(falapp(name, machineTypes=["M"], numGpus=0))
            wait_condition(kctl, "falapp", name, "Stalled", "False", timeout=30)
    finally:
        if case.machine_type:
            kubectl.run("delete", "machinetype", f"gpu-{kctl.namespace}", "--wait=false")


def test_adding_the_missing_machine_type_recovers_a_stalled_app(kctl: Kubectl, kubectl: Kubectl, running_operator):
    name = f"gpu-{kctl.namespace}"
    kctl.apply(falapp("bad", machineTypes=[name.upper()], numGpus=1))
    wait_condition(kctl, "falapp", "bad", "Stalled", "True", "InvalidSpec", timeout=30)
    kubectl.apply(machine_type(name, nodeAffinity=None, tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]))
    try:
        wait_condition(kctl, "falapp", "bad", "Stalled", "False", timeout=30)
        assert kctl.get("deployments")["items"], "no Deployment after the type appeared"
    finally:
        kubectl.run("delete", "machinetype", name, "--wait=false")
