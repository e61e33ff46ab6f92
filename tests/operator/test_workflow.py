"""The run's state machine, without a cluster: every transition, and a restart in the middle of each step."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from django_migration_operator import messages
from django_migration_operator.classify import MigrationClass
from django_migration_operator.jobs import BACKUP_MARKER
from django_migration_operator.plan import PLAN_MARKER
from django_migration_operator.resource import Spec
from django_migration_operator.status import Reason, RunStatus
from django_migration_operator.workflow import (
    PHASES,
    POD_END_MARGIN_SECONDS,
    WAITING_FOR_SLOT,
    WAITING_TO_PLAN,
    AcquireLease,
    CreateJob,
    DeleteJob,
    DropScratch,
    Phase,
    ReleaseLease,
    Scale,
    SetImages,
    Step,
    advance,
    holds_slot,
    online_migrations,
    queued_for,
    queued_for_lease,
)
from django_migration_operator.world import DeploymentState, EndingPod, JobState, Slots, World

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
PLAN = [{"app": "blog", "name": "0003_add_post_status", "atomic": True, "reversible": True, "backwards": False,
         "operations": ["AddField"]}]
# What the plan script prints for it: the facts the classifier reads.
SCRIPT_PLAN = [{**PLAN[0], "declared": None, "details": [{
    "type": "AddField", "module": "django.db.migrations.operations.fields", "describe": "Add field status to post",
    "field": {"column": "status", "dbType": "varchar(20)", "null": False, "dbDefault": True, "default": True,
              "manyToMany": False, "generated": False}}]}]
CLASSIFIED = [{**PLAN[0], "class": "expand", "reason": "Add field status to post: a new column with a database "
                                                       "default, which fills it for the running release"}]


def spec(**top_level: Any) -> Spec:
    body: dict[str, Any] = {
        "app": {"deployment": "web", "stop": ["worker"]},
        "database": {"urlSecret": {"name": "db", "key": "url"}},
        "backup": {"volumeClaim": "backups"},
        "verify": {"rowCounts": ["blog_post"],
                   "checks": [{"name": "no orphans", "sql": "SELECT 0", "expect": "0"}]},
    }
    return Spec.from_body({**body, **top_level})


def running(replicas: int, pods: int | None = None, available: int | None = None,
            serving: int | None = None) -> DeploymentState:
    """Every pod Ready unless `serving` says how many are."""
    pods = replicas if pods is None else pods
    return DeploymentState(replicas=replicas, pods=pods, serving=pods if serving is None else serving,
                           available=replicas if available is None else available, rolled_out=True)


def plan_log(plan: list[dict[str, Any]]) -> str:
    return f"some warning\n{PLAN_MARKER}{json.dumps({'plan': plan})}\n"


def backup_log(verified: bool = True) -> str:
    record = {"path": "/backups/web/run.dump", "sizeBytes": 2048, "format": "custom", "verified": verified}
    return f"{BACKUP_MARKER}{json.dumps(record)}\n"


def apply(status: RunStatus, step: Step) -> RunStatus:
    """What the driver does with a step's status: a merge patch."""
    return {**status, **step.status}


def conditions(status: RunStatus) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


def reasons(status: RunStatus) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in status.get("conditions", [])}


class TestHappyPath:
    def test_a_run_goes_from_pending_to_succeeded(self) -> None:
        s = spec()
        status: RunStatus = {}

        step = advance(s, status, World(now=NOW))
        assert step.actions == [AcquireLease()] and not step.status and not step.wait, "the Lease before the phase"
        step = advance(s, status, World(now=NOW, lease_ours=True))
        assert step.status["phase"] == Phase.PLANNING and not step.actions
        status = apply(status, step)

        step = advance(s, status, World(now=NOW))
        assert step.actions == [CreateJob("plan")]
        status = apply(status, step)
        # Recorded, then the operator died before the create: the Job is created now, under the same name.
        assert advance(s, status, World(now=NOW)) == Step(actions=[CreateJob("plan")])
        assert advance(s, status, World(now=NOW, job=JobState(None, None, ""))).wait

        step = advance(s, status, World(now=NOW, job=JobState("Complete", None, plan_log(SCRIPT_PLAN))))
        assert step.status["phase"] == Phase.SCALING_DOWN
        assert step.status["plan"] == CLASSIFIED and step.status["planCount"] == 1, "classes, not the facts"
        assert step.status["strategy"] == "Offline"
        status = apply(status, step)

        world = World(now=NOW, deployments={"web": running(2), "worker": running(1)})
        step = advance(s, status, world)
        assert step.status["replicas"] == {"web": 2, "worker": 1}, "replicas are recorded before anything scales"
        assert step.actions == [Scale("web", 0), Scale("worker", 0)] and step.wait, "the status is written first"
        # A restart between the record and the scale: the record says the app's size, and the scale is done again.
        status = apply(status, step)
        step = advance(s, status, world)
        assert step.actions == [Scale("web", 0), Scale("worker", 0)] and step.wait and not step.status
        # The web pod in its preStop, still Ready: a Service still routes to it, so the app serves.
        stopping = World(now=NOW, deployments={"web": running(0, pods=1), "worker": running(0, pods=0)})
        step = advance(s, status, stopping)
        assert step.wait and not step.actions and not step.status
        gone = NOW + timedelta(seconds=2)
        not_serving = World(now=gone, deployments={"web": running(0, pods=1, serving=0), "worker": running(0)})
        step = advance(s, status, not_serving)
        assert step.status == {"servingEndedAt": "2026-11-24T12:00:02.000Z"} and step.wait and not step.actions
        # A restarted operator's first look finds the pods no longer serving: when they stopped is unknown, so the
        # downtime counts from the scale-down's start, never short.
        after_restart = advance(s, status, replace(not_serving, first_look=True))
        assert after_restart.status == {"servingEndedAt": status["stoppedAt"]} != step.status
        status = apply(status, step)
        assert not advance(s, status, not_serving).status, "recorded once: the downtime counts from there"

        stopped = {"web": running(0), "worker": running(0)}
        step = advance(s, status, World(now=gone, deployments=stopped, row_counts={"blog_post": 200}))
        assert step.status["phase"] == Phase.BACKING_UP
        # The last pod gone: the rows counted and the backup Job recorded and created in the same step.
        assert step.status["rowCounts"] == {"blog_post": {"before": 200}}, "counted before the dump, in one step"
        assert step.status["jobs"] == {"plan": "plan", "backup": "backup"} and step.actions == [CreateJob("backup")]
        assert [event.reason for event in step.events] == [Phase.BACKING_UP]
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=stopped, job=JobState("Complete", None, backup_log())))
        assert step.status["phase"] == Phase.MIGRATING
        assert step.status["backup"]["verified"] is True and step.status["backup"]["sizeBytes"] == 2048
        assert conditions(apply(status, step))["BackupTaken"] == "True"
        # The app is down: the migrate Job is recorded and created in the same step, with no look in between.
        assert step.status["jobs"] == {"plan": "plan", "backup": "backup", "migrate": "migrate"}
        assert step.actions == [CreateJob("migrate")]
        assert [event.reason for event in step.events] == [Phase.MIGRATING]
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=stopped,
                                        job=JobState("Complete", None, "Applying blog.0003... OK\n")))
        assert step.status["phase"] == Phase.VERIFYING and "Applying blog.0003" in step.status["migrateOutput"]
        status = apply(status, step)

        step = advance(s, status, World(now=NOW, deployments=stopped, row_counts={"blog_post": 200},
                                        applied=frozenset({("blog", "0003_add_post_status")}),
                                        check_results={"no orphans": "0"}))
        assert step.status["phase"] == Phase.SCALING_UP
        assert step.status["rowCounts"] == {"blog_post": {"before": 200, "after": 200}}
        assert step.actions == [Scale("web", 2), Scale("worker", 1)], "scaled up in the step that verified"
        status = apply(status, step)

        step = advance(s, status, World(now=NOW, deployments=stopped))
        assert step.actions == [Scale("web", 2), Scale("worker", 1)], "again, after a restart before the scale"
        starting = {"web": running(2, available=1), "worker": running(1)}
        assert advance(s, status, World(now=NOW, deployments=starting)).wait

        later = NOW + timedelta(seconds=42)
        step = advance(s, status, World(now=later, deployments={"web": running(2), "worker": running(1)}))
        assert step.status["phase"] == Phase.SUCCEEDED
        assert step.status["downtimeSeconds"] == 40.0, "from the last Ready pod's end, not from the scale-down"
        assert step.actions == [ReleaseLease()]
        final = apply(status, step)
        assert conditions(final) == {"Succeeded": "True", "BackupTaken": "True", "Migrated": "True",
                                     "Verified": "True"}
        assert reasons(final) == {"Succeeded": "PlanApplied", "BackupTaken": "BackupVerified",
                                  "Migrated": "PlanApplied", "Verified": "VerificationPassed"}
        assert final["message"] == messages.succeeded(1, False, 40.0, {"web": 2, "worker": 1}, {})

    def test_an_empty_plan_succeeds_without_stopping_anything(self) -> None:
        status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
        step = advance(spec(), status, World(now=NOW, job=JobState("Complete", None, plan_log([]))))
        assert step.status["phase"] == Phase.SUCCEEDED and reasons(step.status)["Succeeded"] == "NothingToMigrate"
        assert step.status["downtimeSeconds"] == 0
        assert not any(isinstance(a, Scale) for a in step.actions)


