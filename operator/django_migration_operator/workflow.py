"""The run as a state machine: the current status and what the cluster looks like -> the next step.

`advance` is pure. It never calls Kubernetes or PostgreSQL: the driver observes the world, calls `advance`,
then carries out the returned step (status patch first, then actions, then events) and calls it again,
immediately or after a wake-up. Every decision is made from the status plus fresh observations, so an
operator killed at any moment picks the run up where the status says it is, and no step runs twice:
replicas are recorded before anything scales, Jobs have deterministic names, and a finished Job is read,
not re-created.

Phases, Offline:
  Pending -> Planning -> [AwaitingApproval] -> ScalingDown -> BackingUp -> Migrating -> Verifying -> ScalingUp
  -> Succeeded; a failed backup goes to ScalingUp -> Failed; a failed migration or verification goes to
  Restoring -> ScalingUp -> Failed (RolledBack); a failed restore ends Failed with the app still stopped.
Online (nothing stops; docs/strategies.md):
  Pending -> Planning -> [AwaitingApproval] -> BackingUp -> Migrating (expand) -> RollingOut -> Contracting
  -> Verifying -> Succeeded; any failure ends Failed where it happened, with the app serving and nothing
  restored (a restore would lose the writes made since the backup).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django_migration_operator import jobs
from django_migration_operator.classify import MigrationClass, choose_strategy, classify_plan
from django_migration_operator.plan import (
    REHEARSAL_MARKER,
    TIMEOUT_MARKER,
    PlannedMigration,
    irreversible_steps,
    parse_marker,
    parse_plan_output,
)
from django_migration_operator.resource import Spec
from django_migration_operator.window import Window

Status = dict[str, Any]


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    PLANNING = "Planning"
    REHEARSING = "Rehearsing"
    AWAITING_APPROVAL = "AwaitingApproval"
    SCHEDULED = "Scheduled"
    SCALING_DOWN = "ScalingDown"
    BACKING_UP = "BackingUp"
    MIGRATING = "Migrating"
    VERIFYING = "Verifying"
    RESTORING = "Restoring"
    SCALING_UP = "ScalingUp"
    ROLLING_OUT = "RollingOut"
    CONTRACTING = "Contracting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


LOG_TAIL_LINES = 20
# The reason of a step whose pod never started (jobTemplate.startTimeoutSeconds ran out): its Job was deleted.
NOT_STARTED = "NotStarted"
# What a rehearsal's prediction adds to the dump and the migration: stopping the app's pods, starting the Jobs' and
# the app's again (about 3 s on devcluster, bench/timings.py).
PREDICTED_OVERHEAD_SECONDS = 3.0


# --- what the driver observes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentState:
    replicas: int  # spec.replicas
    pods: int  # pods matching the selector, terminating ones included
    available: int  # status.availableReplicas
    rolled_out: bool  # the controller has seen the latest spec and every replica is updated
    scaled_by: str | None = None  # the field manager that last set spec.replicas, when the API tells
    images: dict[str, str] = field(default_factory=dict)  # container -> image of the pod template, in order
    stalled: bool = False  # its rollout exceeded progressDeadlineSeconds (condition Progressing, False)


@dataclass(frozen=True)
class JobState:
    finished: str | None  # None while it runs, "Complete" or "Failed"
    reason: str | None  # the Job's failure reason (DeadlineExceeded, BackoffLimitExceeded, NOT_STARTED)
    log: str  # the output of its pod
    created: datetime | None = None  # when the Job was created
    not_started: str | None = None  # why its pod has not started yet (Unschedulable: ...); None once it runs


@dataclass(frozen=True)
class World:
    now: datetime
    problems: tuple[str, ...] = ()  # input that cannot work, each naming the field and the fix
    server_major: int | None = None  # the PostgreSQL server's major version, read while Pending
    lease_holder: str | None = None  # another run, still going, that holds this database's Lease
    lease_ours: bool = False  # this run holds the Lease
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    job: JobState | None = None  # the current step's Job; None when not created yet
    row_counts: dict[str, int] | None = None  # counted now
    applied: frozenset[tuple[str, str]] | None = None  # (app, name) rows of django_migrations
    check_results: dict[str, str] | None = None  # check name -> the value its SQL returned
    scratch_exists: bool = False  # the rehearsal's scratch database is there


# --- what the driver does -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateJob:
    step: str  # plan, backup, migrate, restore


@dataclass(frozen=True)
class Scale:
    deployment: str
    replicas: int
    images: dict[str, str] = field(default_factory=dict)  # container -> image, set in the same patch


@dataclass(frozen=True)
class SetImages:
    """Rolls a Deployment out to new container images with its own rolling update; its replicas stay."""

    deployment: str
    images: dict[str, str]


@dataclass(frozen=True)
class DeleteJob:
    """Deletes the step's Job and its pod (foreground: the Job goes only once its pod is gone)."""

    step: str


@dataclass(frozen=True)
class DropScratch:
    """Drops the rehearsal's scratch database (IF EXISTS)."""


@dataclass(frozen=True)
class AcquireLease:
    pass


@dataclass(frozen=True)
class ReleaseLease:
    pass


Action = CreateJob | DeleteJob | DropScratch | Scale | SetImages | AcquireLease | ReleaseLease


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass
class Step:
    status: Status = field(default_factory=dict)  # merged into .status before any action
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    wait: bool = False  # nothing more to do until the world changes (a Job ends, pods go)
    wake_after: float | None = None  # seconds: look again then at the latest, though nothing changed


