"""The Argo CD health check of DjangoMigration (charts/django-migration-operator/argocd/health.lua).

Run with a real Lua 5.1 interpreter (lupa.lua51, see tests/packaging/argocd/health.py) against DjangoMigrations saved
from real runs on devcluster (tests/packaging/argocd/*.json, recorded by tests/e2e/test_chart_install.py with
DJM_RECORD_ARGOCD_FIXTURES=1), and against variants of them for the cases a run passes through too briefly to
record: no status yet, approved but not yet seen by the operator, a phase this check does not know.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from lupa.lua51 import LuaError

from django_migration_operator.workflow import PHASES, Phase
from tests.packaging.argocd.health import FIXTURES, HEALTH_LUA, evaluate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "argocd.md"


def saved(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    assert obj["kind"] == "DjangoMigration" and obj["apiVersion"] == "djangoops.dev/v1alpha1"
    return obj


def test_fixtures_are_real_runs_of_the_demo() -> None:
    """The saved objects are what the operator wrote, not hand-made: full statuses of the demo migration."""
    succeeded = saved("succeeded")["status"]
    assert [m["name"] for m in succeeded["plan"]] == ["0003_add_post_status", "0004_rollback",
                                                      "0005_ensure_data_integrity"]
    assert succeeded["backup"]["verified"] is True and succeeded["downtimeSeconds"] > 0
    failed = saved("failed")["status"]
    assert {c["type"]: c["status"] for c in failed["conditions"]}["RolledBack"] == "True"
    assert saved("awaiting-approval")["spec"]["approval"] == "Manual"
    assert saved("running")["status"]["phase"] not in ("Succeeded", "Failed", "AwaitingApproval")
    for path in FIXTURES.glob("*.json"):
        # A status never holds a secret (the operator redacts the database URL's password from all it writes); the
        # fixtures are committed, so check them too.
        assert not re.search(r"postgres(ql)?://[^\s\"]*:[^\s\"]*@", path.read_text()), path.name


def test_succeeded_is_healthy_with_the_runs_summary() -> None:
    obj = saved("succeeded")
    assert evaluate(obj) == {"status": "Healthy", "message": obj["status"]["message"]}


def test_failed_is_degraded_with_the_message_that_says_where_app_and_data_are() -> None:
    obj = saved("failed")
    health = evaluate(obj)
    assert health == {"status": "Degraded", "message": obj["status"]["message"]}
    # A run's end state says where the app and the data are; Argo CD shows it as it is.
    assert "The app runs again" in health["message"]
    assert "the database was restored from the backup" in health["message"]


def test_awaiting_approval_is_suspended() -> None:
    obj = saved("awaiting-approval")
    assert evaluate(obj) == {"status": "Suspended", "message": obj["status"]["message"]}


def test_awaiting_approval_once_approved_is_progressing() -> None:
    obj = saved("awaiting-approval")
    obj["spec"]["approval"] = "Automatic"  # the status still says AwaitingApproval until the operator looks
    assert evaluate(obj) == {"status": "Progressing", "message": "Approved; the run goes on"}


def test_a_running_phase_is_progressing_with_phase_and_message() -> None:
    obj = saved("running")
    phase, message = obj["status"]["phase"], obj["status"]["message"]
    assert evaluate(obj) == {"status": "Progressing", "message": f"{phase}: {message}"}


@pytest.mark.parametrize("phase", list(PHASES))
def test_each_phase_has_the_health_the_phase_table_says(phase: Phase) -> None:
    """health.lua against workflow.PHASES: a phase added to the operator is looked at here."""
    obj = copy.deepcopy(saved("running"))
    obj["status"]["phase"] = phase.value
    obj["spec"]["approval"] = "Manual"  # a run waiting for approval is Suspended until it is given
    assert evaluate(obj)["status"] == PHASES[phase].health


def test_no_status_yet_is_progressing() -> None:
    obj = saved("succeeded")
    del obj["status"]
    assert evaluate(obj) == {"status": "Progressing", "message": "Waiting for the operator to start the run"}
    obj["status"] = {}
    assert evaluate(obj)["status"] == "Progressing"


def test_a_phase_unknown_to_the_check_is_progressing_never_a_failure() -> None:
    # As a PreSync hook, Unknown or Degraded would fail the sync while the run goes on.
    obj = saved("running")
    obj["status"]["phase"] = "SomethingNew"
    obj["status"]["message"] = "doing it"
    assert evaluate(obj) == {"status": "Progressing", "message": "SomethingNew: doing it"}


def test_a_missing_message_falls_back_to_the_phase() -> None:
    obj = saved("failed")
    del obj["status"]["message"]
    assert evaluate(obj) == {"status": "Degraded", "message": "Failed"}


def test_the_sandbox_rejects_a_script_that_needs_a_library() -> None:
    """The interpreter really runs the script with no standard library: a check using one would fail here."""
    with pytest.raises(LuaError, match="string"):
        evaluate(saved("succeeded"), 'return {status = string.upper("healthy")}')


def test_the_docs_show_the_same_script() -> None:
    """docs/argocd.md shows the argocd-cm entry: its script must be the chart's health.lua, indented."""
    text = DOCS.read_text()
    key = "resource.customizations.health.djangoops.dev_DjangoMigration: |\n"
    assert key in text
    block = text.split(key, 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    assert "\n".join(lines).strip() == HEALTH_LUA.read_text().strip()
