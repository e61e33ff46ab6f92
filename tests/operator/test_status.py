"""The status vocabulary: its shape against the CRD's schema, its names, and the one reader of a condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from django_migration_operator.status import (
    Backup,
    Condition,
    ConditionType,
    Failure,
    NotStarted,
    OpeningWindow,
    Reason,
    Rehearsal,
    Restore,
    RowCount,
    RunStatus,
    condition,
)

CRD = Path(__file__).resolve().parents[2] / "crds" / "djangomigrations.djangoops.dev.yaml"


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def test_run_status_names_every_field_of_the_schema_and_no_other() -> None:
    assert set(RunStatus.__annotations__) == set(status_schema()["properties"])


@pytest.mark.parametrize(("field", "shape"), [
    ("conditions", Condition), ("backup", Backup), ("restore", Restore), ("rehearsal", Rehearsal),
    ("window", OpeningWindow), ("notStarted", NotStarted), ("failure", Failure)])
def test_each_record_in_the_status_names_fields_of_the_schema(field: str, shape: type) -> None:
    schema = status_schema()["properties"][field]
    properties = (schema["items"] if schema["type"] == "array" else schema)["properties"]
    assert set(shape.__annotations__) <= set(properties), f"status.{field}: a field the CRD would prune"


def test_row_counts_are_before_and_after() -> None:
    assert set(RowCount.__annotations__) == {"before", "after"}


def test_no_reason_is_also_a_condition_type() -> None:
    # Kubernetes conventions: a condition type is a state (Migrated), a reason a cause (PlanApplied); one word for
    # both makes `reason Migrated` and `Migrated=True` hard to tell apart in kubectl describe and in alerts.
    assert not {str(reason) for reason in Reason} & {str(kind) for kind in ConditionType}


def test_reasons_and_condition_types_are_camel_case() -> None:
    for name in [*Reason, *ConditionType]:
        assert name[0].isupper() and name.isalnum(), name


def test_condition_reads_the_condition_of_that_type() -> None:
    status: RunStatus = {"conditions": [
        {"type": "RolledBack", "status": "True", "reason": "Restored"},
        {"type": "Succeeded", "status": "False", "reason": "MigrationFailed"}]}
    assert condition(status, ConditionType.SUCCEEDED) == {"type": "Succeeded", "status": "False",
                                                          "reason": "MigrationFailed"}
    assert condition(status, ConditionType.ROLLED_BACK).get("status") == "True"


def test_a_condition_the_status_does_not_have_reads_empty() -> None:
    assert condition({}, ConditionType.SUCCEEDED) == {}
    assert condition({"conditions": []}, ConditionType.VERIFIED).get("reason") is None