# --- the machine ------------------------------------------------------------------------------------------


def advance(spec: Spec, status: Status, world: World) -> Step:
    facts = PHASES[phase_of(status)]
    if facts.handler is None:
        return Step(wait=True)
    guard = _guard(spec, status, world) if facts.app_stopped else None
    return guard or facts.handler(spec, status, world)


def phase_of(status: Status) -> Phase:
    return Phase(status.get("phase") or Phase.PENDING)


def _pending(spec: Spec, status: Status, world: World) -> Step:
    problems = list(world.problems)
    chosen: Status = {}
    if not problems and (spec.backup_enabled or spec.rehearsal) and world.server_major:
        # Chosen once, with the server's version, and kept: the backup and the restore run the same tools.
        chosen = {"toolsImage": jobs.tools_image(spec, world.server_major)}
        refused = jobs.tools_problem(chosen["toolsImage"], world.server_major)
        problems += [refused] if refused else []
    if problems:
        message = "; ".join(problems) + ". Nothing was changed: the app and the database are as they were."
        return _finish(status, world, Phase.FAILED, "InvalidSpec", message, release=False)
    return _queue_or_plan(status, world, chosen)


def _queued(spec: Spec, status: Status, world: World) -> Step:
    return _queue_or_plan(status, world, {})


def _queue_or_plan(status: Status, world: World, chosen: Status) -> Step:
    if world.lease_holder:
        if status.get("phase") == Phase.QUEUED and status.get("waitingFor") == world.lease_holder:
            return Step(wait=True)
        message = f"waiting for run {world.lease_holder}, which holds this database"
        return Step(status={**chosen, "phase": Phase.QUEUED, "waitingFor": world.lease_holder, "message": message,
                            "startedAt": status.get("startedAt") or _iso(world.now),
                            "conditions": _conditions(status, world, Succeeded=("Unknown", "Queued", message))},
                    events=[Event("Queued", message)], wait=True)
    if not world.lease_ours:
        # The Lease first, the phase after: a restart in between finds the run still waiting, never a
        # run past Pending without the Lease.
        return Step(actions=[AcquireLease()])
    message = "planning: listing the migrations to apply"
    return Step(status={**chosen, "phase": Phase.PLANNING, "waitingFor": None, "message": message,
                        "startedAt": status.get("startedAt") or _iso(world.now),
                        "conditions": _conditions(status, world, Succeeded=("Unknown", "Running", message))},
                events=[Event("Planning", message)])


def _planning(spec: Spec, status: Status, world: World) -> Step:
    job = _job_step(spec, status, world, "plan")
    if isinstance(job, Step):
        return job
    result = parse_plan_output(job.log)
    if job.finished == "Failed" or result.error:
        detail = result.error or _tail(job.log)
        return _finish(status, world, Phase.FAILED, result.reason or "PlanFailed",
                       f"planning failed, nothing was changed: {detail}")
    migrations = classify_plan(result.migrations, spec.migration_classes)
    plan = [m.to_status() for m in migrations]
    choice = choose_strategy(spec.strategy, migrations, spec.image)
    planned = {"plan": plan, "planCount": len(plan), "strategy": choice.strategy, "strategyReason": choice.reason}
    if not plan:
        return _finish({**status, **planned}, world, Phase.SUCCEEDED, "NothingToMigrate",
                       "no migration to apply: the database is up to date; the app was not stopped",
                       extra={**planned, "downtimeSeconds": 0})
    irreversible = irreversible_steps(migrations)
    if irreversible:
        names = ", ".join(f"{m.app}.{m.name}" for m in irreversible)
        return _finish({**status, **planned}, world, Phase.FAILED, "Irreversible",
                       f"the plan unapplies {names}, which cannot be reversed; nothing was changed. "
                       "Choose a migrate.target after it, or restore a backup instead", extra=planned)
    if choice.refused:
        return _finish({**status, **planned}, world, Phase.FAILED, "OnlineRefused",
                       f"strategy: Online cannot apply this plan while the app serves: {'; '.join(choice.refused)}. "
                       "Nothing was changed: the app and the database are as they were. Set strategy: Offline, or "
                       "Auto, which stops the app for such a plan", extra=planned)
    chosen = Event("StrategyChosen", f"{choice.strategy}: {choice.reason}")
    if spec.rehearsal:
        message = f"plan: {_plan_summary(migrations)}; rehearsing on a copy of the database while the app serves"
        return Step(status={**planned, "phase": Phase.REHEARSING, "message": message},
                    events=[chosen, Event("Rehearsing", message)])
    step = _plan_ready(spec, {**status, **planned}, world, "")
    return Step(status={**planned, **step.status}, events=[chosen, *step.events])


def _plan_ready(spec: Spec, status: Status, world: World, rehearsed: str) -> Step:
    """The plan is known (and rehearsed): wait for approval, or start."""
    summary = _recorded_plan_summary(status) + rehearsed
    if spec.approval == "Manual":
        message = f"plan ready ({summary}; {status.get('strategy')}); waiting for approval: set spec.approval to " \
                  "Automatic to go on"
        return Step(status={"phase": Phase.AWAITING_APPROVAL, "message": message},
                    events=[Event("AwaitingApproval", message)])
    return _start(spec, status, world, summary)


