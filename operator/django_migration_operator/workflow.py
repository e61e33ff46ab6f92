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

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, cast

from django_migration_operator import jobs, messages
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
from django_migration_operator.status import (
    Backup,
    Condition,
    ConditionStatus,
    ConditionType,
    Reason,
    Rehearsal,
    Restore,
    RunStatus,
    condition,
)
from django_migration_operator.window import Window
from django_migration_operator.world import DeploymentState, JobState, World


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


# status.waitingFor of a run Queued for one of the operator's slots for stopped apps (admission.py), named after the
# setting that makes it wait; a run Queued for a Lease names the holder there (namespace/name).
WAITING_FOR_SLOT = "maxStoppedApps"
# status.waitingFor of a run Queued, its Lease held, for one of the operator's planning slots (admission.py).
WAITING_TO_PLAN = "maxPlanningRuns"

# What a rehearsal's prediction adds to the dump and the migration: the app's pods ending once they stopped serving,
# the Jobs' pods starting, the app's starting again (0.9-1.8 s at 1M posts on devcluster, with the demo's 1 s
# readiness probe, bench/README.md). Their preStop serves: it is no downtime.
PREDICTED_OVERHEAD_SECONDS = 2.0

# A node reports a deleted pod's containers stopped within seconds of its grace period (the kubelet kills them then);
# a pod not reported this long after is on a lost or unresponsive node, and its containers may still run.
POD_END_MARGIN_SECONDS = 30


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
    reason: str  # a Reason, or the Phase the run enters
    message: str
    warning: bool = False


@dataclass
class Step:
    status: RunStatus = field(default_factory=RunStatus)  # merged into .status before any action
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    wait: bool = False  # nothing more to do until the world changes (a Job ends, pods go)
    wake_after: float | None = None  # seconds: look again then at the latest, though nothing changed


# A condition to set: its type, whether it holds, the reason and the message.
ConditionChange = tuple[ConditionType, ConditionStatus, str, str]


# --- the machine ------------------------------------------------------------------------------------------


def advance(spec: Spec, status: RunStatus, world: World) -> Step:
    """The next step. While the app is stopped, a step that only moves the run on is followed at once by the new
    phase's first one when that phase reads nothing this look did not: the last pod gone and the backup Job
    created, the backup verified and the migrate Job created, or the database verified and the app scaled up, in
    one status write and no look in between."""
    step = _decide(spec, status, world)
    after = phase_of({**status, **step.status})
    if step.actions or step.wait or after == phase_of(status) or _online(status) \
            or not _chained(phase_of(status), after, status):
        return step
    # Its Job is not recorded yet, so not there: the look this phase would take sees no Job.
    then = _decide(spec, {**status, **step.status}, replace(world, job=None))
    if "phase" in then.status:  # every phase is written and announced on its own
        return step
    return Step(status={**step.status, **then.status}, actions=then.actions, events=[*step.events, *then.events],
                wait=then.wait, wake_after=then.wake_after)


def _chained(current: Phase, after: Phase, status: RunStatus) -> bool:
    now, then = PHASES[current], PHASES[after]
    stopped = now.app_stopped or then.app_stopped  # the app's pods are gone on one side of the move at least
    if not stopped or then.handler is None or (then.job is not None and then.job in status.get("jobs", {})):
        return False
    return all(getattr(now, read) or not getattr(then, read) for read in PhaseFacts.READS)


def _decide(spec: Spec, status: RunStatus, world: World) -> Step:
    facts = PHASES[phase_of(status)]
    if facts.handler is None:
        return Step(wait=True)
    step = _guard(spec, status, world) if facts.app_stopped else None
    step = step or facts.handler(spec, status, world)
    if "phase" in step.status and status.get("podsNotEnding"):  # the note of the phase it was made in
        return replace(step, status={**step.status, "podsNotEnding": None})
    return step


def phase_of(status: RunStatus) -> Phase:
    return Phase(status.get("phase") or Phase.PENDING)


def _pending(spec: Spec, status: RunStatus, world: World) -> Step:
    problems = list(world.problems)
    chosen: RunStatus = {}
    if not problems and (spec.backup_enabled or spec.rehearsal) and world.server_major:
        # Chosen once, with the server's version, and kept: the backup and the restore run the same tools.
        chosen = {"toolsImage": jobs.tools_image(spec, world.server_major)}
        refused = jobs.tools_problem(chosen["toolsImage"], world.server_major)
        problems += [refused] if refused else []
    if problems:
        return _finish(status, world, Phase.FAILED, Reason.INVALID_SPEC, messages.invalid_spec(problems),
                       release=False)
    return _queue_or_plan(status, world, chosen)


def _queued(spec: Spec, status: RunStatus, world: World) -> Step:
    if queued_for(status, WAITING_FOR_SLOT):
        return _start(spec, status, world, _recorded_plan_summary(status))
    return _queue_or_plan(status, world, {})