class TestRestartInTheMiddle:
    """The driver restarts from the status alone: each step repeated gives the same, safe decision."""

    def test_replicas_already_recorded_are_never_recorded_again(self) -> None:
        status: RunStatus = {"phase": Phase.SCALING_DOWN, "replicas": {"web": 2, "worker": 1}, "plan": PLAN}
        half_scaled = World(now=NOW, deployments={"web": running(0, pods=2), "worker": running(1)})
        step = advance(spec(), status, half_scaled)
        assert "replicas" not in step.status
        assert step.actions == [Scale("worker", 0)]

    @pytest.mark.parametrize(("phase", "job_step"), [(Phase.PLANNING, "plan"), (Phase.BACKING_UP, "backup"),
                                                     (Phase.MIGRATING, "migrate"), (Phase.RESTORING, "restore")])
    def test_a_running_job_is_waited_for_and_a_recorded_missing_one_created(self, phase: Phase,
                                                                           job_step: str) -> None:
        status: RunStatus = {"phase": phase, "jobs": {job_step: job_step}, "rowCounts": {}, "replicas": {"web": 1}}
        running_job = World(now=NOW, deployments={"web": running(0)}, job=JobState(None, None, ""))
        step = advance(spec(), status, running_job)
        assert step.wait and not step.actions
        # A kill between recording the Job in status and creating it: nothing else would ever create it.
        step = advance(spec(), status, World(now=NOW, deployments={"web": running(0)}))
        assert step.actions == [CreateJob(job_step)] and not step.status

    def test_scaling_up_again_after_a_restart_only_waits(self) -> None:
        status: RunStatus = {"phase": Phase.SCALING_UP, "replicas": {"web": 2, "worker": 1}}
        step = advance(spec(), status, World(now=NOW, deployments={"web": running(2, available=0),
                                                                    "worker": running(1)}))
        assert step.wait and not step.actions

    def test_a_terminal_run_does_nothing(self) -> None:
        for phase in (Phase.SUCCEEDED, Phase.FAILED):
            step = advance(spec(), {"phase": phase}, World(now=NOW))
            assert step.wait and not step.actions and not step.status


class TestRefusals:
    def test_bad_input_fails_before_anything_is_touched(self) -> None:
        problem = "app.deployment: Deployment 'nope' not found in namespace shop; create it or correct the name"
        step = advance(spec(), {}, World(now=NOW, problems=(problem,)))
        assert step.status["phase"] == Phase.FAILED and reasons(step.status)["Succeeded"] == "InvalidSpec"
        assert step.status["message"] == messages.invalid_spec([problem]) and problem in step.status["message"]
        assert step.actions == [], "not even the Lease: another run may hold it"

    def test_a_second_run_on_the_same_database_waits_in_queued(self) -> None:
        step = advance(spec(), {}, World(now=NOW, lease_holder="release-41"))
        assert step.status["phase"] == Phase.QUEUED and step.status["waitingFor"] == "release-41"
        assert "release-41" in step.status["message"] and not step.actions
        queued = apply({}, step)
        assert advance(spec(), queued, World(now=NOW, lease_holder="release-41")).status == {}
        step = advance(spec(), queued, World(now=NOW))
        assert step.actions == [AcquireLease()] and not step.status
        step = advance(spec(), queued, World(now=NOW, lease_ours=True))
        assert step.status["phase"] == Phase.PLANNING and step.status["waitingFor"] is None

    def test_a_conflict_fails_planning_with_djangos_message(self) -> None:
        error = "Conflicting migrations detected; multiple leaf nodes in the migration graph"
        log = f'{PLAN_MARKER}{json.dumps({"error": error, "reason": "Conflict"})}\n'
        status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
        step = advance(spec(), status, World(now=NOW, job=JobState("Failed", "BackoffLimitExceeded", log)))
        assert step.status["phase"] == Phase.FAILED and error in step.status["message"]
        assert [c["reason"] for c in step.status["conditions"] if c["type"] == "Succeeded"] == ["Conflict"]

    def test_an_irreversible_backwards_step_is_refused_at_planning(self) -> None:
        plan = [{"app": "blog", "name": "0002_populate_categories", "atomic": True, "reversible": False,
                 "backwards": True, "operations": ["RunPython"]}]
        status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
        step = advance(spec(), status, World(now=NOW, job=JobState("Complete", None, plan_log(plan))))
        assert step.status["phase"] == Phase.FAILED and reasons(step.status)["Succeeded"] == "Irreversible"
        assert "blog.0002_populate_categories" in step.status["message"]
        assert not any(isinstance(a, Scale) for a in step.actions)

    def test_manual_approval_waits_with_the_plan(self) -> None:
        status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
        step = advance(spec(approval="Manual"),
                       status, World(now=NOW, job=JobState("Complete", None, plan_log(SCRIPT_PLAN))))
        assert step.status["phase"] == Phase.AWAITING_APPROVAL and step.status["plan"] == CLASSIFIED