def _rehearsing(spec: Spec, status: Status, world: World) -> Step:
    """The plan applied to a scratch copy first: timed, verified, dropped. Production is never touched."""
    rehearsal: Status = status.get("rehearsal") or {}
    if "outcome" not in rehearsal:
        job = _job_step(spec, status, world, "rehearse")
        if isinstance(job, Step):
            return job
        # Judged while the copy still exists, recorded, then the copy goes: a restart drops it again.
        return Step(status={"rehearsal": {**rehearsal, **_judge_rehearsal(spec, status, world, job)}},
                    actions=[DropScratch()])
    if world.scratch_exists:
        return Step(actions=[DropScratch()])
    if rehearsal["outcome"] == "Failed":
        message = (f"the rehearsal on a copy of the database failed: {rehearsal['message']}. Production was never "
                   "touched and the app never stopped; the copy was dropped")
        return _finish(status, world, Phase.FAILED, "RehearsalFailed", message, extra={
            "failure": {"step": Phase.REHEARSING, "reason": "RehearsalFailed", "message": rehearsal["message"]}})
    rehearsed = (f"; rehearsed on a copy: dump {rehearsal.get('dumpSeconds', 0):.1f}s, migrate "
                 f"{rehearsal.get('migrateSeconds', 0):.1f}s, predicted downtime "
                 f"{rehearsal.get('predictedDowntimeSeconds', 0):.0f}s")
    return _plan_ready(spec, status, world, rehearsed)


def _judge_rehearsal(spec: Spec, status: Status, world: World, job: JobState) -> Status:
    """The rehearsal's durations and outcome, from its two markers and the copy's verification."""
    copied = jobs.parse_marker(job.log, jobs.REHEARSAL_COPY_MARKER)
    migrated = parse_marker(job.log, REHEARSAL_MARKER) or {}
    measured = {**(copied or {}), **migrated}
    timings = {key: value for key, value in measured.items() if key.endswith(("Seconds", "Bytes"))}
    if job.finished == "Failed" or not migrated:
        output = _tail(job.log)
        what = _migration_failure(job, output) if copied else f"copying the database failed: {output}"
        return {**timings, "outcome": "Failed", "message": what}
    assert copied is not None
    failures = _verification_failures(spec, status, world, copied.get("rowCounts", {}))
    if failures:
        return {**timings, "outcome": "Failed", "message": "verification failed on the copy: " + "; ".join(failures)}
    offline = 0.0 if _online(status) else timings.get("dumpSeconds", 0) + timings.get("migrateSeconds", 0) + \
        PREDICTED_OVERHEAD_SECONDS
    return {**timings, "outcome": "Succeeded", "predictedDowntimeSeconds": round(offline, 1),
            "message": "migrated and verified on the copy"}


def _awaiting_approval(spec: Spec, status: Status, world: World) -> Step:
    if spec.approval == "Manual":
        return Step(wait=True)
    return _start(spec, status, world, _recorded_plan_summary(status))


def _scheduled(spec: Spec, status: Status, world: World) -> Step:
    return _start(spec, status, world, _recorded_plan_summary(status))


def _start(spec: Spec, status: Status, world: World, summary: str) -> Step:
    """Offline stops the app first; online backs up while it serves (or migrates, without a backup).

    Not before the maintenance window opens, with room for the predicted downtime; once started, a run is never
    cut short by the window's end.
    """
    waiting = _until_the_window(spec, status, world) if spec.window else None
    if waiting:
        return waiting
    if not _online(status):
        message = f"plan: {summary}; stopping the app"
        return Step(status={"phase": Phase.SCALING_DOWN, "message": message}, events=[Event("ScalingDown", message)])
    if spec.backup_enabled:
        message = f"plan: {summary}; online: backing the database up into {spec.backup_claim} while the app serves"
        return Step(status={"phase": Phase.BACKING_UP, "message": message}, events=[Event("BackingUp", message)])
    message = f"plan: {summary}; online, backup disabled (backup.enabled: false): migrating without a backup"
    return Step(status={"phase": Phase.MIGRATING, "message": message},
                events=[Event("Migrating", message, warning=True)])


def _until_the_window(spec: Spec, status: Status, world: World) -> Step | None:
    """None when the window is open with room for the predicted downtime; else wait in Scheduled, or fail."""
    window = Window.from_spec(spec.window)
    predicted = float((status.get("rehearsal") or {}).get("predictedDowntimeSeconds") or 0)
    found = window.opening(world.now, timedelta(seconds=predicted))
    if found is None:
        if predicted > window.duration.total_seconds():
            why = (f"the predicted downtime ({predicted:.0f}s, status.rehearsal) is longer than the maintenance "
                   f"window (window.duration: {spec.window.get('duration')})")
        elif window.recurs:
            why = "the maintenance window's schedule never opens (window.schedule)"
        else:
            left = f", or too little of it is left for the predicted downtime ({predicted:.0f}s)" if predicted else ""
            why = f"the maintenance window (window.start) is over{left}"
        return _finish(status, world, Phase.FAILED, "OutsideWindow",
                       f"{why}, and no later window will do. Nothing was changed: the app and the database are as "
                       "they were. Apply a new run with a window that fits")
    opens, closes = found
    if opens <= world.now:
        return None
    local = opens.astimezone(window.zone)
    room = f", the first with room for the predicted downtime ({predicted:.0f}s)" if predicted else ""
    message = (f"waiting for the maintenance window: it opens {local.isoformat()} ({window.zone.key}), in "
               f"{_duration(opens - world.now)}{room}; the run starts then")
    wake = (opens - world.now).total_seconds()
    if status.get("phase") == Phase.SCHEDULED and (status.get("window") or {}).get("opensAt") == _iso(opens):
        return Step(wait=True, wake_after=wake)
    return Step(status={"phase": Phase.SCHEDULED, "message": message,
                        "window": {"opensAt": _iso(opens), "closesAt": _iso(closes)}},
                events=[Event("Scheduled", message)], wait=True, wake_after=wake)