def _queue_or_plan(status: RunStatus, world: World, chosen: RunStatus) -> Step:
    if world.lease_holder:
        if status.get("phase") == Phase.QUEUED and status.get("waitingFor") == world.lease_holder:
            return Step(wait=True)
        message = messages.queued(world.lease_holder)
        return Step(status={**chosen, "phase": Phase.QUEUED, "waitingFor": world.lease_holder, "message": message,
                            "startedAt": status.get("startedAt") or _iso(world.now),
                            "conditions": _conditions(status, world, (ConditionType.SUCCEEDED, "Unknown",
                                                                      Reason.QUEUED, message))},
                    events=[Event(Phase.QUEUED, message)], wait=True)
    if not world.lease_ours:
        # The Lease first, the phase after: a restart in between finds the run still waiting, never a
        # run past Pending without the Lease.
        return Step(actions=[AcquireLease()])
    if world.planning_slots and not world.planning_slots.free:
        taken, limit = world.planning_slots.taken, world.planning_slots.limit
        return _wait_for_admission(status, world, WAITING_TO_PLAN, messages.waiting_to_plan(taken, limit),
                                   {**chosen, "startedAt": status.get("startedAt") or _iso(world.now)})
    message = messages.planning()
    return Step(status={**chosen, "phase": Phase.PLANNING, "waitingFor": None, "message": message,
                        "startedAt": status.get("startedAt") or _iso(world.now),
                        "conditions": _conditions(status, world, (ConditionType.SUCCEEDED, "Unknown",
                                                                  Reason.RUNNING, message))},
                events=[Event(Phase.PLANNING, message)])


def _planning(spec: Spec, status: RunStatus, world: World) -> Step:
    job = _job_step(spec, status, world, "plan")
    if isinstance(job, Step):
        return job
    result = parse_plan_output(job.log)
    if job.finished == "Failed" or result.error:
        return _finish(status, world, Phase.FAILED, result.reason or Reason.PLAN_FAILED,
                       messages.plan_failed(result.error or messages.tail(job.log)))
    migrations = classify_plan(result.migrations, spec.migration_classes)
    plan = [m.to_status() for m in migrations]
    choice = choose_strategy(spec.strategy, migrations, spec.image)
    planned: RunStatus = {"plan": plan, "planCount": len(plan), "strategy": choice.strategy,
                          "strategyReason": choice.reason}
    if not plan:
        return _finish({**status, **planned}, world, Phase.SUCCEEDED, Reason.NOTHING_TO_MIGRATE,
                       messages.nothing_to_migrate(), extra={**planned, "downtimeSeconds": 0})
    irreversible = irreversible_steps(migrations)
    if irreversible:
        return _finish({**status, **planned}, world, Phase.FAILED, Reason.IRREVERSIBLE,
                       messages.irreversible(irreversible), extra=planned)
    if choice.refused:
        return _finish({**status, **planned}, world, Phase.FAILED, Reason.ONLINE_REFUSED,
                       messages.online_refused(choice.refused), extra=planned)
    chosen = Event(Reason.STRATEGY_CHOSEN, messages.strategy_chosen(choice.strategy, choice.reason))
    if spec.rehearsal:
        message = messages.rehearsing(messages.plan_summary(migrations))
        return Step(status={**planned, "phase": Phase.REHEARSING, "message": message},
                    events=[chosen, Event(Phase.REHEARSING, message)])
    step = _plan_ready(spec, {**status, **planned}, world, "")
    return Step(status={**planned, **step.status}, events=[chosen, *step.events])


def _plan_ready(spec: Spec, status: RunStatus, world: World, rehearsed: str) -> Step:
    """The plan is known (and rehearsed): wait for approval, or start."""
    summary = _recorded_plan_summary(status) + rehearsed
    if spec.approval == "Manual":
        message = messages.awaiting_approval(summary, status.get("strategy"))
        return Step(status={"phase": Phase.AWAITING_APPROVAL, "message": message},
                    events=[Event(Phase.AWAITING_APPROVAL, message)])
    return _start(spec, status, world, summary)


def _rehearsing(spec: Spec, status: RunStatus, world: World) -> Step:
    """The plan applied to a scratch copy first: timed, verified, dropped. Production is never touched."""
    rehearsal: Rehearsal = status.get("rehearsal") or {}
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
        return _finish(status, world, Phase.FAILED, Reason.REHEARSAL_FAILED,
                       messages.rehearsal_failed(rehearsal["message"]), extra={
                           "failure": {"step": Phase.REHEARSING, "reason": Reason.REHEARSAL_FAILED,
                                       "message": rehearsal["message"]}})
    return _plan_ready(spec, status, world, messages.rehearsed(rehearsal))