class TestSlots:
    """At most so many apps stopped at once (admission.py): a run with no slot free waits in Queued, serving."""

    FULL = Slots(free=False, taken=4, limit=4)
    PLANNED: ClassVar[RunStatus] = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}

    def planned(self, slots: Slots | None, **top_level: Any) -> tuple[Spec, Step]:
        s = spec(**top_level)
        world = World(now=NOW, job=JobState("Complete", None, plan_log(SCRIPT_PLAN)), slots=slots)
        return s, advance(s, self.PLANNED, world)

    def test_an_offline_run_with_no_slot_free_waits_in_queued_and_touches_nothing(self) -> None:
        s, step = self.planned(self.FULL)
        assert step.status["phase"] == Phase.QUEUED and step.status["waitingFor"] == WAITING_FOR_SLOT
        assert reasons(step.status)["Succeeded"] == Reason.WAITING_FOR_SLOT and not step.actions
        assert step.status["message"] == messages.waiting_for_slot(4, 4)
        assert [e.reason for e in step.events] == ["StrategyChosen", "Queued"]
        queued = apply(self.PLANNED, step)
        assert queued_for(queued, WAITING_FOR_SLOT) and not holds_slot(queued)
        again = advance(s, queued, World(now=NOW, slots=self.FULL))
        assert again.wait and not again.status and not again.events, "said once"

    def test_a_queued_run_stops_its_app_once_a_slot_is_its_turn(self) -> None:
        s, step = self.planned(self.FULL)
        queued = apply(self.PLANNED, step)
        step = advance(s, queued, World(now=NOW, slots=Slots(free=True, taken=3, limit=4)))
        assert step.status["phase"] == Phase.SCALING_DOWN and step.status["waitingFor"] is None
        assert reasons(step.status)["Succeeded"] == Reason.RUNNING
        assert holds_slot(apply(queued, step))

    def test_a_free_slot_or_no_limit_goes_straight_to_stopping(self) -> None:
        for slots in (Slots(free=True, taken=3, limit=4), None):
            assert self.planned(slots)[1].status["phase"] == Phase.SCALING_DOWN

    def test_a_queued_run_still_waits_for_its_window(self) -> None:
        s, step = self.planned(self.FULL, window={"schedule": "0 12 * * *", "duration": "1h"})
        queued = apply(self.PLANNED, step)
        step = advance(s, queued, World(now=NOW + timedelta(hours=2), slots=Slots(free=True, taken=0, limit=4)))
        assert step.status["phase"] == Phase.SCHEDULED, "the slot came after the window closed: the next one"
        assert step.status["window"]["opensAt"] == "2026-11-25T12:00:00.000Z"

    def test_an_online_run_takes_no_slot(self) -> None:
        s, status, step = planned_online([EXPAND_ENTRY])
        assert step.status["phase"] == Phase.BACKING_UP
        for phase in (Phase.BACKING_UP, Phase.MIGRATING, Phase.ROLLING_OUT, Phase.VERIFYING):
            assert not holds_slot({**apply(status, step), "phase": phase})
        full = advance(s, status, World(now=NOW, job=JobState("Complete", None, plan_log([EXPAND_ENTRY])),
                                        slots=self.FULL))
        assert full.status["phase"] == Phase.BACKING_UP

    def test_the_phases_that_hold_a_slot_are_those_from_stopping_the_app_to_the_end(self) -> None:
        holding = {phase for phase, facts in PHASES.items() if facts.holds_slot}
        assert holding == {Phase.SCALING_DOWN, Phase.BACKING_UP, Phase.MIGRATING, Phase.VERIFYING, Phase.RESTORING,
                           Phase.SCALING_UP}
        assert all(PHASES[phase].holds_slot for phase in PHASES if PHASES[phase].app_stopped)


class TestPlanningSlots:
    """At most so many runs planning at once (admission.py): past that, a run waits in Queued with its Lease."""

    FULL = Slots(free=False, taken=2, limit=2)

    def test_a_run_with_no_planning_slot_free_waits_with_its_lease_and_plans_on_its_turn(self) -> None:
        step = advance(spec(), {}, World(now=NOW, lease_ours=True, server_major=15, planning_slots=self.FULL))
        assert step.status["phase"] == Phase.QUEUED and step.status["waitingFor"] == WAITING_TO_PLAN
        assert step.status["message"] == messages.waiting_to_plan(2, 2) and step.wait and not step.actions
        assert step.status["toolsImage"] and step.status["startedAt"], "chosen and started, as when it plans at once"
        queued = apply({}, step)
        assert queued_for(queued, WAITING_TO_PLAN) and not queued_for_lease(queued)
        assert not queued_for(queued, WAITING_FOR_SLOT)
        again = advance(spec(), queued, World(now=NOW, lease_ours=True, planning_slots=self.FULL))
        assert again.wait and not again.status and not again.events, "said once"
        step = advance(spec(), queued, World(now=NOW, lease_ours=True,
                                             planning_slots=Slots(free=True, taken=1, limit=2)))
        assert step.status["phase"] == Phase.PLANNING and step.status["waitingFor"] is None
        assert apply(queued, step)["startedAt"] == queued["startedAt"], "started when it first queued"
        assert PHASES[Phase.PLANNING].holds_planning_slot and not any(
            facts.holds_planning_slot for phase, facts in PHASES.items() if phase != Phase.PLANNING)


STOPPED = {"web": running(0), "worker": running(0)}
FAILURE_BASE: RunStatus = {"replicas": {"web": 2, "worker": 1}, "plan": PLAN,
                           "rowCounts": {"blog_post": {"before": 200}}, "backup": {"path": "/backups/web/run.dump"},
                           "stoppedAt": "2026-11-24T11:59:00Z"}


