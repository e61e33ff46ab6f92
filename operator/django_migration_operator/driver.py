"""Drives one DjangoMigration: observe the world, ask the workflow for the next step, carry it out, repeat.

One driver runs per object (a kopf daemon). It sleeps between steps until a wake-up: an event of one of the
run's Jobs, of a pod or Deployment in its namespace, or the end of another run; a slow timer is only a
safety net. The status patch of a step is written before its actions, so a crash between them repeats an
idempotent action, never skips a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, ParamSpec, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

from django_migration_operator import database, jobs, lease, messages, metrics, notify, observe
from django_migration_operator.admission import Admission
from django_migration_operator.classify import MigrationClass
from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef, Spec
from django_migration_operator.status import ConditionType, Reason, RunStatus, condition
from django_migration_operator.workflow import (
    PHASES,
    TERMINAL,
    AcquireLease,
    CreateJob,
    DeleteJob,
    DropScratch,
    Event,
    Phase,
    ReleaseLease,
    Scale,
    SetImages,
    Step,
    advance,
    online_migrations,
    phase_of,
    queued_for_lease,
)

P = ParamSpec("P")
T = TypeVar("T")

SAFETY_NET_SECONDS = 15.0
# Past the sum of a run's deadlines (plan, rehearsal and migration, backup, pods' starts), this much more is stuck.
OVERDUE_SLACK_SECONDS = 600


class Wakeups:
    """Per-run asyncio events, set by the kopf watch handlers, awaited by the drivers."""

    def __init__(self) -> None:
        self._events: dict[str, dict[str, asyncio.Event]] = defaultdict(dict)
        self._queued: set[tuple[str, str]] = set()  # runs Queued for another run's Lease
        self._counting_pods: set[tuple[str, str]] = set()  # runs that wait for the app's pods to go

    def event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events[namespace].setdefault(name, asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self._events[namespace].pop(name, None)
        self.note(namespace, name, queued=False, counts_pods=False)

    def note(self, namespace: str, name: str, *, queued: bool, counts_pods: bool) -> None:
        """What the run waits for now: another run's end (Queued for its Lease; `wake_queued` wakes it then), or
        the app's pods to go (their events wake it; otherwise only its Jobs' pods and the Deployments do)."""
        for waiting, runs in ((queued, self._queued), (counts_pods, self._counting_pods)):
            if waiting:
                runs.add((namespace, name))
            else:
                runs.discard((namespace, name))

    def counts_pods_in(self, namespace: str) -> bool:
        return any(run_namespace == namespace for run_namespace, _ in self._counting_pods)

    def active_in(self, namespace: str) -> bool:
        return bool(self._events.get(namespace))

    def wake_queued(self) -> None:
        for namespace, name in self._queued:
            self.wake(namespace, name)

    def wake(self, namespace: str, name: str | None = None) -> None:
        """Wakes one run, or every run of the namespace when no name is given."""
        targets = [self._events[namespace].get(name)] if name else list(self._events.get(namespace, {}).values())
        for event in targets:
            if event is not None:
                event.set()


class Stop(Enum):
    LEAVE = "leave"  # this operator exits: the next one resumes the run from its status
    DELETED = "deleted"  # the run was deleted: end it first if the app was touched, its finalizer holds it


async def drive(kube: Kube, wakeups: Wakeups, admission: Admission, ref: RunRef,
                logger: logging.Logger | logging.LoggerAdapter[Any], stopping: Callable[[], Stop | None]) -> None:
    """Drives the run until it ends, or until `stopping()` says to leave it.

    A run deleted after it started stopping the app is driven to its end (restored and started again on
    failure): deleting the object must never leave the app stopped.
    """
    wakeup = wakeups.event(ref.namespace, ref.name)
    entered: tuple[str, float] | None = None  # the phase this process saw the run enter, and when
    outage = Outage()
    # The events of steps whose status is written, not posted yet: an API that went away between the two still
    # gets them on the next turn, which decides from that status and so never says them again itself.
    owed: list[Event] = []
    looked = False
    metrics.RUNS_IN_PROGRESS.inc()
    try:
        while stopping() is not Stop.LEAVE:
            wakeup.clear()
            try:
                step, entered = await _turn(kube, wakeups, admission, ref, stopping, logger, entered, owed,
                                            first_look=not looked)
            except Exception as error:
                problem = transient(error)
                if problem is None:
                    raise
                await _in_thread(admission.threads(ref.key), outage.report, kube, ref, problem, logger)
                # Looked at again after the pause, or sooner when asked to stop: the step is tried again from what
                # the world says then, as after a restart of the operator.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=outage.pause())
                continue
            looked = True
            outage.end(logger)
            if step is None or step.status.get("phase") in TERMINAL:
                return
            if step.wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=min(SAFETY_NET_SECONDS,
                                                                      step.wake_after or SAFETY_NET_SECONDS))
    finally:
        metrics.RUNS_IN_PROGRESS.dec()
        with contextlib.suppress(KeyError):
            metrics.RUN_OVERDUE.remove(ref.namespace, ref.name)
        wakeups.forget(ref.namespace, ref.name)
        if not wakeups.active_in(ref.namespace):
            kube.forget_namespace(ref.namespace)
        # A queued run, in any namespace, may go now. Here, not after the last step: kopf may cancel this driver as
        # soon as the run is terminal, and a spurious wake-up only makes a run look again.
        _wake(wakeups, admission.forget(ref.key))
        wakeups.wake_queued()


async def _turn(kube: Kube, wakeups: Wakeups, admission: Admission, ref: RunRef, stopping: Callable[[], Stop | None],
                logger: logging.Logger | logging.LoggerAdapter[Any], entered: tuple[str, float] | None,
                owed: list[Event], *, first_look: bool) -> tuple[Step | None, tuple[str, float] | None]:
    """One look at the run and the step it leads to, carried out: the step, or None when the run is over here; and
    the phase this process saw the run enter, and when."""
    body = await _in_thread(admission.threads(ref.key), kube.read_run, ref.namespace, ref.name)
    if body is None:
        return None, entered
    status: RunStatus = body.get("status") or RunStatus()
    phase = phase_of(status)
    if phase in TERMINAL:
        return None, entered
    spec = Spec.from_body(body.get("spec", {}))
    if stopping() is Stop.DELETED and not PHASES[phase].touched:
        if PHASES[phase].rehearses:
            await asyncio.to_thread(database.drop_database, observe.database_url(kube, ref, spec),
                                    jobs.scratch_name(ref))
        await asyncio.to_thread(kube.release_lease, ref)  # it may hold one: Queued runs wait on it
        return None, entered
    metrics.RUN_OVERDUE.labels(ref.namespace, ref.name).set(_overdue(spec, status, datetime.now(UTC)))
    world = await _in_thread(admission.threads(ref.key), observe.observe, kube, ref, spec, status)
    # The slot read and the step's record of it in one go of the event loop: no other run takes it in between.
    step = advance(spec, status, replace(world, slots=admission.stopped.slots(ref.key),
                                         planning_slots=admission.planning.slots(ref.key), first_look=first_look))
    after: RunStatus = {**status, **step.status}
    _wake(wakeups, admission.note(ref.key, after))
    wakeups.note(ref.namespace, ref.name, queued=queued_for_lease(after),
                 counts_pods=PHASES[phase_of(after)].counts_pods)
    # Before the patch: once the run is terminal, kopf may cancel this driver at any await. Not again when the same
    # step is tried once more after an outage.
    if "phase" in step.status and (entered is None or entered[0] != step.status["phase"]):
        entered = _measure(entered, step.status)
    await _in_thread(admission.threads(ref.key), carry_out, kube, ref, body, spec, step, owed, logger)
    return step, entered


async def _in_thread(threads: Executor | None, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """asyncio.to_thread on `threads` (admission.Admission.threads): the call takes the context along, as there."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(threads, call)