def _judge_rehearsal(spec: Spec, status: RunStatus, world: World, job: JobState) -> Rehearsal:
    """The rehearsal's durations and outcome, from its two markers and the copy's verification."""
    copied = jobs.parse_marker(job.log, jobs.REHEARSAL_COPY_MARKER)
    migrated = parse_marker(job.log, REHEARSAL_MARKER) or {}
    measured = {**(copied or {}), **migrated}
    # The markers' durations and sizes, named as the rehearsal's status fields (jobs.rehearse_job prints them).
    timings = cast(Rehearsal, {key: value for key, value in measured.items() if key.endswith(("Seconds", "Bytes"))})
    if job.finished == "Failed" or not migrated:
        output = messages.tail(job.log)
        what = _migration_failure(job) if copied else messages.rehearsal_copy_failed(output)
        return {**timings, "outcome": "Failed", "message": what}
    assert copied is not None
    failures = _verification_failures(spec, status, world, copied.get("rowCounts", {}))
    if failures:
        return {**timings, "outcome": "Failed", "message": messages.rehearsal_verification_failed(failures)}
    offline = 0.0 if _online(status) else timings.get("dumpSeconds", 0) + timings.get("migrateSeconds", 0) + \
        PREDICTED_OVERHEAD_SECONDS
    return {**timings, "outcome": "Succeeded", "predictedDowntimeSeconds": round(offline, 1),
            "message": messages.rehearsal_succeeded()}


def _awaiting_approval(spec: Spec, status: RunStatus, world: World) -> Step:
    if spec.approval == "Manual":
        return Step(wait=True)
    return _start(spec, status, world, _recorded_plan_summary(status))


def _scheduled(spec: Spec, status: RunStatus, world: World) -> Step:
    return _start(spec, status, world, _recorded_plan_summary(status))


def _start(spec: Spec, status: RunStatus, world: World, summary: str) -> Step:
    """Offline stops the app first; online backs up while it serves (or migrates, without a backup).

    Not before the maintenance window opens, with room for the predicted downtime; once started, a run is never
    cut short by the window's end.
    """
    waiting = _until_the_window(spec, status, world) if spec.window else None
    if waiting:
        return waiting
    if not _online(status):
        if world.slots and not world.slots.free:
            return _wait_for_admission(status, world, WAITING_FOR_SLOT,
                                       messages.waiting_for_slot(world.slots.taken, world.slots.limit))
        message = messages.stopping_the_app(summary)
        return Step(status={"phase": Phase.SCALING_DOWN, "waitingFor": None, "message": message,
                            "conditions": _conditions(status, world, (ConditionType.SUCCEEDED, "Unknown",
                                                                      Reason.RUNNING, message))},
                    events=[Event(Phase.SCALING_DOWN, message)])
    if spec.backup_enabled:
        message = messages.backing_up_online(summary, spec.backup_claim)
        return Step(status={"phase": Phase.BACKING_UP, "message": message}, events=[Event(Phase.BACKING_UP, message)])
    message = messages.migrating_online_without_backup(summary)
    return Step(status={"phase": Phase.MIGRATING, "message": message},
                events=[Event(Phase.MIGRATING, message, warning=True)])


def _wait_for_admission(status: RunStatus, world: World, waiting_for: str, message: str,
                        extra: RunStatus | None = None) -> Step:
    """Queued with the app serving: as many runs as the operator stops (or plans) at once do so now."""
    if queued_for(status, waiting_for):
        return Step(wait=True)  # admission.Admission wakes the run when a slot is its turn
    return Step(status={**(extra or {}), "phase": Phase.QUEUED, "waitingFor": waiting_for, "message": message,
                        "conditions": _conditions(status, world, (ConditionType.SUCCEEDED, "Unknown",
                                                                  Reason.WAITING_FOR_SLOT, message))},
                events=[Event(Phase.QUEUED, message)], wait=True)


def _until_the_window(spec: Spec, status: RunStatus, world: World) -> Step | None:
    """None when the window is open with room for the predicted downtime; else wait in Scheduled, or fail."""
    window = Window.from_spec(spec.window)
    predicted = float((status.get("rehearsal") or {}).get("predictedDowntimeSeconds") or 0)
    found = window.opening(world.now, timedelta(seconds=predicted))
    if found is None:
        if predicted > window.duration.total_seconds():
            why = messages.window_too_short(predicted, spec.window.get("duration"))
        elif window.recurs:
            why = messages.window_never_opens()
        else:
            why = messages.window_over(predicted)
        return _finish(status, world, Phase.FAILED, Reason.OUTSIDE_WINDOW, messages.outside_window(why))
    opens, closes = found
    if opens <= world.now:
        return None
    message = messages.scheduled(opens.astimezone(window.zone).isoformat(), window.zone.key, opens - world.now,
                                 predicted)
    wake = (opens - world.now).total_seconds()
    if status.get("phase") == Phase.SCHEDULED and (status.get("window") or {}).get("opensAt") == _iso(opens):
        return Step(wait=True, wake_after=wake)
    return Step(status={"phase": Phase.SCHEDULED, "message": message,
                        "window": {"opensAt": _iso(opens), "closesAt": _iso(closes)}},
                events=[Event(Phase.SCHEDULED, message)], wait=True, wake_after=wake)