class TestFailures:

    def test_a_failed_backup_starts_the_app_again_and_never_migrates(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.BACKING_UP, "jobs": {"backup": "backup"}}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED,
                                             job=JobState("Failed", "BackoffLimitExceeded", "pg_dump: error")))
        assert step.status["phase"] == Phase.SCALING_UP
        assert step.status["failure"]["message"] == messages.backup_failed("BackoffLimitExceeded", "pg_dump: error")
        assert "pg_dump: error" in step.status["failure"]["message"]
        assert conditions(apply(status, step))["BackupTaken"] == "False"
        status = apply(status, step)
        step = advance(spec(), status, World(now=NOW, deployments={"web": running(2), "worker": running(1)}))
        assert step.status["phase"] == Phase.FAILED and reasons(step.status)["Succeeded"] == "BackupFailed"
        assert step.status["message"] == messages.failed_app_running(status["failure"]["message"],
                                                                     {"web": 2, "worker": 1}, {}, 60.0, restore=None)

    def test_a_failed_migration_restores_then_starts_the_app_and_fails_rolled_back(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED,
                                             job=JobState("Failed", "BackoffLimitExceeded", "RuntimeError: boom")))
        assert step.status["phase"] == Phase.RESTORING
        status = apply(status, step)
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED))
        assert step.actions == [CreateJob("restore")]
        status = apply(status, step)
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED, job=JobState("Complete", None, "")))
        assert step.status["phase"] == Phase.SCALING_UP
        status = apply(status, step)
        step = advance(spec(), status, World(now=NOW, deployments={"web": running(2), "worker": running(1)}))
        final = apply(status, step)
        assert final["phase"] == Phase.FAILED
        assert conditions(final)["RolledBack"] == "True" and conditions(final)["Succeeded"] == "False"
        assert reasons(final)["Succeeded"] == "MigrationFailed" and reasons(final)["RolledBack"] == "Restored"
        assert "RuntimeError: boom" in final["message"]
        assert final["message"] == messages.failed_app_running(final["failure"]["message"], {"web": 2, "worker": 1},
                                                               {}, 60.0, restore=final["restore"])

    def test_a_restore_says_what_it_gave_back_besides_the_data(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.RESTORING, "jobs": {"restore": "restore"},
                             "failure": {"step": "Migrating", "reason": "MigrationFailed", "message": "boom"}}
        kept_all = ('DJANGOOPS_RESTORE {"path": "/backups/web/run.dump", "restored": true, "kept": ["objectOwners", '
                    '"owner", "comment", "privileges", "settings"], "notActingAs": "", "refused": 0}')
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED, job=JobState("Complete", None, kept_all)))
        assert step.status["restore"]["kept"] == ["objectOwners", "owner", "comment", "privileges", "settings"]
        assert step.status["message"] == messages.restored("/backups/web/run.dump", step.status["restore"])
        final = apply(apply(status, step), advance(spec(), apply(status, step), World(
            now=NOW, deployments={"web": running(2), "worker": running(1)})))
        assert final["phase"] == Phase.FAILED
        assert messages.restore_summary(step.status["restore"]) in final["message"], "the end says what came back"

        partial = ("psql:/tmp/x/apply.sql:30: ERROR:  permission denied to set parameter \"search_path\"\n"
                   'DJANGOOPS_RESTORE {"path": "/backups/web/run.dump", "restored": true, "kept": ["comment"], '
                   '"notActingAs": "reports", "refused": 1}')
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED, job=JobState("Complete", None, partial)))
        assert step.status["phase"] == Phase.SCALING_UP
        assert step.status["restore"]["refusedStatements"] == ['permission denied to set parameter "search_path"']
        assert step.status["restore"]["notActingAs"] == "reports"
        assert step.status["message"] == messages.restored("/backups/web/run.dump", step.status["restore"])
        assert "went away" not in step.status["message"]

    def test_a_restore_that_ran_again_after_the_server_went_away_says_so(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.RESTORING, "jobs": {"restore": "restore"},
                             "failure": {"step": "Migrating", "reason": "MigrationFailed", "message": "boom"}}
        log = ('restore: attempt 1 broke off: the server went away; waiting for it to answer\n'
               'DJANGOOPS_RESTORE {"path": "/backups/web/run.dump", "restored": true, "kept": ["objectOwners"], '
               '"notActingAs": "", "refused": 0, "attempts": 2}')
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED, job=JobState("Complete", None, log)))
        assert step.status["phase"] == Phase.SCALING_UP and step.status["restore"]["attempts"] == 2
        assert step.status["message"] == messages.restored("/backups/web/run.dump", step.status["restore"])

    def test_a_failed_migration_names_the_migration_and_the_error_not_the_whole_traceback(self) -> None:
        log = ("Operations to perform:\n  Apply all migrations: blog, drill_fail_atomic\nRunning migrations:\n"
               "Traceback (most recent call last):\n  File \"/app/manage.py\", line 22, in <module>\n"
               "    main()\n  File \"/app/drills/fail_atomic/migrations/0001_initial.py\", line 7, in fail\n"
               "    raise RuntimeError(\"drill: atomic migration fails\")\n"
               "RuntimeError: drill: atomic migration fails\n"
               "  Applying blog.0003_add_post_status... OK\n  Applying drill_fail_atomic.0001_initial...")
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED,
                                             job=JobState("Failed", "BackoffLimitExceeded", log)))
        assert step.status["failure"] == {"step": "Migrating", "reason": "MigrationFailed",
                                          "message": messages.migration_failed(False, log)}
        assert "RuntimeError: drill: atomic migration fails" in step.status["failure"]["message"]
        assert "Traceback" in step.status["migrateOutput"]
        assert conditions(apply(status, step))["Migrated"] == "False"

    def test_a_timed_out_migration_says_so(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED,
                                             job=JobState("Failed", "DeadlineExceeded", "")))
        assert step.status["failure"]["message"] == messages.migration_failed(True, "")

    def test_a_failed_restore_leaves_the_app_stopped_and_says_where_the_backup_is(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.RESTORING, "jobs": {"restore": "restore"},
                             "failure": {"step": "Migrating", "reason": "MigrationFailed", "message": "boom"}}
        step = advance(spec(), status, World(now=NOW, job=JobState("Failed", None, "pg_restore: error")))
        assert step.status["phase"] == Phase.FAILED
        assert not any(isinstance(a, Scale) for a in step.actions)
        assert step.status["message"] == messages.restore_failed("boom", "pg_restore: error", "/backups/web/run.dump",
                                                                 "backups")
        assert "/backups/web/run.dump" in step.status["message"]
        assert conditions(apply(status, step))["ManualRestoreRequired"] == "True"
        assert conditions(apply(status, step))["RolledBack"] == "False"
        assert reasons(apply(status, step))["Succeeded"] == "RestoreFailed"

    def test_verification_failures_name_each_problem(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.VERIFYING}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED, row_counts={"blog_post": 100},
                                             applied=frozenset(), check_results={"no orphans": "3"}))
        assert step.status["phase"] == Phase.RESTORING and step.status["failure"]["reason"] == "VerificationFailed"
        assert step.status["failure"]["message"] == messages.verification_failed([
            messages.not_applied("blog.0003_add_post_status", backwards=False),
            messages.lost_rows("blog_post", 200, 100), messages.check_failed("no orphans", "3", "0")])

    def test_on_failure_keep_leaves_database_and_app_as_they_are(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
        step = advance(spec(onFailure="Keep"),
                       status, World(now=NOW, deployments={"web": running(0)}, job=JobState("Failed", None, "x")))
        assert step.status["phase"] == Phase.FAILED and reasons(step.status)["Succeeded"] == "MigrationFailed"
        assert step.status["message"] == messages.kept_as_failed(messages.migration_failed(False, "x"),
                                                                 on_failure_keep=True)
        assert not any(isinstance(a, Scale) for a in step.actions)

    @pytest.mark.parametrize("phase", [phase for phase, facts in PHASES.items() if facts.app_stopped])
    def test_a_deployment_scaled_up_during_the_run_is_scaled_down_with_a_warning(self, phase: Phase) -> None:
        # In every phase the table says the app is stopped: old code must not meet a database being changed.
        status: RunStatus = {**FAILURE_BASE, "phase": phase, "jobs": {"migrate": "migrate"}}
        scaled = DeploymentState(replicas=3, pods=3, available=3, rolled_out=True, scaled_by="argocd-controller")
        step = advance(spec(), status, World(now=NOW, deployments={"web": scaled, "worker": running(0)}))
        assert step.actions == [Scale("web", 0)]
        assert step.events[0].reason == "ScaledUpDuringRun"
        assert step.events[0].warning and "argocd-controller" in step.events[0].message


def on(image: str, replicas: int, **more: str) -> DeploymentState:
    """A Deployment whose first container runs `image`; `more` adds containers (name=image)."""
    first = {"django": image} if not more else {}
    return DeploymentState(replicas=replicas, pods=replicas, available=replicas, rolled_out=True,
                           images={**first, **more})


RELEASE = {"app": {"deployment": "web", "stop": ["worker", "beat"], "image": "shop:2"}}
RECORDED_IMAGES = {"web": {"django": "shop:1"}, "worker": {"celery": "shop:1"}}


def test_the_phase_table_covers_every_phase_and_names_real_steps() -> None:
    assert list(PHASES) == list(Phase)
    assert {facts.job for facts in PHASES.values() if facts.job} == {"plan", "rehearse", "backup", "migrate",
                                                                      "contract", "restore"}
    # The app is stopped only after the run touched it, and a terminal phase does nothing.
    assert all(facts.touched for facts in PHASES.values() if facts.app_stopped)
    assert all(facts.health in ("Healthy", "Degraded") for facts in PHASES.values() if facts.handler is None)


class TestRehearsal:
    """spec.rehearsal: the plan applied to a scratch copy while the app serves; production is never touched."""

    COPIED = 'DJANGOOPS_REHEARSAL_COPY {"dumpSeconds": 1.5, "restoreSeconds": 2.0, "sizeBytes": 4096, ' \
             '"rowCounts": {"blog_post": 200}}'
    BASE: ClassVar[RunStatus] = {
        "phase": Phase.REHEARSING, "plan": PLAN, "planCount": 1, "strategy": "Offline",
        "jobs": {"plan": "plan", "rehearse": "rehearse"}}
    VERIFIED: ClassVar[dict[str, Any]] = {
        "row_counts": {"blog_post": 200}, "applied": frozenset({("blog", "0003_add_post_status")}),
        "check_results": {"no orphans": "0"}}

    def rehearsing(self, **more: Any) -> Spec:
        return spec(rehearsal={"enabled": True}, **more)

    def test_a_plan_to_rehearse_goes_to_rehearsing_before_anything_stops(self) -> None:
        status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
        step = advance(self.rehearsing(), status, World(now=NOW, job=JobState("Complete", None, plan_log(SCRIPT_PLAN))))
        assert step.status["phase"] == Phase.REHEARSING and not step.actions
        step = advance(self.rehearsing(), {**status, **step.status, "jobs": {"plan": "plan"}}, World(now=NOW))
        assert step.actions == [CreateJob("rehearse")]

    def test_a_failed_rehearsal_drops_the_copy_and_fails_with_production_untouched(self) -> None:
        log = f"{self.COPIED}\n  Applying blog.0003_add_post_status...\nRuntimeError: drill: atomic migration fails"
        step = advance(self.rehearsing(), self.BASE, World(now=NOW, scratch_exists=True,
                                                          job=JobState("Failed", "BackoffLimitExceeded", log)))
        assert step.actions == [DropScratch()] and "phase" not in step.status
        assert step.status["rehearsal"]["outcome"] == "Failed" and step.status["rehearsal"]["dumpSeconds"] == 1.5
        status = apply(self.BASE, step)
        assert advance(self.rehearsing(), status, World(now=NOW, scratch_exists=True)).actions == [DropScratch()]
        final = apply(status, advance(self.rehearsing(), status, World(now=NOW)))
        assert final["phase"] == Phase.FAILED and conditions(final)["Succeeded"] == "False"
        assert reasons(final)["Succeeded"] == "RehearsalFailed" and final["failure"]["step"] == "Rehearsing"
        assert "RuntimeError: drill: atomic migration fails" in final["message"]
        assert final["message"] == messages.rehearsal_failed(status["rehearsal"]["message"])

    def test_a_rehearsal_that_loses_rows_on_the_copy_fails(self) -> None:
        log = f"{self.COPIED}\nDJANGOOPS_REHEARSAL {{\"migrateSeconds\": 0.5}}"
        world = World(now=NOW, scratch_exists=True, job=JobState("Complete", None, log),
                      **{**self.VERIFIED, "row_counts": {"blog_post": 150}})
        step = advance(self.rehearsing(), self.BASE, world)
        assert step.status["rehearsal"]["outcome"] == "Failed"
        assert step.status["rehearsal"]["message"] == messages.rehearsal_verification_failed([
            messages.lost_rows("blog_post", 200, 150)])

    def test_a_rehearsal_that_succeeds_predicts_the_downtime_before_approval(self) -> None:
        log = f"{self.COPIED}\nDJANGOOPS_REHEARSAL {{\"migrateSeconds\": 0.5}}"
        manual = self.rehearsing(approval="Manual")
        step = advance(manual, self.BASE, World(now=NOW, scratch_exists=True, job=JobState("Complete", None, log),
                                                **self.VERIFIED))
        rehearsal = step.status["rehearsal"]
        assert rehearsal["outcome"] == "Succeeded" and step.actions == [DropScratch()]
        assert rehearsal["predictedDowntimeSeconds"] == 1.5 + 0.5 + 2.0 and rehearsal["migrateSeconds"] == 0.5
        step = advance(manual, apply(self.BASE, step), World(now=NOW))
        assert step.status["phase"] == Phase.AWAITING_APPROVAL
        assert messages.rehearsed(rehearsal) in step.status["message"], "the approver sees the predicted downtime"
        online = advance(spec(rehearsal={"enabled": True}), {**self.BASE, "strategy": "Online"},
                         World(now=NOW, scratch_exists=True, job=JobState("Complete", None, log), **self.VERIFIED))
        assert online.status["rehearsal"]["predictedDowntimeSeconds"] == 0


class TestWindow:
    """spec.window: the run waits in Scheduled until the window opens with room for the predicted downtime."""

    READY: ClassVar[RunStatus] = {"phase": Phase.AWAITING_APPROVAL, "plan": PLAN, "planCount": 1,
                                       "strategy": "Offline"}
    ONCE: ClassVar[dict[str, str]] = {"start": "2026-11-24T13:00:00Z", "duration": "1h"}

    def test_a_run_before_its_window_waits_in_scheduled_and_says_when_it_starts(self) -> None:
        step = advance(spec(window=self.ONCE), self.READY, World(now=NOW))
        assert step.status["phase"] == Phase.SCHEDULED and not step.actions
        assert step.status["message"] == messages.scheduled("2026-11-24T13:00:00+00:00", "UTC", timedelta(hours=1), 0)
        assert step.wait and step.wake_after == 3600 and step.events[0].reason == "Scheduled"
        status = apply(self.READY, step)
        again = advance(spec(window=self.ONCE), status, World(now=NOW + timedelta(minutes=30)))
        assert again == Step(wait=True, wake_after=1800), "no new event while it waits"
        opened = advance(spec(window=self.ONCE), status, World(now=NOW + timedelta(hours=1, seconds=1)))
        assert opened.status["phase"] == Phase.SCALING_DOWN

    def test_a_predicted_downtime_that_does_not_fit_waits_for_the_next_window_or_fails(self) -> None:
        weekly = {"schedule": "0 12 * * *", "duration": "1h"}  # daily at noon UTC; NOW is noon
        late = World(now=NOW + timedelta(minutes=50))
        rehearsed: RunStatus = {**self.READY, "rehearsal": {"outcome": "Succeeded", "predictedDowntimeSeconds": 900}}
        step = advance(spec(window=weekly), rehearsed, late)
        assert step.status["phase"] == Phase.SCHEDULED and step.status["window"]["opensAt"].startswith("2026-11-25T12")
        assert step.status["message"] == messages.scheduled("2026-11-25T12:00:00+00:00", "UTC",
                                                            timedelta(hours=23, minutes=10), 900)
        once = {"start": "2026-11-24T12:00:00Z", "duration": "1h"}
        final = apply(rehearsed, advance(spec(window=once), rehearsed, late))
        assert final["phase"] == Phase.FAILED and conditions(final)["Succeeded"] == "False"
        assert reasons(final)["Succeeded"] == "OutsideWindow"
        assert final["message"] == messages.outside_window(messages.window_over(900))


class TestStartDeadline:
    """A step's pod that cannot start fails the step within jobTemplate.startTimeoutSeconds, Job deleted first."""

    PULLING = "ImagePullBackOff: Back-off pulling image \"postgres:99\""

    def pending(self, seconds: float) -> JobState:
        return JobState(None, None, "", created=NOW - timedelta(seconds=seconds), not_started=self.PULLING)

    def test_a_pod_may_take_its_time_to_start_within_the_deadline(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.BACKING_UP, "jobs": {"backup": "backup"}}
        step = advance(spec(jobTemplate={"startTimeoutSeconds": 60}), status,
                       World(now=NOW, deployments=STOPPED, job=self.pending(59)))
        assert step == Step(wait=True)
        running_job = JobState(None, None, "", created=NOW - timedelta(hours=1))  # started: the step's own deadline
        assert advance(spec(), status, World(now=NOW, deployments=STOPPED, job=running_job)) == Step(wait=True)

    def test_a_backup_pod_that_never_starts_fails_the_backup_and_starts_the_app_again(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.BACKING_UP, "jobs": {"backup": "backup"}}
        late = spec(jobTemplate={"startTimeoutSeconds": 60})
        step = advance(late, status, World(now=NOW, deployments=STOPPED, job=self.pending(61)))
        assert step.actions == [DeleteJob("backup")] and "phase" not in step.status
        assert step.status["notStarted"]["step"] == "backup"
        status = apply(status, step)
        # Still there (its pod is being deleted): deleted again, never created again, the step not failed yet.
        step = advance(late, status, World(now=NOW, deployments=STOPPED, job=self.pending(62)))
        assert step.actions == [DeleteJob("backup")] and step.wait
        step = advance(late, status, World(now=NOW, deployments=STOPPED))
        assert step.status["phase"] == Phase.SCALING_UP and step.status["failure"]["reason"] == "BackupFailed"
        assert step.status["failure"]["message"] == messages.backup_failed("NotStarted",
                                                                           messages.not_started(60, self.PULLING))

    def test_a_migrate_pod_that_never_starts_goes_down_the_migrations_failure_path(self) -> None:
        status: RunStatus = {
            **FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"},
            "notStarted": {"step": "migrate", "message": "its pod did not start within ...: Unschedulable"}}
        step = advance(spec(), status, World(now=NOW, deployments=STOPPED))
        # Restored all the same: the pod may have started in the moment before it was deleted.
        assert step.status["phase"] == Phase.RESTORING and "Unschedulable" in step.status["message"]

    def test_a_record_of_another_step_does_not_stop_this_one(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.RESTORING,
                             "jobs": {"migrate": "migrate", "restore": "restore"},
                             "notStarted": {"step": "migrate", "message": "..."}}
        assert advance(spec(), status, World(now=NOW, deployments=STOPPED)).actions == [CreateJob("restore")]


class TestRelease:
    """With app.image the run ends on the release image; a failed one on the images it found."""

    def test_the_containers_that_run_the_app_image_are_recorded_with_the_replicas(self) -> None:
        status: RunStatus = {"phase": Phase.SCALING_DOWN, "plan": PLAN}
        world = World(now=NOW, deployments={
            "web": on("shop:1", 2, django="shop:1", proxy="envoy:1"),
            "worker": on("shop:1", 1, celery="shop:1"),
            "beat": on("cron:7", 1, beat="cron:7")})
        step = advance(spec(**RELEASE), status, world)
        assert step.status["images"] == RECORDED_IMAGES, "a sidecar or another image is not the app's to change"
        assert step.status["replicas"] == {"web": 2, "worker": 1, "beat": 1}
        assert step.actions == [Scale("web", 0), Scale("worker", 0), Scale("beat", 0)], "scaled with no image change"

    def test_without_app_image_no_image_is_recorded_or_changed(self) -> None:
        status: RunStatus = {"phase": Phase.SCALING_DOWN, "plan": PLAN}
        step = advance(spec(), status, World(now=NOW, deployments={"web": on("shop:1", 2), "worker": on("shop:1", 1)}))
        assert step.status["images"] == {}
        status = {**FAILURE_BASE, **apply(status, step), "phase": Phase.SCALING_UP}
        step = advance(spec(), status, World(now=NOW, deployments={"web": on("shop:1", 0), "worker": on("shop:1", 0)}))
        assert step.actions == [Scale("web", 2), Scale("worker", 1)]

    def test_a_success_starts_the_recorded_containers_on_the_release_image(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.SCALING_UP, "planCount": 1, "images": RECORDED_IMAGES,
                             "replicas": {"web": 2, "worker": 1}}
        stopped = {"web": on("shop:1", 0), "worker": on("shop:1", 0, celery="shop:1")}
        step = advance(spec(**RELEASE), status, World(now=NOW, deployments=stopped))
        assert step.actions == [Scale("web", 2, {"django": "shop:2"}), Scale("worker", 1, {"celery": "shop:2"})]
        # Scaled but not on the release yet (a restart between the two, or a rollout in progress): patched again.
        half = {"web": on("shop:2", 2), "worker": on("shop:1", 1, celery="shop:1")}
        assert advance(spec(**RELEASE), status, World(now=NOW, deployments=half)).actions == [
            Scale("worker", 1, {"celery": "shop:2"})]
        done = {"web": on("shop:2", 2), "worker": on("shop:2", 1, celery="shop:2")}
        step = advance(spec(**RELEASE), status, World(now=NOW, deployments=done))
        assert step.status["phase"] == Phase.SUCCEEDED and "on shop:2" in step.status["message"]

    def test_a_failure_starts_the_images_it_found_even_if_something_moved_them(self) -> None:
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.SCALING_UP, "images": RECORDED_IMAGES,
                             "failure": {"step": "Migrating", "reason": "MigrationFailed", "message": "boom"}}
        moved = {"web": on("shop:2", 0), "worker": on("shop:1", 0, celery="shop:1")}
        step = advance(spec(**RELEASE), status, World(now=NOW, deployments=moved))
        assert step.actions == [Scale("web", 2, {"django": "shop:1"}), Scale("worker", 1, {"celery": "shop:1"})]
        back = {"web": on("shop:1", 2), "worker": on("shop:1", 1, celery="shop:1")}
        step = advance(spec(**RELEASE), status, World(now=NOW, deployments=back))
        assert step.status["phase"] == Phase.FAILED and "on shop:1" in step.status["message"]


