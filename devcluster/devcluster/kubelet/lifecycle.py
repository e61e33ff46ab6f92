"""What a pod worker decides, without processes: the pod's lifecycle on this node and each container's state.

pod_worker.py owns the threads, the processes and the API calls. Which step a sync takes, which container starts
next, whether an exit restarts and after what back-off, what a probe result means, when to wake up and which log
`kubectl logs` reads are decided here, by pure functions and the methods of `Container`, so they are unit-tested
without starting anything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.kubelet.backoff import CrashBackoff, go_duration
from devcluster.kubelet.status import ContainerRecord, Running, Terminated, Waiting, pod_phase, record_from_api

if TYPE_CHECKING:
    from devcluster.kubelet.probes import ProbeTarget
    from devcluster.kubelet.runtime import ContainerProcess

STATUS_UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"
RESTARTED_MESSAGE = "devcluster's kubelet restarted and stopped this container"
FIRST_RETRY_SECONDS = 0.5  # a start that could not be configured is retried after this, doubling
MAX_RETRY_SECONDS = 5.0


class PodLifecycle(IntEnum):
    """Where a pod is on this node. It only moves forward, so later stages compare greater."""

    NEW = 0  # nothing set up yet
    SANDBOXED = 1  # its IP, folders and hosts file are there; its volumes are not mounted yet
    ACTIVE = 2  # volumes mounted: containers start and restart
    STOPPING = 3  # deleted, past its deadline or gone from the API: nothing starts any more
    TERMINAL = 4  # every container ended for good, the final phase is set and the IP released
    DELETED = 5  # the final DELETE (grace 0) was sent

    @property
    def sandbox_ready(self) -> bool:
        """PodReadyToStartContainers. A stopping pod still has its sandbox: it only writes a status before it
        ends while processes run, and processes only run in a sandbox."""
        return PodLifecycle.SANDBOXED <= self <= PodLifecycle.STOPPING


class SyncStep(StrEnum):
    FORGET = "forget"  # gone from the API: stop the processes at once, then the worker ends
    DELETE = "delete"  # deletionTimestamp: stop with the deletion's grace, final status, final DELETE
    WAIT = "wait"  # terminal or deleted already: nothing to do until the API removes the pod
    DEADLINE = "deadline"  # activeDeadlineSeconds ran out (or the stop it started goes on): stop, then fail
    PROGRESS = "progress"  # set up, start what is due, write the status


def sync_step(lifecycle: PodLifecycle, removed: bool, deleting: bool, deadline_passed: bool) -> SyncStep:
    if removed:
        return SyncStep.FORGET
    if deleting:
        return SyncStep.WAIT if lifecycle is PodLifecycle.DELETED else SyncStep.DELETE
    if lifecycle >= PodLifecycle.TERMINAL:
        return SyncStep.WAIT
    # Deletion and removal return above, so a stopping pod here is one whose deadline passed earlier.
    if lifecycle is PodLifecycle.STOPPING or deadline_passed:
        return SyncStep.DEADLINE
    return SyncStep.PROGRESS


def next_wake(
    lifecycle: PodLifecycle, containers: Iterable[Container], status_retry_at: float | None,
    volumes_refresh_at: float, deadline: float | None,
) -> float | None:
    """The monotonic time the worker must sync next without being woken; None: only when woken."""
    moments = [status_retry_at]
    # Restarts, retries, volume refreshes and the deadline only matter while containers may still start.
    if lifecycle < PodLifecycle.STOPPING:
        moments.append(deadline)
        for container in containers:
            moments += [container.restart_at, container.retry_at]
        if lifecycle.sandbox_ready:
            moments.append(volumes_refresh_at)
    present = [moment for moment in moments if moment is not None]
    return min(present) if present else None


def containers_to_start(policy: str, containers: Sequence[Container]) -> list[Container]:
    """The containers a sync starts (each still waits out its back-off): the first unfinished init container
    alone, as init containers run one at a time in order; once they all succeeded, every regular container
    that is not running and not ended for good."""
    for container in containers:
        if not container.is_init:
            continue
        state = container.record.state
        if isinstance(state, Terminated) and state.exit_code == 0:
            continue
        if container.process is None and not (isinstance(state, Terminated) and policy == "Never"):
            return [container]
        return []
    due = []
    for container in containers:
        state = container.record.state
        ended_for_good = isinstance(state, Terminated) and not container.restarts(policy, state.exit_code)
        if not container.is_init and container.process is None and not ended_for_good:
            due.append(container)
    return due


def records(containers: Iterable[Container], init: bool) -> list[ContainerRecord]:
    return [container.record for container in containers if container.is_init == init]


def pod_ended(spec: Mapping[str, Any], containers: Sequence[Container]) -> bool:
    """No process runs and, by restartPolicy, none will again: the pod is Succeeded or Failed."""
    if any(container.process is not None for container in containers):
        return False
    phase = pod_phase(spec, records(containers, True), records(containers, False), pod_is_terminal=False)
    return phase in ("Succeeded", "Failed")


class LogLookupError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ProbeVerdict(StrEnum):
    NOTHING = "nothing"
    START_PROBES = "start-probes"  # the startup probe succeeded: readiness and liveness begin
    RESTART = "restart"  # liveness failed, or the startup probe ran out of tries


@dataclass
class Container:
    """One container of the pod: its status record, its restart timing and the process of its current instance."""

    spec: dict[str, Any]
    is_init: bool
    record: ContainerRecord
    has_run: bool = False
    process: ContainerProcess | None = None
    backoff: CrashBackoff = field(default_factory=CrashBackoff)
    restart_at: float | None = None  # monotonic time the back-off ends
    retry_at: float | None = None  # monotonic time to retry a start that could not be configured
    retry_delay: float = FIRST_RETRY_SECONDS
    probe_stop: threading.Event | None = None
    probe_target: ProbeTarget | None = None
    startup_done: bool = False
    readiness_ok: bool = False
    stop_deadline: float | None = None  # set while a stop of the current process is under way
    term_file: Path | None = None
    start_error_file: Path | None = None

    @classmethod
    def of(cls, spec: dict[str, Any], is_init: bool, pod_has_init_containers: bool) -> Container:
        waiting = Waiting("PodInitializing" if pod_has_init_containers else "ContainerCreating")
        return cls(spec, is_init, ContainerRecord(name=spec["name"], image=spec.get("image", ""), state=waiting))

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def instance(self) -> int:
        """The number of the next instance, which names its log file: restartCount once it runs."""
        return self.record.restart_count + (1 if self.has_run else 0)

    def restarts(self, policy: str, exit_code: int) -> bool:
        """Whether an instance that exited with `exit_code` is followed by another under the restartPolicy."""
        if self.is_init:
            return exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    # --- starting -------------------------------------------------------------------------------------

    def start_due(self, clock: float) -> bool:
        """Neither a back-off nor a retry delay is running."""
        return not ((self.restart_at and clock < self.restart_at) or (self.retry_at and clock < self.retry_at))

    def image_missing(self, message: str) -> bool:
        """Waits in ErrImagePull; returns whether that is news (worth an event)."""
        news = not (isinstance(self.record.state, Waiting) and self.record.state.reason == "ErrImagePull")
        self.record.state = Waiting("ErrImagePull", message)
        return news

    def start_failed(self, reason: str, message: str, clock: float) -> bool:
        """Waits in `reason` and schedules a retry; returns whether that is news (worth an event)."""
        record = self.record
        previous = self._previous_instance()
        news = record.state != Waiting(reason, message)
        record.state = Waiting(reason, message)
        if self.has_run:
            record.last_state = previous
        self.retry_at = clock + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, MAX_RETRY_SECONDS)
        return news

    def started(self, process: ContainerProcess) -> None:
        record = self.record
        if self.has_run:
            record.restart_count += 1
            record.last_state = self._previous_instance()
        self.has_run = True
        self.process = process
        self.restart_at = self.retry_at = None
        self.retry_delay = FIRST_RETRY_SECONDS
        self.stop_deadline = None
        record.state = Running(process.started_at)
        record.container_id = process.container_id
        record.ready = record.started = False
        self.startup_done = "startupProbe" not in self.spec
        self.readiness_ok = False

    def first_probes(self) -> tuple[str, ...]:
        """The probes that run from the start: the startup probe holds the others back until it succeeds."""
        return ("readiness", "liveness") if self.startup_done else ("startup",)

    def _previous_instance(self) -> Terminated | None:
        state = self.record.state
        return state if isinstance(state, Terminated) else self.record.last_state

    # --- ending ---------------------------------------------------------------------------------------

    def detach(self) -> None:
        """Its process ended: no instance runs, no stop is under way."""
        self.process = None
        self.stop_deadline = None

    def ended(self, terminated: Terminated) -> None:
        self.record.state = terminated
        self.record.ready = self.record.started = False

    def back_off(self, ran_seconds: float, clock: float, pod_label: str) -> float:
        """Schedules the restart of an instance that ended; returns the delay. A delay waits in CrashLoopBackOff
        with the ended instance as lastState; the first restart after a long run is immediate."""
        ended = self.record.state
        assert isinstance(ended, Terminated), "back_off follows ended()"
        delay = self.backoff.next_delay(ran_seconds)
        self.restart_at = clock + delay
        if delay > 0:
            self.record.last_state = ended
            self.record.state = Waiting("CrashLoopBackOff", f"back-off {go_duration(delay)} restarting failed "
                                                            f"container={self.name} pod={pod_label}")
        return delay

    def mark_unknown(self, moment: datetime) -> None:
        """TerminatePod: a container without a terminal state gets one (an init container that never ran keeps
        waiting)."""
        record = self.record
        if isinstance(record.state, Terminated) or (self.is_init and not self.has_run):
            return
        record.state = Terminated(exit_code=137, reason="ContainerStatusUnknown", finished_at=moment,
                                  container_id="", message=STATUS_UNKNOWN_MESSAGE)
        record.ready = record.started = False

    def restore(self, saved: Mapping[str, Any], moment: datetime) -> None:
        """Continues from the containerStatus a previous kubelet wrote; its process was killed when this kubelet
        started, so a running state ends as an Error."""
        record = record_from_api(saved)
        if isinstance(record.state, Running):
            record.state = Terminated(exit_code=137, reason="Error", finished_at=moment,
                                      container_id=record.container_id, started_at=record.state.started_at,
                                      message=RESTARTED_MESSAGE)
        self.record = record
        self.has_run = bool(record.restart_count or record.last_state or isinstance(record.state, Terminated))

    # --- probes ---------------------------------------------------------------------------------------

    def probed(self, kind: str, ok: bool) -> ProbeVerdict:
        if kind == "readiness":
            self.readiness_ok = ok
        elif kind == "startup" and ok:
            self.startup_done = True
            return ProbeVerdict.START_PROBES
        elif not ok:
            return ProbeVerdict.RESTART
        return ProbeVerdict.NOTHING

    def probe_grace(self, kind: str) -> float | None:
        """The probe's own terminationGracePeriodSeconds, which overrides the pod's for its restarts."""
        grace = (self.spec.get(f"{kind}Probe") or {}).get("terminationGracePeriodSeconds")
        return float(grace) if grace is not None else None

    def report_probes(self) -> None:
        """Copies what the probes found into the status record: started after the startup probe, ready after
        readiness (at once without a readiness probe)."""
        if self.process is None:
            return
        self.record.started = self.startup_done
        ready = self.readiness_ok if "readinessProbe" in self.spec else True
        self.record.ready = self.startup_done and ready

    # --- logs -----------------------------------------------------------------------------------------

    def log_instance(self, previous: bool, pod_name: str) -> int:
        """The instance whose log `kubectl logs` reads, as validateContainerLogStatus decides it."""
        record, state = self.record, self.record.state
        # Instance n logs to n.log. While a container waits (back-off, config error), restartCount is still the
        # number of its last instance, which is also its lastState; once it runs again lastState is one before.
        if previous:
            if record.last_state is None:
                raise LogLookupError(400, f'previous terminated container "{self.name}" in pod "{pod_name}" '
                                          "not found")
            return record.restart_count if isinstance(state, Waiting) else record.restart_count - 1
        if self.process is not None or isinstance(state, Terminated) or record.last_state is not None:
            return record.restart_count
        reason = state.reason if isinstance(state, Waiting) else ""
        if reason == "ErrImagePull":
            reason = "image can't be pulled"
        raise LogLookupError(400, f'container "{self.name}" in pod "{pod_name}" is waiting to start: {reason}')