def _duration(span: timedelta) -> str:
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{seconds}s" if seconds and not days and not hours else ""]
    return "".join(parts) or "0s"


def _scaling_down(spec: Spec, status: Status, world: World) -> Step:
    if "replicas" not in status:
        # Recorded before anything scales, so a restart can never mistake 0 for the app's size.
        return Step(status={"replicas": {name: world.deployments[name].replicas for name in spec.deployments},
                            "images": _release_containers(spec, world), "stoppedAt": _iso(world.now)})
    actions: list[Action] = [Scale(name, 0) for name in spec.deployments if world.deployments[name].replicas != 0]
    remaining = sum(world.deployments[name].pods for name in spec.deployments)
    if actions or remaining:
        return Step(actions=actions, wait=True)
    if spec.backup_enabled:
        message = f"app stopped; backing the database up into {spec.backup_claim}"
        return Step(status={"phase": Phase.BACKING_UP, "message": message}, events=[Event("BackingUp", message)])
    message = "app stopped; backup disabled (backup.enabled: false): migrating without a backup"
    return Step(status={"phase": Phase.MIGRATING, "message": message},
                events=[Event("Migrating", message, warning=True)])


def _backing_up(spec: Spec, status: Status, world: World) -> Step:
    job = _job_step(spec, status, world, "backup", extra={**_counts_before(status, world),
                                                          "backup": {"startedAt": _iso(world.now)}})
    if isinstance(job, Step):
        return job
    backup = jobs.parse_marker(job.log, jobs.BACKUP_MARKER) if job.finished == "Complete" else None
    if not backup or not backup.get("verified"):
        why = "timed out: backup.timeoutSeconds" if job.reason == "DeadlineExceeded" else \
            job.reason or "pg_dump or its verification failed"
        reason = f"the backup failed ({why}): {_tail(job.log)}; no migration was attempted"
        if _online(status):
            message = f"{reason}. The app kept serving and the database is as it was"
            return _finish(status, world, Phase.FAILED, "BackupFailed", message, extra={
                "conditions": _conditions(status, world, BackupTaken=("False", "BackupFailed", reason))})
        return _fail_towards_scaling_up(status, world, "BackingUp", "BackupFailed", reason,
                                        BackupTaken=("False", "BackupFailed", reason))
    record = {**status.get("backup", {}), **backup, "completedAt": _iso(world.now)}
    message = f"backup verified: {record['path']} ({record.get('sizeBytes', 0)} bytes); migrating"
    return Step(status={"backup": record, "phase": Phase.MIGRATING, "message": message,
                        "conditions": _conditions(status, world, BackupTaken=("True", "BackupVerified", message))},
                events=[Event("Migrating", message)])


def _migrating(spec: Spec, status: Status, world: World) -> Step:
    online = _online(status)
    if online and not online_migrations(status, MigrationClass.EXPAND):
        return _roll_out(spec, "no expand migration")
    job = _job_step(spec, status, world, "migrate", extra=_counts_before(status, world))
    if isinstance(job, Step):
        return job
    output = _tail(job.log)
    if job.finished == "Failed":
        reason = _migration_failure(job, output)
        failed = {"migrateOutput": output,
                  "conditions": _conditions(status, world, Migrated=("False", "MigrationFailed", reason))}
        if online:
            message = (f"{reason}. PostgreSQL rolled the failing migration back and the app kept serving the "
                       f"release it ran: nothing was stopped or restored{_applied_before(job.log)}")
            return _finish({**status, **failed}, world, Phase.FAILED, "MigrationFailed", message, extra=failed)
        return _after_damage(spec, status, world, "Migrating", "MigrationFailed", reason, failed)
    if online:
        step = _roll_out(spec, "expand migrations applied")
        return Step(status={"migrateOutput": output, **step.status}, events=step.events)
    message = "migrations applied; verifying"
    return Step(status={"migrateOutput": output, "phase": Phase.VERIFYING, "message": message,
                        "conditions": _conditions(status, world, Migrated=("True", "Migrated", message))},
                events=[Event("Verifying", message)])


def _verifying(spec: Spec, status: Status, world: World) -> Step:
    if world.applied is None or world.row_counts is None or world.check_results is None:
        return Step(wait=True)
    before = {table: counts["before"] for table, counts in status.get("rowCounts", {}).items() if "before" in counts}
    failures = _verification_failures(spec, status, world, before)
    counts = {t: {**status.get("rowCounts", {}).get(t, {}), "after": n} for t, n in world.row_counts.items()}
    if failures:
        reason = "verification failed: " + "; ".join(failures)
        verified = _conditions(status, world, Verified=("False", "VerificationFailed", reason))
        if _online(status):
            message = (f"{reason}. The release serves the migrated database; nothing was restored (online: a "
                       f"restore would lose the writes made since the backup {status.get('backup', {}).get('path')})")
            return _finish(status, world, Phase.FAILED, "VerificationFailed", message,
                           extra={"rowCounts": counts, "conditions": verified})
        return _after_damage(spec, status, world, "Verifying", "VerificationFailed", reason,
                             {"rowCounts": counts, "conditions": verified})
    if _online(status):
        count = status.get("planCount", 0)
        message = (f"{count} migration{'s' if count != 1 else ''} applied online, 0s downtime; verified; the app "
                   f"serves{_image_summary(_images_to_start(spec, status, released=True))}")
        return _finish(status, world, Phase.SUCCEEDED, "Migrated", message, extra={
            "rowCounts": counts, "downtimeSeconds": 0,
            "conditions": _conditions(status, world, Verified=("True", "Verified", message))})
    message = "verified: django_migrations, row counts and checks hold; starting the app"
    return Step(status={"rowCounts": counts, "phase": Phase.SCALING_UP, "message": message,
                        "conditions": _conditions(status, world, Verified=("True", "Verified", message))},
                events=[Event("ScalingUp", message)])