class TestSuccess:
    @pytest.mark.parametrize("backwards", [True, False])
    def test_a_success_says_whether_the_plan_applied_or_unapplied(self, backwards: bool) -> None:
        plan = [{**PLAN[0], "backwards": backwards}]
        status: RunStatus = {**FAILURE_BASE, "phase": Phase.SCALING_UP, "plan": plan, "planCount": 1,
                             "stoppedAt": "2026-11-24T11:59:56Z"}
        step = advance(spec(), status, World(now=NOW, deployments={"web": running(2), "worker": running(1)}))
        final = apply(status, step)
        assert final["phase"] == Phase.SUCCEEDED and reasons(final)["Succeeded"] == "PlanApplied"
        assert final["message"] == messages.succeeded(1, backwards, 4.0, {"web": 2, "worker": 1}, {})


def script_entry(name: str, operation: str, field: dict[str, Any], atomic: bool = True) -> dict[str, Any]:
    """A plan script entry whose one operation adds or removes `field` of blog.Post."""
    return {"app": "blog", "name": name, "atomic": atomic, "reversible": True, "backwards": False,
            "operations": [operation], "declared": None, "details": [{
                "type": operation, "module": "django.db.migrations.operations.fields",
                "describe": f"{operation} {field['column']}",
                "field": {"dbType": "varchar(80)", "dbDefault": False, "default": False, "manyToMany": False,
                          "generated": False, **field}}]}