def _scaling_down(spec: Spec, status: RunStatus, world: World) -> Step:
    actions: list[Action] = [Scale(name, 0) for name in spec.deployments if world.deployments[name].replicas != 0]
    if "replicas" not in status:
        # Recorded in the step's status, which is written before its actions: a restart can never mistake 0 for the
        # app's size, and the scale follows in the same step.
        return Step(status={"replicas": {name: world.deployments[name].replicas for name in spec.deployments},
                            "images": _release_containers(spec, world), "stoppedAt": _iso(world.now)},
                    actions=actions, wait=True)
    served = _serving_ended(spec, status, world)
    remaining = [name for name in spec.deployments if world.deployments[name].pods != 0]  # None: not counted
    if actions or remaining:
        return _waiting_for_pods(status, world, Step(status=served, actions=actions, wait=True), "backup")
    if spec.backup_enabled:
        message = messages.backing_up(spec.backup_claim)
        return Step(status={**served, "phase": Phase.BACKING_UP, "message": message},
                    events=[Event(Phase.BACKING_UP, message)])
    message = messages.migrating_without_backup()
    return Step(status={**served, "phase": Phase.MIGRATING, "message": message},
                events=[Event(Phase.MIGRATING, message, warning=True)])


def _waiting_for_pods(status: RunStatus, world: World, step: Step, held: messages.HeldByPods) -> Step:
    """The waiting step, which also names the app's pods whose node has not reported them stopped long after their
    grace period: a lost or unresponsive node, whose containers may still run. Only a person can tell, so the run
    waits, says so once (status.podsNotEnding keeps the message it replaced, back once they are gone), and looks
    again when the next pod would become late."""
    ending = [pod for state in world.deployments.values() for pod in state.ending]
    overdue = [(world.now - pod.deadline).total_seconds() - POD_END_MARGIN_SECONDS for pod in ending]
    late = sorted({pod.name for pod, past in zip(ending, overdue, strict=True) if past >= 0})
    step = replace(step, wake_after=min((-past for past in overdue if past < 0), default=None))
    noted = status.get("podsNotEnding")
    if not late:
        if not noted:
            return step
        return replace(step, status={**step.status, "podsNotEnding": None, "message": noted["replaced"]})
    if noted and noted["pods"] == late:
        return step
    message = messages.pods_not_ending(late, POD_END_MARGIN_SECONDS, held)
    replaced = noted["replaced"] if noted else status.get("message", "")
    return replace(step, status={**step.status, "message": message,
                                 "podsNotEnding": {"pods": late, "replaced": replaced}},
                   events=[*step.events, Event(Reason.PODS_NOT_ENDING, message, warning=True)])


def _serving_ended(spec: Spec, status: RunStatus, world: World) -> RunStatus:
    """The first look that finds no Ready pod of app.deployment, terminating ones included, records when: the
    downtime counts from here. Until then the app answers: a Service routes to Ready terminating pods when no
    other is ready (Kubernetes 1.28+, KEP-1669), so the pods' preStop and graceful stop serve.

    A process's first look did not see the pods serve (the operator restarted while they stopped): the serving
    may have ended any time since the scale-down began, so the downtime counts from stoppedAt, never short."""
    if "servingEndedAt" in status or world.deployments[spec.deployment].serving != 0:  # None: not counted
        return {}
    if world.first_look and "stoppedAt" in status:
        return {"servingEndedAt": status["stoppedAt"]}
    return {"servingEndedAt": _iso(world.now)}


def _backing_up(spec: Spec, status: RunStatus, world: World) -> Step:
    job = _job_step(spec, status, world, "backup", extra={**_counts_before(status, world),
                                                          "backup": {"startedAt": _iso(world.now)}})
    if isinstance(job, Step):
        return job
    # The marker's record, as the backup script prints it (jobs.backup_job).
    backup = cast(Backup | None, jobs.parse_marker(job.log, jobs.BACKUP_MARKER)) if job.finished == "Complete" \
        else None
    if not backup or not backup.get("verified"):
        failure = messages.backup_failed(job.reason, job.log)
        not_taken: ConditionChange = (ConditionType.BACKUP_TAKEN, "False", Reason.BACKUP_FAILED, failure)
        if _online(status):
            return _finish(status, world, Phase.FAILED, Reason.BACKUP_FAILED, messages.backup_failed_online(failure),
                           extra={"conditions": _conditions(status, world, not_taken)})
        return _fail_towards_scaling_up(status, world, Phase.BACKING_UP, Reason.BACKUP_FAILED, failure, not_taken)
    record: Backup = {**status.get("backup", {}), **backup, "completedAt": _iso(world.now)}
    message = messages.backup_verified(record["path"], record.get("sizeBytes", 0))
    return Step(status={"backup": record, "phase": Phase.MIGRATING, "message": message,
                        "conditions": _conditions(status, world, (ConditionType.BACKUP_TAKEN, "True",
                                                                  Reason.BACKUP_VERIFIED, message))},
                events=[Event(Phase.MIGRATING, message)])