def _restoring(spec: Spec, status: Status, world: World) -> Step:
    job = _job_step(spec, status, world, "restore")
    if isinstance(job, Step):
        return job
    failure = status.get("failure", {})
    path = status.get("backup", {}).get("path", "?")
    if job.finished == "Failed":
        message = (f"{failure.get('message', 'the run failed')}; then the restore failed too: {_tail(job.log)}. "
                   f"The app stays stopped (old code must not run on a broken schema). The backup is {path} in "
                   f"PersistentVolumeClaim {spec.backup_claim}: restore it by hand with `pg_restore "
                   f"--single-transaction --exit-on-error --no-owner -d <database> {path}` into a recreated "
                   "database, then scale the app back to status.replicas")
        return _finish(status, world, Phase.FAILED, "RestoreFailed", message, extra={
            "conditions": _conditions(status, world, RestoreFailed=("True", "RestoreFailed", message),
                                      RolledBack=("False", "RestoreFailed", message),
                                      Succeeded=("False", "RestoreFailed", message))})
    restored = jobs.parse_marker(job.log, jobs.RESTORE_MARKER) or {}
    if restored.get("refused"):
        # psql's own words for each statement the server refused ("psql:apply.sql:12: ERROR:  permission ...").
        restored["refusedStatements"] = [line.split("ERROR:", 1)[1].strip() for line in job.log.splitlines()
                                         if "ERROR:" in line]
    message = f"database restored from {path} ({_restore_summary(restored)}); starting the app on the restored " \
              "database"
    return Step(status={"phase": Phase.SCALING_UP, "message": message, "restore": restored,
                        "conditions": _conditions(status, world, RolledBack=("True", "Restored", message))},
                events=[Event("Restored", message, warning=True)])


def _restore_summary(restored: Status) -> str:
    """What the restore gave back besides the data, and what it could not (the restore script's marker)."""
    kept: list[str] = restored.get("kept", [])
    database: list[str] = [word for word in ("owner", "privileges", "comment", "settings") if word in kept]
    parts = [f"kept: the database's {_words(database)}"] if database else []
    if "objectOwners" in kept:
        parts.append("every object keeps its owner")
    elif restored.get("notActingAs"):
        parts.append(f"its objects now belong to the database URL's role, which cannot act as "
                     f"{restored['notActingAs']}")
    if restored.get("refused"):
        parts.append(f"not re-applied: {'; '.join(restored.get('refusedStatements') or [])}")
    if restored.get("attempts", 1) > 1:
        parts.append(f"the server went away during the restore: it ran {restored['attempts']} times, the last one "
                     "whole, from its DROP")
    return "; ".join(parts) or "the data only: the backup holds none of the database's own properties"