def _wake(wakeups: Wakeups, keys: list[str]) -> None:
    """Wakes the runs named namespace/name (the waiters a freed slot admits)."""
    for key in keys:
        namespace, _, name = key.partition("/")
        wakeups.wake(namespace, name)


@dataclass(frozen=True)
class Problem:
    """Why a look at the run failed, when a later look can get past it: the reason of its event, and a sentence."""

    reason: Reason
    message: str


def transient(error: Exception) -> Problem | None:
    """The problem behind `error` when it passes by itself or by a fix outside the run; None for any other error.

    The Kubernetes API or the database not answering, and rights missing for now (RBAC taken away, or not granted
    yet), are such problems: the run waits and tries again, with the app as it is. Anything else is a bug, and
    kopf's retry of the whole driver deals with it.
    """
    if isinstance(error, database.Unreachable):
        return Problem(Reason.DATABASE_UNREACHABLE, messages.database_unreachable(str(error)))
    if isinstance(error, observe.LeftoverJob):
        return Problem(Reason.LEFTOVER_JOB, str(error))
    if isinstance(error, ApiException) and error.status == 403:
        return Problem(Reason.FORBIDDEN, messages.forbidden(_api_message(error)))
    if isinstance(error, ApiException) and error.status in (429, 500, 502, 503, 504):
        return Problem(Reason.API_UNAVAILABLE, messages.api_unavailable(f"answered {error.status} {error.reason}: "
                                                                        f"{_api_message(error)}"))
    if isinstance(error, urllib3.exceptions.HTTPError):
        return Problem(Reason.API_UNAVAILABLE, messages.api_unavailable(f"does not answer: {type(error).__name__}"))
    return None


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