def _migrating(spec: Spec, status: RunStatus, world: World) -> Step:
    online = _online(status)
    if online and not online_migrations(status, MigrationClass.EXPAND):
        return _roll_out(spec, expanded=False)
    job = _job_step(spec, status, world, "migrate", extra=_counts_before(status, world))
    if isinstance(job, Step):
        return job
    output = messages.tail(job.log)
    if job.finished == "Failed":
        failure = _migration_failure(job)
        failed: RunStatus = {"migrateOutput": output, "conditions": _conditions(
            status, world, (ConditionType.MIGRATED, "False", Reason.MIGRATION_FAILED, failure))}
        if online:
            return _finish({**status, **failed}, world, Phase.FAILED, Reason.MIGRATION_FAILED,
                           messages.online_migration_failed(failure, job.log), extra=failed)
        return _after_damage(spec, status, world, Phase.MIGRATING, Reason.MIGRATION_FAILED, failure, failed)
    if online:
        step = _roll_out(spec, expanded=True)
        return Step(status={"migrateOutput": output, **step.status}, events=step.events)
    return _to_verifying(status, world, messages.migrations_applied(), {"migrateOutput": output})


def _verifying(spec: Spec, status: RunStatus, world: World) -> Step:
    if world.applied is None or world.row_counts is None or world.check_results is None:
        return Step(wait=True)
    before = {table: counts["before"] for table, counts in status.get("rowCounts", {}).items() if "before" in counts}
    failures = _verification_failures(spec, status, world, before)
    counts: RunStatus = {"rowCounts": {t: {**status.get("rowCounts", {}).get(t, {}), "after": n}
                                       for t, n in world.row_counts.items()}}
    if failures:
        failure = messages.verification_failed(failures)
        verified = _conditions(status, world, (ConditionType.VERIFIED, "False", Reason.VERIFICATION_FAILED, failure))
        if _online(status):
            message = messages.verification_failed_online(failure, status.get("backup", {}).get("path"))
            return _finish(status, world, Phase.FAILED, Reason.VERIFICATION_FAILED, message,
                           extra={**counts, "conditions": verified})
        return _after_damage(spec, status, world, Phase.VERIFYING, Reason.VERIFICATION_FAILED, failure,
                             {**counts, "conditions": verified})
    if _online(status):
        message = messages.succeeded_online(status.get("planCount", 0),
                                            _images_to_start(spec, status, released=True))
        return _finish(status, world, Phase.SUCCEEDED, Reason.PLAN_APPLIED, message, extra={
            **counts, "downtimeSeconds": 0, "conditions": _conditions(
                status, world, (ConditionType.VERIFIED, "True", Reason.VERIFICATION_PASSED, message))})
    message = messages.verified()
    return Step(status={**counts, "phase": Phase.SCALING_UP, "message": message,
                        "conditions": _conditions(status, world, (ConditionType.VERIFIED, "True",
                                                                  Reason.VERIFICATION_PASSED, message))},
                events=[Event(Phase.SCALING_UP, message)])


def _restoring(spec: Spec, status: RunStatus, world: World) -> Step:
    job = _job_step(spec, status, world, "restore")
    if isinstance(job, Step):
        return job
    failure = status.get("failure")
    path = status.get("backup", {}).get("path", "?")
    if job.finished == "Failed":
        message = messages.restore_failed(failure["message"] if failure else None, job.log, path, spec.backup_claim)
        return _finish(status, world, Phase.FAILED, Reason.RESTORE_FAILED, message, extra={
            "conditions": _conditions(
                status, world, (ConditionType.MANUAL_RESTORE_REQUIRED, "True", Reason.RESTORE_FAILED, message),
                (ConditionType.ROLLED_BACK, "False", Reason.RESTORE_FAILED, message),
                (ConditionType.SUCCEEDED, "False", Reason.RESTORE_FAILED, message))})
    # The marker's record, as the restore script prints it (jobs.restore_job).
    restored = cast(Restore, jobs.parse_marker(job.log, jobs.RESTORE_MARKER) or {})
    if restored.get("refused"):
        # psql's own words for each statement the server refused ("psql:apply.sql:12: ERROR:  permission ...").
        restored["refusedStatements"] = [line.split("ERROR:", 1)[1].strip() for line in job.log.splitlines()
                                         if "ERROR:" in line]
    message = messages.restored(path, restored)
    return Step(status={"phase": Phase.SCALING_UP, "message": message, "restore": restored,
                        "conditions": _conditions(status, world, (ConditionType.ROLLED_BACK, "True", Reason.RESTORED,
                                                                  message))},
                events=[Event(Reason.RESTORED, message, warning=True)])


def _scaling_up(spec: Spec, status: RunStatus, world: World) -> Step:
    recorded = status.get("replicas", {})
    failure = status.get("failure")
    images = _images_to_start(spec, status, released=not failure)
    actions: list[Action] = [Scale(name, replicas, images.get(name, {})) for name, replicas in recorded.items()
                             if world.deployments[name].replicas != replicas
                             or not _runs(world.deployments[name], images.get(name, {}))]
    ready = all(world.deployments[name].rolled_out and world.deployments[name].available >= replicas
                for name, replicas in recorded.items())
    if actions or not ready:
        return Step(actions=actions, wait=True)
    downtime = _seconds_since(status.get("servingEndedAt") or status.get("stoppedAt"), world.now)
    if failure:
        rolled_back = condition(status, ConditionType.ROLLED_BACK).get("status") == "True"
        message = messages.failed_app_running(failure["message"], recorded, images, downtime,
                                              status.get("restore", {}) if rolled_back else None)
        return _finish(status, world, Phase.FAILED, failure["reason"], message, extra={"downtimeSeconds": downtime})
    backwards = any(entry.get("backwards") for entry in status.get("plan", []))
    message = messages.succeeded(status.get("planCount", 0), backwards, downtime, recorded, images)
    return _finish(status, world, Phase.SUCCEEDED, Reason.PLAN_APPLIED, message, extra={"downtimeSeconds": downtime})