EXPAND_ENTRY = script_entry("0006_post_subtitle", "AddField", {"column": "subtitle", "null": True})
CONTRACT_ENTRY = script_entry("0008_remove_post_status", "RemoveField", {"column": "status", "null": False,
                                                                         "dbDefault": True})
ONLINE = {"app": {"deployment": "web", "stop": ["worker"], "image": "shop:3"}, "strategy": "Online"}


def planned_online(entries: list[dict[str, Any]], **top_level: Any) -> tuple[Spec, RunStatus, Step]:
    s = spec(**{**ONLINE, **top_level})
    status: RunStatus = {"phase": Phase.PLANNING, "jobs": {"plan": "plan"}}
    return s, status, advance(s, status, World(now=NOW, job=JobState("Complete", None, plan_log(entries))))


class TestOnline:
    """Nothing is stopped: back up while serving, expand, roll out, contract, verify."""

    def test_an_online_run_never_scales_and_ends_on_the_release(self) -> None:
        s, status, step = planned_online([EXPAND_ENTRY, CONTRACT_ENTRY])
        assert step.status["strategy"] == "Online" and step.status["phase"] == Phase.BACKING_UP
        assert [e.reason for e in step.events] == ["StrategyChosen", "BackingUp"]
        status = apply(status, step)
        serving = {"web": on("shop:2", 2), "worker": on("shop:2", 1, celery="shop:2")}

        step = advance(s, status, World(now=NOW, deployments=serving, row_counts={"blog_post": 200}))
        assert step.actions == [CreateJob("backup")] and "rowCounts" not in step.status, "writes go on: no count"
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=serving, job=JobState("Complete", None, backup_log())))
        assert step.status["phase"] == Phase.MIGRATING
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=serving))
        assert step.actions == [CreateJob("migrate")]
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=serving,
                                        job=JobState("Complete", None, "Applying blog.0006_post_subtitle... OK")))
        assert step.status["phase"] == Phase.ROLLING_OUT
        status = apply(status, step)

        step = advance(s, status, World(now=NOW, deployments=serving))
        assert step.status == {"images": {"web": {"django": "shop:2"}, "worker": {"celery": "shop:2"}}}
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, deployments=serving))
        assert step.actions == [SetImages("web", {"django": "shop:3"}), SetImages("worker", {"celery": "shop:3"})]
        rolling = {"web": DeploymentState(replicas=2, pods=3, available=1, rolled_out=False,
                                          images={"django": "shop:3"}),
                   "worker": on("shop:3", 1, celery="shop:3")}
        assert advance(s, status, World(now=NOW, deployments=rolling)) == Step(wait=True)
        # Rolled out, but an old web pod is still terminating: it may still answer, so nothing is contracted yet.
        old_pod_left = {"web": replace(on("shop:3", 2), pods=3), "worker": on("shop:3", 1, celery="shop:3")}
        assert advance(s, status, World(now=NOW, deployments=old_pod_left)) == Step(wait=True)
        rolled = {"web": on("shop:3", 2), "worker": on("shop:3", 1, celery="shop:3")}
        step = advance(s, status, World(now=NOW, deployments=rolled))
        assert step.status["phase"] == Phase.CONTRACTING
        status = apply(status, step)

        step = advance(s, status, World(now=NOW))
        assert step.actions == [CreateJob("contract")]
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, job=JobState("Complete", None, "Applying blog.0008... OK")))
        assert step.status["phase"] == Phase.VERIFYING
        status = apply(status, step)
        step = advance(s, status, World(now=NOW, row_counts={"blog_post": 180},
                                        applied=frozenset({("blog", "0006_post_subtitle"),
                                                           ("blog", "0008_remove_post_status")}),
                                        check_results={"no orphans": "0"}))
        final = apply(status, step)
        assert final["phase"] == Phase.SUCCEEDED and final["downtimeSeconds"] == 0
        assert final["message"] == messages.succeeded_online(2, {"web": {"django": "shop:3"},
                                                                 "worker": {"celery": "shop:3"}})
        assert "on shop:3" in final["message"] and reasons(final)["Succeeded"] == "PlanApplied"
        assert conditions(final)["Migrated"] == conditions(final)["Verified"] == "True"

    def test_the_online_jobs_apply_expand_then_contract(self) -> None:
        _, status, step = planned_online([EXPAND_ENTRY, CONTRACT_ENTRY])
        final = apply(status, step)
        assert online_migrations(final, MigrationClass.EXPAND) == ["blog.0006_post_subtitle"]
        assert online_migrations(final, MigrationClass.CONTRACT) == ["blog.0008_remove_post_status"]

    def test_a_failed_expand_migration_ends_failed_with_the_app_serving(self) -> None:
        s, status, step = planned_online([EXPAND_ENTRY])
        status = {**apply(status, step), "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
        log = "  Applying blog.0006_post_subtitle...\ndjango.db.utils.IntegrityError: check constraint violated"
        step = advance(s, status, World(now=NOW, deployments={"web": on("shop:2", 2)},
                                        job=JobState("Failed", None, log)))
        assert step.status["phase"] == Phase.FAILED and step.status["conditions"][-1]["reason"] == "MigrationFailed"
        assert step.status["message"] == messages.online_migration_failed(messages.migration_failed(False, log), log)
        assert "IntegrityError" in step.status["message"] and conditions(step.status)["Migrated"] == "False"
        assert not [a for a in step.actions if isinstance(a, Scale | SetImages)]

    def test_a_failed_contract_migration_leaves_the_release_serving(self) -> None:
        s, status, step = planned_online([CONTRACT_ENTRY])
        status = {**apply(status, step), "phase": Phase.CONTRACTING, "jobs": {"contract": "contract"}}
        step = advance(s, status, World(now=NOW, job=JobState("Failed", None, "ValueError: no")))
        assert step.status["phase"] == Phase.FAILED and step.status["conditions"][-1]["reason"] == "ContractFailed"
        assert step.status["message"] == messages.contract_failed(messages.migration_failed(False, "ValueError: no"),
                                                                  "shop:3")
        assert "ValueError: no" in step.status["message"] and conditions(step.status)["Migrated"] == "False"

    def test_a_plan_with_nothing_to_expand_goes_straight_to_the_rollout(self) -> None:
        s, status, step = planned_online([CONTRACT_ENTRY])
        status = {**apply(status, step), "phase": Phase.MIGRATING}
        step = advance(s, status, World(now=NOW))
        assert step.status["phase"] == Phase.ROLLING_OUT and not step.actions

    def test_a_stalled_rollout_fails_and_says_what_is_applied(self) -> None:
        s, status, step = planned_online([EXPAND_ENTRY, CONTRACT_ENTRY])
        status = {**apply(status, step), "phase": Phase.ROLLING_OUT, "images": {"web": {"django": "shop:2"}}}
        stuck = DeploymentState(replicas=2, pods=3, available=2, rolled_out=False, images={"django": "shop:3"},
                                stalled=True)
        step = advance(s, status, World(now=NOW, deployments={"web": stuck, "worker": on("shop:2", 1)}))
        assert step.status["phase"] == Phase.FAILED and step.status["conditions"][-1]["reason"] == "RolloutFailed"
        assert step.status["message"] == messages.rollout_stalled("shop:3", ["web"])

    def test_online_refuses_what_it_cannot_run_before_anything_happens(self) -> None:
        unknown = {**EXPAND_ENTRY, "name": "0007_backfill", "operations": ["RunPython"],
                   "details": [{"type": "RunPython", "module": "django.db.migrations.operations.special"}]}
        _, _, step = planned_online([EXPAND_ENTRY, unknown])
        assert step.status["phase"] == Phase.FAILED and step.status["conditions"][-1]["reason"] == "OnlineRefused"
        assert "blog.0007_backfill is unknown" in step.status["message"]
        assert step.actions == [ReleaseLease()]

    def test_auto_goes_offline_for_an_unknown_migration_and_says_which(self) -> None:
        unknown = {**EXPAND_ENTRY, "operations": ["RunPython"],
                   "details": [{"type": "RunPython", "module": "django.db.migrations.operations.special"}]}
        _, _, step = planned_online([unknown], strategy="Auto")
        assert step.status["strategy"] == "Offline" and step.status["phase"] == Phase.SCALING_DOWN
        assert "blog.0006_post_subtitle is unknown" in step.status["strategyReason"]
        assert step.events[0].reason == "StrategyChosen" and "Offline" in step.events[0].message

    def test_auto_goes_online_when_every_migration_allows_it(self) -> None:
        _, _, step = planned_online([EXPAND_ENTRY, CONTRACT_ENTRY], strategy="Auto")
        assert step.status["strategy"] == "Online" and step.status["phase"] == Phase.BACKING_UP


class TestPodsNotEnding:
    """A deleted pod its node never reports stopped (a lost node) holds the run, which says so once, by name."""

    def ending(self, *deadlines: tuple[str, float]) -> DeploymentState:
        """Pods being deleted, each with its grace period's end in seconds from NOW."""
        pods = tuple(EndingPod(name, NOW + timedelta(seconds=seconds)) for name, seconds in deadlines)
        return replace(running(0, pods=len(pods), serving=0), ending=pods)

    def test_the_scale_down_waits_for_a_late_pod_names_it_once_and_wakes_when_the_next_gets_late(self) -> None:
        status: RunStatus = {"phase": Phase.SCALING_DOWN, "replicas": {"web": 2, "worker": 1},
                             "images": RECORDED_IMAGES, "stoppedAt": "2026-11-24T11:59:00Z",
                             "servingEndedAt": "2026-11-24T11:59:03Z", "message": "stopping the app"}
        # One pod in its grace period, one past it by less than the margin: waiting is normal, and it looks again
        # when the first of them would be late.
        world = World(now=NOW, deployments={"web": self.ending(("web-a", 20), ("web-b", -5)), "worker": running(0)})
        step = advance(spec(), status, world)
        assert step == Step(wait=True, wake_after=POD_END_MARGIN_SECONDS - 5)
        late_world = replace(world, now=NOW + timedelta(seconds=POD_END_MARGIN_SECONDS))
        step = advance(spec(), status, late_world)
        message = messages.pods_not_ending(["web-b"], POD_END_MARGIN_SECONDS, "backup")
        assert step.status == {"message": message,
                               "podsNotEnding": {"pods": ["web-b"], "replaced": "stopping the app"}}
        assert step.wait and not step.actions
        assert [(event.reason, event.warning) for event in step.events] == [(Reason.PODS_NOT_ENDING, True)]
        assert "web-b" in message and "web-a" not in message and "--force" in message and "write" in message
        assert step.wake_after == 20, "web-a gets late in 20 s"
        noted = apply(status, step)
        again = advance(spec(), noted, late_world)
        assert not again.status and not again.events and again.wait, "said once"
        # The person removed web-b while web-a still ends in its grace period: the phase's message is back.
        web_a = World(now=late_world.now, deployments={"web": self.ending(("web-a", 20)), "worker": running(0)})
        back = advance(spec(), noted, web_a)
        assert back.status == {"podsNotEnding": None, "message": "stopping the app"} and back.wait
        # Or removed the last pod: the backup starts, and the note goes with the phase.
        gone = World(now=late_world.now, deployments={"web": running(0), "worker": running(0)},
                     row_counts={"blog_post": 200})
        step = advance(spec(), noted, gone)
        assert step.status["phase"] == Phase.BACKING_UP and step.status["podsNotEnding"] is None

    def test_many_late_pods_are_counted_past_the_first_five(self) -> None:
        message = messages.pods_not_ending([f"web-{n}" for n in range(8)], POD_END_MARGIN_SECONDS, "backup")
        assert "web-4 and 3 more (status.podsNotEnding)" in message and "web-5" not in message

    @pytest.mark.parametrize(("entries", "held"), [([EXPAND_ENTRY, CONTRACT_ENTRY], "contract"),
                                                   ([EXPAND_ENTRY], "end")])
    def test_the_rollout_waits_for_a_late_pod_of_the_old_release(self, entries: list[dict[str, Any]],
                                                                 held: messages.HeldByPods) -> None:
        s, status, step = planned_online(entries)
        status = {**apply(status, step), "phase": Phase.ROLLING_OUT, "images": {"web": {"django": "shop:2"}}}
        old_pod = EndingPod("web-old", NOW - timedelta(seconds=POD_END_MARGIN_SECONDS + 1))
        lost = replace(on("shop:3", 2), pods=3, ending=(old_pod,))
        step = advance(s, status, World(now=NOW, deployments={"web": lost, "worker": on("shop:2", 1)}))
        assert step.status["message"] == messages.pods_not_ending(["web-old"], POD_END_MARGIN_SECONDS, held)
        assert step.events[0].reason == Reason.PODS_NOT_ENDING and step.wait and not step.actions


class TestToolsImage:
    """The backup and restore run the tools of the server's major version, chosen once, while Pending."""

    def test_the_servers_version_chooses_the_image_and_the_run_keeps_it(self) -> None:
        step = advance(spec(), {}, World(now=NOW, lease_ours=True, server_major=17))
        assert step.status["phase"] == Phase.PLANNING and step.status["toolsImage"] == "postgres:17"
        queued = advance(spec(), {}, World(now=NOW, lease_holder="shop/release-41", server_major=17))
        assert queued.status["toolsImage"] == "postgres:17", "a queued run has chosen too"
        later = advance(spec(), apply({}, queued), World(now=NOW, lease_ours=True))
        assert "toolsImage" not in later.status, "kept from the first look, never chosen again"

    def test_tools_older_than_the_server_fail_before_anything_is_touched(self) -> None:
        old = spec(backup={"volumeClaim": "backups", "image": "postgres:15"})
        step = advance(old, {}, World(now=NOW, lease_ours=True, server_major=17))
        assert step.status["phase"] == Phase.FAILED and step.actions == []
        assert "backup.image: postgres:15 carries pg_dump 15" in step.status["message"]
        assert reasons(step.status)["Succeeded"] == "InvalidSpec"

    def test_without_a_backup_no_tools_are_chosen(self) -> None:
        no_backup = spec(backup={"enabled": False}, onFailure="Keep")
        step = advance(no_backup, {}, World(now=NOW, lease_ours=True, server_major=17))
        assert step.status["phase"] == Phase.PLANNING and "toolsImage" not in step.status


def test_a_migration_its_pod_timed_out_names_the_migration_that_was_running() -> None:
    log = ("  Applying blog.0003_add_post_status... OK\n  Applying blog.0004_rollback...\nTraceback (most recent "
           "call last):\n  File \"manage.py\", line 22, in <module>\nKeyboardInterrupt\nDJANGOOPS_TIMEOUT 8\n")
    status: RunStatus = {**FAILURE_BASE, "phase": Phase.MIGRATING, "jobs": {"migrate": "migrate"}}
    step = advance(spec(), status, World(now=NOW, deployments=STOPPED, job=JobState("Failed", None, log)))
    assert step.status["failure"]["message"] == messages.migration_failed(True, log), "the marker says: timed out"
    assert "Applying blog.0004_rollback..." in step.status["migrateOutput"]