def _words(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def _scaling_up(spec: Spec, status: Status, world: World) -> Step:
    recorded: dict[str, int] = status.get("replicas", {})
    failure = status.get("failure")
    images = _images_to_start(spec, status, released=not failure)
    actions: list[Action] = [Scale(name, replicas, images.get(name, {})) for name, replicas in recorded.items()
                             if world.deployments[name].replicas != replicas
                             or not _runs(world.deployments[name], images.get(name, {}))]
    ready = all(world.deployments[name].rolled_out and world.deployments[name].available >= replicas
                for name, replicas in recorded.items())
    if actions or not ready:
        return Step(actions=actions, wait=True)
    downtime = _seconds_since(status.get("stoppedAt"), world.now)
    replicas = ", ".join(f"{name} {n}" for name, n in recorded.items())
    running_on = _image_summary(images)
    if failure:
        message = (f"{failure['message'].rstrip('.')}. The app runs again ({replicas}){running_on} after "
                   f"{downtime:.0f}s of downtime")
        if status.get("phase") == Phase.SCALING_UP and _condition_status(status, "RolledBack") == "True":
            message += (f"; the database was restored from the backup taken before the migration "
                        f"({_restore_summary(status.get('restore', {}))})")
        return _finish(status, world, Phase.FAILED, failure["reason"], message, extra={"downtimeSeconds": downtime})
    count = status.get("planCount", 0)
    # Django refuses a plan that goes both ways, so one verb tells the direction of them all.
    verb = "unapplied" if any(entry.get("backwards") for entry in status.get("plan", [])) else "applied"
    migrated = f"{count} migration{'s' if count != 1 else ''} {verb}"
    message = f"{migrated}, {downtime:.0f}s downtime; app running ({replicas}){running_on}"
    return _finish(status, world, Phase.SUCCEEDED, "Migrated", message, extra={"downtimeSeconds": downtime})


def _rolling_out(spec: Spec, status: Status, world: World) -> Step:
    if "images" not in status:
        # Recorded before the rollout, as before a scale-down: which containers move to the release.
        return Step(status={"images": _release_containers(spec, world)})
    images = _images_to_start(spec, status, released=True)
    stalled = sorted(name for name in images if world.deployments[name].stalled)
    if stalled:
        message = (f"the rollout of {spec.image} did not progress ({', '.join(stalled)}: ProgressDeadlineExceeded). "
                   "The expand migrations are applied and the contract migrations were not run; the Deployments "
                   "are as their rollout left them (`kubectl rollout undo` goes back: expand migrations suit the "
                   "previous release)")
        return _finish(status, world, Phase.FAILED, "RolloutFailed", message)
    actions: list[Action] = [SetImages(name, wanted) for name, wanted in images.items()
                             if not _runs(world.deployments[name], wanted)]
    ready = all(world.deployments[name].rolled_out and world.deployments[name].available >= world.deployments[
        name].replicas for name in images)
    if actions or not ready:
        return Step(actions=actions, wait=True)
    if online_migrations(status, MigrationClass.CONTRACT):
        message = f"the app runs {spec.image}; applying the contract migrations"
        return Step(status={"phase": Phase.CONTRACTING, "message": message}, events=[Event("Contracting", message)])
    return _to_verifying(status, world, f"the app runs {spec.image}; no contract migration; verifying")


def _contracting(spec: Spec, status: Status, world: World) -> Step:
    job = _job_step(spec, status, world, "contract")
    if isinstance(job, Step):
        return job
    output = _tail(job.log)
    if job.finished == "Failed":
        reason = _migration_failure(job, output)
        message = (f"{reason}. The release {spec.image} serves without the contract changes; the expand "
                   "migrations stay applied and nothing was restored (online: a restore would lose the writes "
                   "made since the backup). Fix the migration and run again: the plan then holds only what is "
                   "left")
        failed = {"contractOutput": output,
                  "conditions": _conditions(status, world, Migrated=("False", "MigrationFailed", reason))}
        return _finish({**status, **failed}, world, Phase.FAILED, "ContractFailed", message, extra=failed)
    return _to_verifying({**status, "contractOutput": output}, world, "contract migrations applied; verifying",
                         {"contractOutput": output})


Handler = Callable[[Spec, Status, World], Step]


@dataclass(frozen=True)
class PhaseFacts:
    """Everything the operator knows about a phase, in one place: what it runs, reads, and means for the app."""

    handler: Handler | None  # None: terminal, the run ended
    job: str | None = None  # the step whose Job this phase creates and waits for
    app_stopped: bool = False  # Offline: the app must stay at zero replicas (a Deployment scaled up is undone)
    touched: bool = True  # the app or the database may have changed: a deleted run is driven to its end first
    reads_app: bool = False  # observes the app's Deployments
    reads_lease: bool = False  # observes the database's Lease (and, while Pending, checks the input)
    counts_rows: bool = False  # counts rows before its Job may change them (spec.verify.rowCounts)
    verifies: bool = False  # reads django_migrations, the row counts and the checks
    rehearses: bool = False  # a scratch copy may exist: observed, verified once migrated, dropped if deleted
    health: str = "Progressing"  # the Argo CD health of a run in this phase (charts/.../argocd/health.lua)
    notice: str | None = None  # what spec.notify's webhooks are told when a run enters this phase


PHASES: dict[Phase, PhaseFacts] = {
    Phase.PENDING: PhaseFacts(_pending, touched=False, reads_lease=True),
    Phase.QUEUED: PhaseFacts(_queued, touched=False, reads_lease=True),
    Phase.PLANNING: PhaseFacts(_planning, job="plan", touched=False),
    Phase.REHEARSING: PhaseFacts(_rehearsing, job="rehearse", touched=False, rehearses=True),
    Phase.AWAITING_APPROVAL: PhaseFacts(_awaiting_approval, touched=False, health="Suspended",
                                        notice="AwaitingApproval"),
    Phase.SCHEDULED: PhaseFacts(_scheduled, touched=False, notice="Scheduled"),
    Phase.SCALING_DOWN: PhaseFacts(_scaling_down, reads_app=True, notice="Stopping"),
    Phase.BACKING_UP: PhaseFacts(_backing_up, job="backup", app_stopped=True, reads_app=True, counts_rows=True),
    Phase.MIGRATING: PhaseFacts(_migrating, job="migrate", app_stopped=True, reads_app=True, counts_rows=True),
    Phase.VERIFYING: PhaseFacts(_verifying, app_stopped=True, reads_app=True, verifies=True),
    Phase.RESTORING: PhaseFacts(_restoring, job="restore", app_stopped=True, reads_app=True),
    Phase.SCALING_UP: PhaseFacts(_scaling_up, reads_app=True),
    Phase.ROLLING_OUT: PhaseFacts(_rolling_out, reads_app=True),
    Phase.CONTRACTING: PhaseFacts(_contracting, job="contract"),
    Phase.SUCCEEDED: PhaseFacts(None, health="Healthy", notice="Succeeded"),
    Phase.FAILED: PhaseFacts(None, health="Degraded", notice="Failed"),
}
TERMINAL = frozenset(phase for phase, facts in PHASES.items() if facts.handler is None)


# --- shared pieces ------------------------------------------------------------------------------------------


def _job_step(spec: Spec, status: Status, world: World, step: str, extra: Status | None = None) -> Step | JobState:
    """Creates the step's Job and waits for it; the Job's state once it ended, or once its pod never started."""
    not_started = status.get("notStarted")
    if not_started and not_started["step"] == step:
        if world.job is not None:
            # Gone before the step fails: a pod that starts late must never run after the run moved on.
            return Step(actions=[DeleteJob(step)], wait=True)
        return JobState("Failed", NOT_STARTED, not_started["message"])
    if world.job is None:
        if step in status.get("jobs", {}):
            # Recorded but absent: the operator stopped between the record and the create (reads go to the API
            # server, so a created Job is always seen). The name is deterministic: this is the one creation.
            return Step(actions=[CreateJob(step)])
        return Step(status={**(extra or {}), "jobs": {**status.get("jobs", {}), step: step}},
                    actions=[CreateJob(step)])
    if world.job.finished is None:
        waited = (world.now - world.job.created).total_seconds() if world.job.created else 0.0
        if world.job.not_started and waited > spec.start_timeout_seconds:
            message = (f"its pod did not start within jobTemplate.startTimeoutSeconds ({spec.start_timeout_seconds}s): "
                       f"{world.job.not_started}")
            return Step(status={"notStarted": {"step": step, "message": message}}, actions=[DeleteJob(step)],
                        wait=True)
        return Step(wait=True)
    return world.job


def _online(status: Status) -> bool:
    return bool(status.get("strategy") == "Online")


def online_migrations(status: Status, migration_class: MigrationClass) -> list[str]:
    """app.name of the plan's migrations of one class, in plan order: what an online step applies."""
    return [f"{m['app']}.{m['name']}" for m in status.get("plan", []) if m.get("class") == migration_class]


def _roll_out(spec: Spec, done: str) -> Step:
    message = f"{done}; rolling the app out to {spec.image} with its own rolling update"
    return Step(status={"phase": Phase.ROLLING_OUT, "message": message}, events=[Event("RollingOut", message)])


def _to_verifying(status: Status, world: World, message: str, update: Status | None = None) -> Step:
    return Step(status={**(update or {}), "phase": Phase.VERIFYING, "message": message,
                        "conditions": _conditions(status, world, Migrated=("True", "Migrated", message))},
                events=[Event("Verifying", message)])


def _migration_failure(job: JobState, output: str) -> str:
    timed_out = job.reason == "DeadlineExceeded" or TIMEOUT_MARKER in job.log
    why = "timed out (migrate.timeoutSeconds)" if timed_out else "failed"
    return f"the migration {why}{_migrate_failure(job.log, output)}"


def _counts_before(status: Status, world: World) -> Status:
    """The row counts of the stopped app's database, recorded with the first Job that may change it.

    None online: the app writes meanwhile, so a count before says nothing about rows lost.
    """
    if "rowCounts" in status or world.row_counts is None or _online(status):
        return {}
    return {"rowCounts": {table: {"before": count} for table, count in world.row_counts.items()}}


def _guard(spec: Spec, status: Status, world: World) -> Step | None:
    """Scales down again any Deployment that something scaled up while the app must be stopped (Offline)."""
    if _online(status):
        return None
    scaled_up = [name for name in spec.deployments if name in world.deployments and world.deployments[name].replicas]
    if not scaled_up:
        return None
    events = []
    for name in scaled_up:
        who = world.deployments[name].scaled_by
        by = f" by {who}" if who else ""
        events.append(Event("ScaledUpDuringRun",
                            f"Deployment {name} was scaled to {world.deployments[name].replicas}{by} while the "
                            f"run is in {status.get('phase')}; scaling it down to 0 again", warning=True))
    return Step(actions=[Scale(name, 0) for name in scaled_up], events=events, wait=True)


def _release_containers(spec: Spec, world: World) -> dict[str, dict[str, str]]:
    """With app.image: each Deployment's containers that run the app container's image, with that image.

    Recorded with the replicas, before anything scales: these are the containers the release moves to
    app.image, and the images a failed run starts again.
    """
    if not spec.image:
        return {}
    app = world.deployments[spec.deployment].images
    current = app.get(spec.container) if spec.container else next(iter(app.values()), None)
    recorded = {name: {container: image for container, image in world.deployments[name].images.items()
                       if image == current} for name in spec.deployments}
    return {name: containers for name, containers in recorded.items() if containers}


def _images_to_start(spec: Spec, status: Status, released: bool) -> dict[str, dict[str, str]]:
    """The image of each recorded container at the end: the release after a success, the one before otherwise."""
    recorded: dict[str, dict[str, str]] = status.get("images") or {}
    if not released or not spec.image:
        return recorded
    return {name: dict.fromkeys(containers, spec.image) for name, containers in recorded.items()}


def _runs(deployment: DeploymentState, images: dict[str, str]) -> bool:
    return all(deployment.images.get(container) == image for container, image in images.items())


def _image_summary(images: dict[str, dict[str, str]]) -> str:
    names = sorted({image for containers in images.values() for image in containers.values()})
    return f" on {', '.join(names)}" if names else ""


def _verification_failures(spec: Spec, status: Status, world: World, counts_before: dict[str, int]) -> list[str]:
    assert world.applied is not None and world.row_counts is not None and world.check_results is not None
    failures = []
    for entry in status.get("plan", []):
        applied = (entry["app"], entry["name"]) in world.applied
        if applied == bool(entry.get("backwards")):
            expected = "unapplied" if entry.get("backwards") else "applied"
            failures.append(f"django_migrations: {entry['app']}.{entry['name']} is not {expected}")
    for table, after in world.row_counts.items():
        before = counts_before.get(table)
        if before is not None and after < before:
            failures.append(f"table {table} lost rows: {before} before, {after} after")
    for check in spec.checks:
        got = world.check_results.get(check.name)
        if got != check.expect:
            failures.append(f"check '{check.name}' returned {got!r}, expected {check.expect!r}")
    return failures


def _after_damage(spec: Spec, status: Status, world: World, step: str, reason: str, message: str,
                  update: Status) -> Step:
    """The database may be changed: restore it, or with onFailure Keep leave it and the app as they are."""
    if spec.on_failure == "Keep" or not spec.backup_enabled:
        why = "onFailure is Keep" if spec.on_failure == "Keep" else "backup.enabled is false"
        full = (f"{message}. The database is left as the failure left it ({why}) and the app stays stopped: "
                f"repair the database, then scale the app back to status.replicas")
        return _finish({**status, **update}, world, Phase.FAILED, reason, full,
                       extra={**update, "failure": {"step": step, "reason": reason, "message": message}})
    restoring = f"{message}; restoring the database from {status.get('backup', {}).get('path', 'the backup')}"
    return Step(status={**update, "phase": Phase.RESTORING, "message": restoring,
                        "failure": {"step": step, "reason": reason, "message": message}},
                events=[Event(reason, restoring, warning=True)])


def _fail_towards_scaling_up(status: Status, world: World, step: str, reason: str, message: str,
                             **conditions: tuple[str, str, str]) -> Step:
    return Step(status={"phase": Phase.SCALING_UP, "message": f"{message}; starting the app again",
                        "failure": {"step": step, "reason": reason, "message": message},
                        "conditions": _conditions(status, world, **conditions)},
                events=[Event(reason, message, warning=True)])


def _finish(status: Status, world: World, phase: Phase, reason: str, message: str, release: bool = True,
            extra: Status | None = None) -> Step:
    succeeded = "True" if phase == Phase.SUCCEEDED else "False"
    conditions = (extra or {}).get("conditions") or _conditions(status, world)
    conditions = _set_condition(conditions, world, "Succeeded", succeeded, reason, message)
    return Step(status={**(extra or {}), "phase": phase, "message": message, "completedAt": _iso(world.now),
                        "conditions": conditions},
                actions=[ReleaseLease()] if release else [],
                events=[Event(reason, message, warning=phase == Phase.FAILED)])


def _conditions(status: Status, world: World, **changes: tuple[str, str, str]) -> list[dict[str, Any]]:
    conditions: list[dict[str, Any]] = list(status.get("conditions", []))
    for kind, (state, reason, message) in changes.items():
        conditions = _set_condition(conditions, world, kind, state, reason, message)
    return conditions


def _set_condition(conditions: list[dict[str, Any]], world: World, kind: str, state: str, reason: str,
                   message: str) -> list[dict[str, Any]]:
    """Kubernetes condition semantics: lastTransitionTime changes only when the status does."""
    previous = next((c for c in conditions if c["type"] == kind), None)
    changed_at = previous["lastTransitionTime"] if previous and previous["status"] == state else _iso(world.now)
    entry = {"type": kind, "status": state, "reason": reason, "message": message[:32768],
             "lastTransitionTime": changed_at}
    return [*(c for c in conditions if c["type"] != kind), entry]


def _condition_status(status: Status, kind: str) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == kind), None)