def _rolling_out(spec: Spec, status: RunStatus, world: World) -> Step:
    if "images" not in status:
        # Recorded before the rollout, as before a scale-down: which containers move to the release.
        return Step(status={"images": _release_containers(spec, world)})
    images = _images_to_start(spec, status, released=True)
    stalled = sorted(name for name in images if world.deployments[name].stalled)
    if stalled:
        return _finish(status, world, Phase.FAILED, Reason.ROLLOUT_FAILED,
                       messages.rollout_stalled(spec.image, stalled))
    actions: list[Action] = [SetImages(name, wanted) for name, wanted in images.items()
                             if not _runs(world.deployments[name], wanted)]
    # Rolled out, and no pod of the old release left, terminating ones included: in its preStop and graceful stop
    # an old pod still answers (a proxy's stale endpoint, a request in flight), and the contract migration would
    # take away what its code uses.
    ready = all(state.rolled_out and state.available >= state.replicas and state.pods == state.replicas
                for state in (world.deployments[name] for name in images))
    contract = bool(online_migrations(status, MigrationClass.CONTRACT))
    if actions or not ready:
        return _waiting_for_pods(status, world, Step(actions=actions, wait=True), "contract" if contract else "end")
    if contract:
        message = messages.contracting(spec.image)
        return Step(status={"phase": Phase.CONTRACTING, "message": message},
                    events=[Event(Phase.CONTRACTING, message)])
    return _to_verifying(status, world, messages.rolled_out_without_contract(spec.image))


def _contracting(spec: Spec, status: RunStatus, world: World) -> Step:
    job = _job_step(spec, status, world, "contract")
    if isinstance(job, Step):
        return job
    output = messages.tail(job.log)
    if job.finished == "Failed":
        failure = _migration_failure(job)
        failed: RunStatus = {"contractOutput": output, "conditions": _conditions(
            status, world, (ConditionType.MIGRATED, "False", Reason.MIGRATION_FAILED, failure))}
        return _finish({**status, **failed}, world, Phase.FAILED, Reason.CONTRACT_FAILED,
                       messages.contract_failed(failure, spec.image), extra=failed)
    return _to_verifying({**status, "contractOutput": output}, world, messages.contract_applied(),
                         {"contractOutput": output})


Handler = Callable[[Spec, RunStatus, World], Step]


@dataclass(frozen=True)
class PhaseFacts:
    """Everything the operator knows about a phase, in one place: what it runs, reads, and means for the app."""

    handler: Handler | None  # None: terminal, the run ended
    job: str | None = None  # the step whose Job this phase creates and waits for
    app_stopped: bool = False  # Offline: the app must stay at zero replicas (a Deployment scaled up is undone)
    touched: bool = True  # the app or the database may have changed: a deleted run is driven to its end first
    reads_app: bool = False  # observes the app's Deployments
    counts_pods: bool = False  # and lists their pods, terminating ones included (one request per Deployment)
    reads_lease: bool = False  # observes the database's Lease (and, while Pending, checks the input)
    # Counts rows (spec.verify.rowCounts) before its Job may change them; with counts_pods, only in the look that finds
    # the app's pods gone: the counts of the stopped app, for the backup Job created in the same step.
    counts_rows: bool = False
    verifies: bool = False  # reads django_migrations, the row counts and the checks
    rehearses: bool = False  # a scratch copy may exist: observed, verified once migrated, dropped if deleted
    holds_slot: bool = False  # Offline: the app is stopping, stopped or starting; counts against --max-stopped-apps
    holds_planning_slot: bool = False  # its Job lists the migrations; counts against --max-planning-runs
    health: str = "Progressing"  # the Argo CD health of a run in this phase (charts/.../argocd/health.lua)
    notice: str | None = None  # what spec.notify's webhooks are told when a run enters this phase

    READS: ClassVar[tuple[str, ...]] = ("reads_app", "counts_pods", "reads_lease", "counts_rows", "verifies",
                                        "rehearses")


