"""The bad-input table (tests/bad_input.py) against the models: every row the API server refuses at
apply time, pydantic refuses naming the same field (and our message); every row only the operator can
judge, the models accept and the operator's catalogue check refuses naming the field. The cluster side
(tests/cluster/test_bad_input.py) runs the same rows against the API server and the running operator."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from falapp_operator.api import DEFAULT_CATALOG, FalApp, MachineType
from falapp_operator.placement.eligibility import resolve
from tests.bad_input import BAD_INPUT, GOOD_INPUT, BadCase, GoodCase, Judge, case_id
from tests.builders import model

NAMESPACE = "team-a"


def _loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@pytest.mark.parametrize("case", [c for c in BAD_INPUT if c.judge is Judge.APPLY], ids=case_id)
def test_bad_input_is_refused_naming_the_field(case: BadCase) -> None:
    with pytest.raises(ValidationError) as info:
        model(case.body)
    errors = info.value.errors()
    leaf = case.field.rsplit(".", 1)[-1].split("[")[0]

    def names_field(err: dict[str, Any]) -> bool:
        loc = _loc(err["loc"])
        return loc.startswith(case.field) or (case.field.startswith(loc) and leaf in err["msg"])

    assert any(names_field(e) for e in errors), errors
    if case.message:
        assert any(case.message in e["msg"] for e in errors), errors


@pytest.mark.parametrize("case", [c for c in BAD_INPUT if c.judge is Judge.OPERATOR], ids=case_id)
def test_what_only_the_operator_judges_is_valid_alone_and_refused_against_the_catalogue(case: BadCase) -> None:
    app = FalApp.model_validate(case.body)  # the model (as the API server) accepts it
    catalogue = list(DEFAULT_CATALOG)
    if case.machine_type:
        catalogue.append(MachineType.model_validate(case.machine_type))
    problem = resolve(app.spec, catalogue, NAMESPACE, {"kubernetes.io/metadata.name": NAMESPACE}).problem
    assert problem is not None, f"{case.id}: the catalogue check accepted it"
    for word in (case.field, case.message, *case.words):
        assert word in problem, problem


@pytest.mark.parametrize("case", GOOD_INPUT, ids=case_id)
def test_good_input_is_accepted(case: GoodCase) -> None:
    obj = model(case.body)
    assert obj.to_wire()["spec"] if isinstance(obj, MachineType) else obj.spec.to_wire()