class Outage:
    """One run's problem since its first failed look: said once (log and event), tried again at growing pauses."""

    FIRST_PAUSE_SECONDS = 1.0
    MAX_PAUSE_SECONDS = 10.0  # a look costs one or two requests: cheap against a run that waits for nothing

    def __init__(self) -> None:
        self.problem: Problem | None = None
        self.since = 0.0
        self.next_pause = self.FIRST_PAUSE_SECONDS

    def report(self, kube: Kube, ref: RunRef, problem: Problem,
               logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        if problem == self.problem:
            return
        if self.problem is None:
            self.since = time.monotonic()
        self.problem = problem
        logger.warning("%s: %s", problem.reason, problem.message)
        # The event may not get through either (the API is down): the log has said it.
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError):
            kube.post_event(ref, problem.reason, problem.message, warning=True)

    def pause(self) -> float:
        pause, self.next_pause = self.next_pause, min(2 * self.next_pause, self.MAX_PAUSE_SECONDS)
        return pause

    def end(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        if self.problem is not None:
            logger.info("%s", messages.outage_over(time.monotonic() - self.since, self.problem.reason))
            self.problem, self.next_pause = None, self.FIRST_PAUSE_SECONDS


def _overdue(spec: Spec, status: RunStatus, now: datetime) -> int:
    """1 when the run has gone on past every deadline it has (not counting waits for a Lease, a person or a
    window), which only a stuck run does: the PrometheusRule's DjangoMigrationOverdue alert."""
    if phase_of(status) in (Phase.PENDING, Phase.QUEUED, Phase.AWAITING_APPROVAL, Phase.SCHEDULED):
        return 0
    since = status.get("stoppedAt") or status.get("startedAt")
    budget = (jobs.PLAN_DEADLINE_SECONDS + 2 * spec.timeout_seconds + spec.backup_timeout_seconds
              + 3 * spec.start_timeout_seconds + OVERDUE_SLACK_SECONDS)
    started = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else now
    return int((now - started).total_seconds() > budget)


def _measure(entered: tuple[str, float] | None, status: RunStatus) -> tuple[str, float]:
    """Records the phase just left (when this process saw it start) and, at the end, the run's result."""
    now = time.monotonic()
    if entered is not None:
        metrics.STEP_SECONDS.labels(entered[0]).observe(now - entered[1])
    phase = str(status["phase"])
    if phase in TERMINAL:
        metrics.RUNS_FINISHED.labels(phase, condition(status, ConditionType.SUCCEEDED).get("reason", "")).inc()
        if status.get("downtimeSeconds"):
            metrics.DOWNTIME_SECONDS.observe(float(status["downtimeSeconds"]))
    return phase, now


def carry_out(kube: Kube, ref: RunRef, body: dict[str, Any], spec: Spec, step: Step, owed: list[Event],
              logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Writes the step's status, does its actions and posts its events after any `owed` by an earlier step (each
    taken off the list once posted)."""
    if step.status:
        update: RunStatus = {**step.status, "observedGeneration": body["metadata"].get("generation")}
        if "jobs" in update:  # the workflow keys Jobs by step; status shows their names
            update["jobs"] = {name: jobs.job_name(ref, name) for name in update["jobs"]}
        kube.patch_run_status(ref, update)
        if "phase" in step.status:
            logger.info("phase %s: %s", step.status["phase"], step.status.get("message", ""))
    owed.extend(step.events)
    for action in step.actions:
        if isinstance(action, Scale):
            images = "".join(f", {container} on {image}" for container, image in action.images.items())
            logger.info("scaling Deployment %s to %d%s", action.deployment, action.replicas, images)
            kube.scale_deployment(ref.namespace, action.deployment, action.replicas, action.images)
        elif isinstance(action, SetImages):
            logger.info("rolling Deployment %s out to %s", action.deployment,
                        ", ".join(f"{container} {image}" for container, image in action.images.items()))
            kube.set_images(ref.namespace, action.deployment, action.images)
        elif isinstance(action, CreateJob):
            manifest = _job_manifest(kube, ref, body, spec, action.step)
            logger.info("creating Job %s", manifest["metadata"]["name"])
            kube.create_job(manifest)
        elif isinstance(action, DeleteJob):
            logger.info("deleting Job %s: its pod did not start", jobs.job_name(ref, action.step))
            kube.delete_job(ref.namespace, jobs.job_name(ref, action.step))
        elif isinstance(action, DropScratch):
            logger.info("dropping the rehearsal's scratch database %s", jobs.scratch_name(ref))
            database.drop_database(observe.database_url(kube, ref, spec), jobs.scratch_name(ref))
        elif isinstance(action, AcquireLease):
            lease.take(kube, ref, observe.database_url(kube, ref, spec).identity, logger)
        elif isinstance(action, ReleaseLease):
            kube.release_lease(ref)
    while owed:
        kube.post_event(ref, owed[0].reason, owed[0].message, owed[0].warning)
        owed.pop(0)
    notice = PHASES[Phase(step.status["phase"])].notice if "phase" in step.status else None
    if notice and spec.notify:
        status: RunStatus = {**(body.get("status") or {}), **step.status}
        reason = condition(step.status, ConditionType.SUCCEEDED).get("reason")
        _notify(kube, ref, spec, notify.Notice(
            namespace=ref.namespace, name=ref.name, kind=notice, phase=str(status["phase"]),
            message=str(status.get("message", "")), downtime_seconds=status.get("downtimeSeconds"),
            reason=reason if notice in (notify.SUCCEEDED, notify.FAILED) else None,
            predicted_downtime_seconds=(status.get("rehearsal") or {}).get("predictedDowntimeSeconds")), logger)


def _notify(kube: Kube, ref: RunRef, spec: Spec, notice: notify.Notice,
            logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Posts the notice to each webhook in turn, each bounded by its timeout; one that fails gets an event (and,
    from notify.post, the metric), never a say in the run."""
    for hook in spec.notify:
        url = kube.read_secret_key(ref.namespace, hook.secret, hook.key)
        if url:
            error = notify.post(notify.Webhook(hook.name, url, hook.format), notice, hook.timeout_seconds)
        else:
            error = f"Secret '{hook.secret}' or its key '{hook.key}' not found"
            metrics.NOTIFICATIONS_FAILED.labels(hook.name).inc()
        if error:
            logger.warning("notification %s to webhook %s failed: %s", notice.kind, hook.name, error)
            kube.post_event(ref, Reason.NOTIFICATION_FAILED,
                            messages.notification_failed(hook.name, notice.kind, error), warning=True)


def _job_manifest(kube: Kube, ref: RunRef, body: dict[str, Any], spec: Spec, step: str) -> dict[str, Any]:
    status: RunStatus = body.get("status") or RunStatus()
    if step in ("plan", "rehearse", "migrate", "contract"):
        deployment = kube.read_deployment(ref.namespace, spec.deployment)
        if deployment is None:
            raise RuntimeError(f"app.deployment: Deployment '{spec.deployment}' disappeared during the run")
        template = deployment["spec"]["template"]
        if step == "plan":
            tools = (_tools_image(kube, ref, status, spec),
                     database.server_major(observe.database_url(kube, ref, spec))) \
                if spec.backup_enabled or spec.rehearsal else None
            return jobs.plan_job(ref, spec, template, tools)
        if step == "rehearse":
            return jobs.rehearse_job(ref, spec, template, observe.database_url(kube, ref, spec).name,
                                     _tools_image(kube, ref, status, spec))
        if status.get("strategy") == "Online":
            wanted = MigrationClass.EXPAND if step == "migrate" else MigrationClass.CONTRACT
            return jobs.online_migrate_job(ref, spec, template, step, online_migrations(status, wanted))
        return jobs.migrate_job(ref, spec, template)
    image = _tools_image(kube, ref, status, spec)
    if step == "backup":
        return jobs.backup_job(ref, spec, jobs.backup_path(spec, ref), image)
    return jobs.restore_job(ref, spec, status.get("backup", {}).get("path") or jobs.backup_path(spec, ref),
                            observe.database_url(kube, ref, spec).name, image)


def _tools_image(kube: Kube, ref: RunRef, status: RunStatus, spec: Spec) -> str:
    """Recorded while Pending, so the backup Job, made while the app is down, reads no Secret for it; a run started
    by an operator from before that record asks the server now."""
    recorded = status.get("toolsImage")
    if recorded:
        return str(recorded)
    return jobs.tools_image(spec, database.server_major(observe.database_url(kube, ref, spec)))