PHASES: dict[Phase, PhaseFacts] = {
    Phase.PENDING: PhaseFacts(_pending, touched=False, reads_lease=True),
    Phase.QUEUED: PhaseFacts(_queued, touched=False, reads_lease=True),
    Phase.PLANNING: PhaseFacts(_planning, job="plan", touched=False, holds_planning_slot=True),
    Phase.REHEARSING: PhaseFacts(_rehearsing, job="rehearse", touched=False, rehearses=True),
    Phase.AWAITING_APPROVAL: PhaseFacts(_awaiting_approval, touched=False, health="Suspended",
                                        notice="AwaitingApproval"),
    Phase.SCHEDULED: PhaseFacts(_scheduled, touched=False, notice="Scheduled"),
    Phase.SCALING_DOWN: PhaseFacts(_scaling_down, reads_app=True, counts_pods=True, counts_rows=True, holds_slot=True,
                                   notice="Stopping"),
    Phase.BACKING_UP: PhaseFacts(_backing_up, job="backup", app_stopped=True, holds_slot=True, reads_app=True,
                                 counts_rows=True),
    Phase.MIGRATING: PhaseFacts(_migrating, job="migrate", app_stopped=True, holds_slot=True, reads_app=True,
                                counts_rows=True),
    Phase.VERIFYING: PhaseFacts(_verifying, app_stopped=True, holds_slot=True, reads_app=True, verifies=True),
    Phase.RESTORING: PhaseFacts(_restoring, job="restore", app_stopped=True, holds_slot=True, reads_app=True),
    Phase.SCALING_UP: PhaseFacts(_scaling_up, holds_slot=True, reads_app=True),
    Phase.ROLLING_OUT: PhaseFacts(_rolling_out, reads_app=True, counts_pods=True),
    Phase.CONTRACTING: PhaseFacts(_contracting, job="contract"),
    Phase.SUCCEEDED: PhaseFacts(None, health="Healthy", notice="Succeeded"),
    Phase.FAILED: PhaseFacts(None, health="Degraded", notice="Failed"),
}
TERMINAL = frozenset(phase for phase, facts in PHASES.items() if facts.handler is None)


def holds_slot(status: RunStatus) -> bool:
    """The run counts against the operator's apps stopped at once: Offline, from ScalingDown to its end."""
    return PHASES[phase_of(status)].holds_slot and not _online(status)


def holds_planning_slot(status: RunStatus) -> bool:
    return PHASES[phase_of(status)].holds_planning_slot


def queued_for(status: RunStatus, waiting_for: str) -> bool:
    """The run waits in Queued for `waiting_for`: WAITING_FOR_SLOT, WAITING_TO_PLAN or a run holding the Lease."""
    return phase_of(status) == Phase.QUEUED and status.get("waitingFor") == waiting_for


def queued_for_lease(status: RunStatus) -> bool:
    """Queued behind another run on its database: woken when any run ends, not by the operator's slots."""
    return phase_of(status) == Phase.QUEUED and status.get("waitingFor") not in (WAITING_FOR_SLOT, WAITING_TO_PLAN)


# --- shared pieces ------------------------------------------------------------------------------------------


def _job_step(spec: Spec, status: RunStatus, world: World, step: str,
              extra: RunStatus | None = None) -> Step | JobState:
    """Creates the step's Job and waits for it; the Job's state once it ended, or once its pod never started."""
    not_started = status.get("notStarted")
    if not_started and not_started["step"] == step:
        if world.job is not None:
            # Gone before the step fails: a pod that starts late must never run after the run moved on.
            return Step(actions=[DeleteJob(step)], wait=True)
        return JobState("Failed", Reason.NOT_STARTED, not_started["message"])
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
            message = messages.not_started(spec.start_timeout_seconds, world.job.not_started)
            return Step(status={"notStarted": {"step": step, "message": message}}, actions=[DeleteJob(step)],
                        wait=True)
        return Step(wait=True)
    return world.job


def _online(status: RunStatus) -> bool:
    return bool(status.get("strategy") == "Online")


def online_migrations(status: RunStatus, migration_class: MigrationClass) -> list[str]:
    """app.name of the plan's migrations of one class, in plan order: what an online step applies."""
    return [f"{m['app']}.{m['name']}" for m in status.get("plan", []) if m.get("class") == migration_class]


def _roll_out(spec: Spec, expanded: bool) -> Step:
    message = messages.rolling_out(spec.image, expanded)
    return Step(status={"phase": Phase.ROLLING_OUT, "message": message}, events=[Event(Phase.ROLLING_OUT, message)])


def _to_verifying(status: RunStatus, world: World, message: str, update: RunStatus | None = None) -> Step:
    return Step(status={**(update or {}), "phase": Phase.VERIFYING, "message": message,
                        "conditions": _conditions(status, world, (ConditionType.MIGRATED, "True", Reason.PLAN_APPLIED,
                                                                  message))},
                events=[Event(Phase.VERIFYING, message)])


def _migration_failure(job: JobState) -> str:
    timed_out = job.reason == "DeadlineExceeded" or TIMEOUT_MARKER in job.log
    return messages.migration_failed(timed_out, job.log)


def _counts_before(status: RunStatus, world: World) -> RunStatus:
    """The row counts of the stopped app's database, recorded with the first Job that may change it.

    None online: the app writes meanwhile, so a count before says nothing about rows lost.
    """
    if "rowCounts" in status or world.row_counts is None or _online(status):
        return {}
    return {"rowCounts": {table: {"before": count} for table, count in world.row_counts.items()}}