def _recorded_plan_summary(status: Status) -> str:
    return _plan_summary([PlannedMigration.from_status(m) for m in status.get("plan", [])])


def _plan_summary(plan: tuple[PlannedMigration, ...] | list[PlannedMigration]) -> str:
    names = ", ".join(f"{m.key}{' (backwards)' if m.backwards else ''}"
                      f"{f' [{m.migration_class}]' if m.migration_class else ''}" for m in plan)
    return f"{len(plan)} migration{'s' if len(plan) != 1 else ''}: {names}"


# Django prints "  Applying app.name..." and " OK" once it is done; the line without OK is the one that failed.
_APPLYING = re.compile(r"^\s*(?P<verb>Applying|Unapplying) (?P<migration>[\w.]+?)\.\.\.(?P<ok> OK)?")
# The last line of a Python traceback: the exception, e.g. django.db.utils.ProgrammingError: relation ... exists.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(: .*)?$")


def _applied_before(log: str) -> str:
    """'; applied before it: app.name, ...' for the migrations of a failed online step that did commit."""
    done = [m["migration"] for m in (_APPLYING.match(line) for line in log.splitlines()) if m and m["ok"]]
    return f"; applied before it (expand, harmless to the running release): {', '.join(done)}" if done else ""


def _migrate_failure(log: str, tail: str) -> str:
    """' while applying blog.0004_x: SomeError: why' from migrate's output: what a person needs to read first.

    Without an exception line (a killed process) the output's `tail` stands for it; the tail is in
    status.migrateOutput either way.
    """
    lines = log.splitlines()
    failing = [m for m in (_APPLYING.match(line) for line in lines) if m and not m["ok"]]
    errors = [line.strip() for line in lines if _EXCEPTION.match(line.strip())]
    where = f" while {failing[-1]['verb'].lower()} {failing[-1]['migration']}" if failing else ""
    detail = f"{errors[-1]} (the output's tail is in status.migrateOutput)" if errors else tail
    return f"{where}: {detail}"


def _tail(log: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(log.strip().splitlines()[-lines:]) or "(no output)"


def _iso(moment: datetime) -> str:
    # Milliseconds: the downtime is computed from these and is often a few seconds.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _seconds_since(iso: str | None, now: datetime) -> float:
    if not iso:
        return 0.0
    return round((now - datetime.fromisoformat(iso)).total_seconds(), 1)