def _guard(spec: Spec, status: RunStatus, world: World) -> Step | None:
    """Scales down again any Deployment that something scaled up while the app must be stopped (Offline)."""
    if _online(status):
        return None
    scaled_up = [name for name in spec.deployments if name in world.deployments and world.deployments[name].replicas]
    if not scaled_up:
        return None
    events = [Event(Reason.SCALED_UP_DURING_RUN, messages.scaled_up_during_run(
        name, world.deployments[name].replicas, world.deployments[name].scaled_by, status.get("phase")), warning=True)
        for name in scaled_up]
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


def _images_to_start(spec: Spec, status: RunStatus, released: bool) -> dict[str, dict[str, str]]:
    """The image of each recorded container at the end: the release after a success, the one before otherwise."""
    recorded = status.get("images") or {}
    if not released or not spec.image:
        return recorded
    return {name: dict.fromkeys(containers, spec.image) for name, containers in recorded.items()}


def _runs(deployment: DeploymentState, images: dict[str, str]) -> bool:
    return all(deployment.images.get(container) == image for container, image in images.items())


def _verification_failures(spec: Spec, status: RunStatus, world: World, counts_before: dict[str, int]) -> list[str]:
    assert world.applied is not None and world.row_counts is not None and world.check_results is not None
    failures = []
    for entry in status.get("plan", []):
        applied = (entry["app"], entry["name"]) in world.applied
        if applied == bool(entry.get("backwards")):
            failures.append(messages.not_applied(f"{entry['app']}.{entry['name']}", bool(entry.get("backwards"))))
    for table, after in world.row_counts.items():
        before = counts_before.get(table)
        if before is not None and after < before:
            failures.append(messages.lost_rows(table, before, after))
    for check in spec.checks:
        got = world.check_results.get(check.name)
        if got != check.expect:
            failures.append(messages.check_failed(check.name, got, check.expect))
    return failures


def _after_damage(spec: Spec, status: RunStatus, world: World, step: Phase, reason: Reason, failure: str,
                  update: RunStatus) -> Step:
    """The database may be changed: restore it, or with onFailure Keep leave it and the app as they are."""
    record: RunStatus = {"failure": {"step": step, "reason": reason, "message": failure}}
    if spec.on_failure == "Keep" or not spec.backup_enabled:
        return _finish({**status, **update}, world, Phase.FAILED, reason,
                       messages.kept_as_failed(failure, spec.on_failure == "Keep"), extra={**update, **record})
    message = messages.restoring(failure, status.get("backup", {}).get("path"))
    return Step(status={**update, **record, "phase": Phase.RESTORING, "message": message},
                events=[Event(reason, message, warning=True)])


def _fail_towards_scaling_up(status: RunStatus, world: World, step: Phase, reason: Reason, failure: str,
                             *changes: ConditionChange) -> Step:
    return Step(status={"phase": Phase.SCALING_UP, "message": messages.starting_again(failure),
                        "failure": {"step": step, "reason": reason, "message": failure},
                        "conditions": _conditions(status, world, *changes)},
                events=[Event(reason, failure, warning=True)])


def _finish(status: RunStatus, world: World, phase: Phase, reason: str, message: str, release: bool = True,
            extra: RunStatus | None = None) -> Step:
    """Ends the run: `reason` is the Succeeded condition's, a Reason or the plan script's own (Conflict, ...)."""
    succeeded: ConditionStatus = "True" if phase == Phase.SUCCEEDED else "False"
    conditions = (extra or {}).get("conditions") or _conditions(status, world)
    conditions = _set_condition(conditions, world, (ConditionType.SUCCEEDED, succeeded, reason, message))
    return Step(status={**(extra or {}), "phase": phase, "message": message, "completedAt": _iso(world.now),
                        "conditions": conditions},
                actions=[ReleaseLease()] if release else [],
                events=[Event(reason, message, warning=phase == Phase.FAILED)])


def _conditions(status: RunStatus, world: World, *changes: ConditionChange) -> list[Condition]:
    conditions = list(status.get("conditions", []))
    for change in changes:
        conditions = _set_condition(conditions, world, change)
    return conditions


def _set_condition(conditions: list[Condition], world: World, change: ConditionChange) -> list[Condition]:
    """Kubernetes condition semantics: lastTransitionTime changes only when the status does."""
    kind, state, reason, message = change
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed_at = previous["lastTransitionTime"] if previous and previous.get("status") == state else _iso(world.now)
    entry: Condition = {"type": kind, "status": state, "reason": reason, "message": message[:32768],
                        "lastTransitionTime": changed_at}
    return [*(c for c in conditions if c.get("type") != kind), entry]


def _recorded_plan_summary(status: RunStatus) -> str:
    return messages.plan_summary([PlannedMigration.from_status(m) for m in status.get("plan", [])])


def _iso(moment: datetime) -> str:
    # Milliseconds: the downtime is computed from these and is often a few seconds.
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _seconds_since(iso: str | None, now: datetime) -> float:
    if not iso:
        return 0.0
    return round((now - datetime.fromisoformat(iso)).total_seconds(), 1)
