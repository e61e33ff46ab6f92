"""One thread per pod: the pod's state machine, as the kubelet's pod workers and syncPod.

Everything that happens to a pod (an update from the watch, a container exit, a probe result, a timer) marks
the worker dirty and wakes it; `sync` then looks at the whole pod and does what is due: set up the sandbox
(IP, folders) and volumes, run init containers in order, start or restart containers with back-off, stop
containers (liveness, deletion, deadline), and write the status when it changed. Exits are reported by a
thread blocked in waitid, so a status reaches the API within milliseconds of a process ending.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devcluster.kubelet.api import STRATEGIC_MERGE_PATCH, ApiError, KubeApi, path_of
from devcluster.kubelet.backoff import CrashBackoff, go_duration
from devcluster.kubelet.config import Image, KubeletConfig
from devcluster.kubelet.environment import (
    ContainerConfigError,
    container_argv,
    process_env,
    resolve_env,
)
from devcluster.kubelet.events import EventRecorder
from devcluster.kubelet.ipam import PodAddresses
from devcluster.kubelet.logs import termination_message
from devcluster.kubelet.node import hostname as node_hostname
from devcluster.kubelet.objects import ApiObjects
from devcluster.kubelet.probes import ProbeTarget, ProbeWorker, run_handler
from devcluster.kubelet.runtime import ContainerProcess, LaunchSpec
from devcluster.kubelet.status import (
    ContainerRecord,
    PodView,
    Running,
    Terminated,
    Waiting,
    build_pod_status,
    now,
    parse_time,
    pod_phase,
    record_from_api,
    terminated_reason,
)
from devcluster.kubelet.volumes import PodVolumes, VolumeError, container_mounts

log = logging.getLogger("devcluster.kubelet")

HOST_IP = "127.0.0.1"
MINIMUM_GRACE_SECONDS = 2.0  # the kubelet's minimumGracePeriodInSeconds
DEFAULT_GRACE_SECONDS = 30.0
STATUS_RETRY_SECONDS = 1.0
START_ERROR_EXIT_CODE = 128  # container_init's exit code when the command could not start
STATUS_UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"
RESTARTED_MESSAGE = "devcluster's kubelet restarted and stopped this container"


@dataclass
class PodContext:
    """What all pod workers share."""

    api: KubeApi
    config: KubeletConfig
    events: EventRecorder
    addresses: PodAddresses
    objects: ApiObjects
    node_allocatable: dict[str, str]
    service_env: dict[str, str]
    stopping: threading.Event
    forget: Callable[[str], None]  # called with the pod uid when its worker ends


def image_id(image: Image) -> str:
    entry = {"workingDir": image.working_dir, "path": image.path, "env": image.env, "command": image.command}
    return "sha256:" + hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def format_pod(pod: dict[str, Any]) -> str:
    """format.Pod of the kubelet: name_namespace(uid)."""
    metadata = pod["metadata"]
    return f"{metadata['name']}_{metadata['namespace']}({metadata['uid']})"


class LogLookupError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ContainerSlot:
    """One container of the pod: its status record and the process of its current instance."""

    spec: dict[str, Any]
    is_init: bool
    record: ContainerRecord
    has_run: bool = False
    process: ContainerProcess | None = None
    backoff: CrashBackoff = field(default_factory=CrashBackoff)
    restart_at: float | None = None  # monotonic time the back-off ends
    retry_at: float | None = None  # monotonic time to retry a start that could not be configured
    retry_delay: float = 0.5
    probe_stop: threading.Event | None = None
    probe_target: ProbeTarget | None = None
    startup_done: bool = False
    readiness_ok: bool = False
    stop_deadline: float | None = None  # set while a stop of the current process is under way
    term_file: Path | None = None
    start_error_file: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def instance(self) -> int:
        """The number of the next instance, which names its log file: restartCount once it runs."""
        return self.record.restart_count + (1 if self.has_run else 0)


class PodWorker(threading.Thread):
    def __init__(self, context: PodContext, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        super().__init__(name=f"pod-{metadata['namespace']}/{metadata['name']}", daemon=True)
        self.ctx = context
        self.pod = pod
        self.uid: str = metadata["uid"]
        self.key = f"{metadata['namespace']}/{metadata['name']}"
        self.condition = threading.Condition()
        self.dirty = True
        self.removed = False
        self.exits: list[tuple[ContainerSlot, ContainerProcess]] = []
        self.probe_results: list[tuple[ContainerSlot, ContainerProcess, str, bool, str]] = []

        config = context.config
        self.pod_dir = config.pods_dir / self.uid
        self.log_dir = config.logs_dir / f"{metadata['namespace']}_{metadata['name']}_{self.uid}"
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.volumes = PodVolumes(self.pod_dir, config.volume_claim_root)
        self.volumes_ready = False
        self.volume_error = ""
        self.sandbox_ready = False
        self.pod_ip: str | None = None
        self.start_time: datetime | None = None
        self.stopping_all = False  # deletion, deadline or removal: no more starts
        self.terminal = False
        self.final_delete_sent = False
        self.reason = ""
        self.message = ""
        self.last_written: dict[str, Any] = {}
        self.status_retry_at: float | None = None
        self.slots = [ContainerSlot(c, True, self._new_record(c)) for c in pod["spec"].get("initContainers") or []]
        self.slots += [ContainerSlot(c, False, self._new_record(c)) for c in pod["spec"].get("containers") or []]
        self._restore(pod.get("status") or {})

    # --- what other threads call -------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        with self.condition:
            self.pod = pod
            self._wake()

    def remove(self) -> None:
        """The pod is gone from the API."""
        with self.condition:
            self.removed = True
            self._wake()

    def processes(self) -> list[ContainerProcess]:
        return [slot.process for slot in self.slots if slot.process is not None]

    def log_file(self, container: str, previous: bool) -> tuple[Path, Callable[[], bool]]:
        """The log of a container instance and a test of whether it is complete, as validateContainerLogStatus."""
        pod_name = self.pod["metadata"]["name"]
        slot = next((s for s in self.slots if s.name == container), None)
        if slot is None:
            raise LogLookupError(404, f'container "{container}" not found in pod "{pod_name}"')
        record, process, state = slot.record, slot.process, slot.record.state
        # Instance n logs to n.log. While a container waits (back-off, config error), restartCount is still the
        # number of its last instance, which is also its lastState; once it runs again lastState is one before.
        if previous:
            if record.last_state is None:
                raise LogLookupError(400, f'previous terminated container "{container}" in pod "{pod_name}" not found')
            index = record.restart_count if isinstance(state, Waiting) else record.restart_count - 1
            return self.log_dir / container / f"{index}.log", lambda: True
        if process is not None:
            return self.log_dir / container / f"{record.restart_count}.log", process.logs_done.is_set
        if isinstance(state, Terminated) or record.last_state is not None:
            return self.log_dir / container / f"{record.restart_count}.log", lambda: True
        reason = state.reason if isinstance(state, Waiting) else ""
        if reason == "ErrImagePull":
            reason = "image can't be pulled"
        raise LogLookupError(400, f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}')

    def _wake(self) -> None:
        self.dirty = True
        self.condition.notify()

    def _post_exit(self, slot: ContainerSlot, process: ContainerProcess) -> None:
        with self.condition:
            self.exits.append((slot, process))
            self._wake()

    def _post_probe(self, slot: ContainerSlot, process: ContainerProcess, kind: str, ok: bool, detail: str) -> None:
        with self.condition:
            self.probe_results.append((slot, process, kind, ok, detail))
            self._wake()

    # --- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            with self.condition:
                while not self.dirty:
                    wake_at = self._next_wake()
                    timeout = None if wake_at is None else wake_at - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        break
                    self.condition.wait(timeout)
                self.dirty = False
                pod = self.pod
                removed = self.removed
                exits, self.exits = self.exits, []
                probe_results, self.probe_results = self.probe_results, []
            if self.ctx.stopping.is_set():
                return  # the kubelet stops every process itself and writes nothing more
            try:
                if self._sync(pod, removed, exits, probe_results):
                    self.ctx.forget(self.uid)
                    return
            except Exception:
                log.exception("pod %s: sync failed; trying again in 1s", self.key)
                self.status_retry_at = time.monotonic() + STATUS_RETRY_SECONDS

    def _next_wake(self) -> float | None:
        moments = [self.status_retry_at]
        for slot in self.slots:
            moments += [slot.restart_at, slot.retry_at]
        if self.sandbox_ready and not self.terminal:
            moments.append(self.volumes.refresh_after)
        deadline = self._active_deadline()
        if deadline is not None and not self.stopping_all:
            moments.append(deadline)
        present = [m for m in moments if m is not None]
        return min(present) if present else None

    def _sync(
        self,
        pod: dict[str, Any],
        removed: bool,
        exits: list[tuple[ContainerSlot, ContainerProcess]],
        probe_results: list[tuple[ContainerSlot, ContainerProcess, str, bool, str]],
    ) -> bool:
        """Does what is due; returns True when the worker is done (the pod is gone and so are its processes)."""
        self.status_retry_at = None
        for slot, process in exits:
            self._handle_exit(pod, slot, process)
        for slot, process, kind, ok, detail in probe_results:
            self._handle_probe(pod, slot, process, kind, ok, detail)

        if removed:
            self.stopping_all = True
            for slot in self.slots:
                self._stop(pod, slot, MINIMUM_GRACE_SECONDS, run_pre_stop=False)
            if self.processes():
                return False
            self._release()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            log.info("pod %s is gone", self.key)
            return True

        if pod["metadata"].get("deletionTimestamp"):
            if not self.final_delete_sent:
                self._terminate(pod, self._deletion_grace(pod), "")
                if not self.processes():
                    self._finish(pod)
                    self._final_delete(pod)
            return False

        if self.terminal:
            return False
        deadline = self._active_deadline()
        if self.stopping_all or (deadline is not None and time.monotonic() >= deadline):
            self._terminate(pod, self._spec_grace(pod), "DeadlineExceeded")
            if not self.processes():
                self._finish(pod)
            else:
                self._write_status(pod)
            return False

        self._progress(pod)
        completed = not self.processes() and pod_phase(
            pod["spec"], [s.record for s in self.slots if s.is_init], [s.record for s in self.slots if not s.is_init],
            pod_is_terminal=False) in ("Succeeded", "Failed")
        if completed:
            self.terminal = True
            self._release()
        self._write_status(pod)
        if completed:
            log.info("pod %s %s", self.key, self.last_written.get("phase"))
        return False

    # --- starting --------------------------------------------------------------------------------

    def _progress(self, pod: dict[str, Any]) -> None:
        if not self._ensure_sandbox(pod) or not self._ensure_volumes(pod):
            return
        policy = pod["spec"].get("restartPolicy") or "Always"
        for slot in self.slots:
            if not slot.is_init:
                continue
            state = slot.record.state
            if isinstance(state, Terminated) and state.exit_code == 0:
                continue
            if slot.process is None and not (isinstance(state, Terminated) and policy == "Never"):
                self._start(pod, slot)
            return  # one init container at a time, in order
        for slot in self.slots:
            if slot.is_init or slot.process is not None:
                continue
            state = slot.record.state
            if isinstance(state, Terminated) and not self._should_restart(pod, slot, state.exit_code):
                continue
            self._start(pod, slot)

    def _ensure_sandbox(self, pod: dict[str, Any]) -> bool:
        if self.sandbox_ready:
            return True
        if self.start_time is None:
            self.start_time = now()
        if self.host_network:
            self.pod_ip = HOST_IP
        else:
            self.pod_ip = self.ctx.addresses.allocate(self.uid, self.pod_ip)
        (self.pod_dir / "containers").mkdir(parents=True, exist_ok=True)
        if not self.host_network:
            (self.pod_dir / "etc-hosts").write_text(self._hosts_file(pod))
        self.sandbox_ready = True
        return True

    def _hosts_file(self, pod: dict[str, Any]) -> str:
        spec = pod["spec"]
        name = spec.get("hostname") or pod["metadata"]["name"]
        lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix",
                 "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters", f"{self.pod_ip}\t{name}"]
        aliases = spec.get("hostAliases") or []
        if aliases:
            lines.append("\n# Entries added by HostAliases.")
            lines += [f"{alias['ip']}\t" + "\t".join(alias.get("hostnames") or []) for alias in aliases]
        return "\n".join(lines) + "\n"

    def _ensure_volumes(self, pod: dict[str, Any]) -> bool:
        if self.volumes_ready and not self.volumes.due():
            return True
        try:
            self.volumes.prepare(pod, self.ctx.objects, self.pod_ip or HOST_IP, HOST_IP, self.ctx.node_allocatable)
        except (VolumeError, ApiError, OSError, ContainerConfigError) as error:
            if self.volumes_ready:  # a refresh failed: keep the files the containers already have
                log.warning("pod %s: refreshing volumes failed: %s", self.key, error)
                return True
            message = str(error)
            if message != self.volume_error:
                log.warning("pod %s: %s", self.key, message)
                self.ctx.events.pod_event(pod, "Warning", "FailedMount", message)
            self.volume_error = message
            self.volumes.refresh_after = time.monotonic() + 1.0
            return False
        self.volumes_ready = True
        self.volume_error = ""
        return True

    def _start(self, pod: dict[str, Any], slot: ContainerSlot) -> None:
        moment = time.monotonic()
        if (slot.restart_at and moment < slot.restart_at) or (slot.retry_at and moment < slot.retry_at):
            return
        record = slot.record
        previous = record.state if isinstance(record.state, Terminated) else record.last_state
        image = self.ctx.config.images.get(slot.spec.get("image", ""))
        if image is None:
            known = ", ".join(sorted(self.ctx.config.images))
            message = (f'image "{slot.spec.get("image")}" is not in devcluster\'s image map (known images: {known}); '
                       "add it to devcluster/images.yaml")
            if not (isinstance(record.state, Waiting) and record.state.reason == "ErrImagePull"):
                log.warning("pod %s: container %s: %s", self.key, slot.name, message)
                self.ctx.events.pod_event(pod, "Warning", "Failed", f"Failed to pull image: {message}", slot.name)
            record.state = Waiting("ErrImagePull", message)
            return
        record.image_id = image_id(image)
        try:
            process = self._launch(pod, slot, image)
        except (ContainerConfigError, VolumeError, ApiError, OSError, ValueError) as error:
            reason = "CreateContainerConfigError" if isinstance(error, ContainerConfigError | VolumeError) \
                else "CreateContainerError"
            message = str(error)
            if record.state != Waiting(reason, message):
                log.warning("pod %s: container %s: %s: %s", self.key, slot.name, reason, message)
                self.ctx.events.pod_event(pod, "Warning", "Failed", f"Error: {message}", slot.name)
            record.state = Waiting(reason, message)
            if slot.has_run:
                record.last_state = previous
            slot.retry_at = time.monotonic() + slot.retry_delay
            slot.retry_delay = min(slot.retry_delay * 2, 5.0)
            return
        if slot.has_run:
            record.restart_count += 1
            record.last_state = previous
        slot.has_run = True
        slot.process = process
        slot.restart_at = slot.retry_at = None
        slot.retry_delay = 0.5
        slot.stop_deadline = None
        record.state = Running(process.started_at)
        record.container_id = process.container_id
        record.ready = record.started = False
        slot.startup_done = "startupProbe" not in slot.spec
        slot.readiness_ok = False
        log.info("pod %s: container %s started (pid %d, restart %d)", self.key, slot.name, process.pid,
                 record.restart_count)
        for reason, message in (("Pulled", f'Container image "{record.image}" already present on machine'),
                                ("Created", f"Created container: {slot.name}"),
                                ("Started", f"Started container {slot.name}")):
            self.ctx.events.pod_event(pod, "Normal", reason, message, slot.name)
        slot.probe_stop = threading.Event()
        self._start_probes(slot, process, ("startup",) if not slot.startup_done else ("readiness", "liveness"))

    def _launch(self, pod: dict[str, Any], slot: ContainerSlot, image: Image) -> ContainerProcess:
        spec = slot.spec
        config = self.ctx.config
        pod_ip = self.pod_ip or HOST_IP
        kubernetes_env = resolve_env(pod, spec, self.ctx.objects, self.ctx.service_env, pod_ip, HOST_IP,
                                     self.ctx.node_allocatable)
        hostname = node_hostname() if self.host_network else (pod["spec"].get("hostname") or pod["metadata"]["name"])
        env = process_env(image, kubernetes_env, hostname)
        argv = container_argv(spec, image, kubernetes_env)
        working_dir = spec.get("workingDir") or image.working_dir
        mounts = container_mounts(spec, self.volumes, kubernetes_env)
        instance = slot.instance()
        container_dir = self.pod_dir / "containers" / slot.name
        container_dir.mkdir(parents=True, exist_ok=True)
        slot.term_file = container_dir / f"termination-log-{instance}"
        slot.term_file.write_bytes(b"")
        slot.start_error_file = container_dir / f"start-error-{instance}"
        slot.start_error_file.unlink(missing_ok=True)
        mounts.append({"source": str(slot.term_file),
                       "target": spec.get("terminationMessagePath") or "/dev/termination-log", "readOnly": False})
        if not self.host_network:
            mounts.append({"source": str(self.pod_dir / "etc-hosts"), "target": "/etc/hosts", "readOnly": False})
        mounts.sort(key=lambda m: len(Path(m["target"]).parts))
        launch = LaunchSpec(
            argv=argv, env=env, working_dir=working_dir, mounts=mounts,
            image_dirs=[image.working_dir, *image.path],
            hostname=None if self.host_network else hostname,
            log_path=self.log_dir / slot.name / f"{instance}.log",
            spec_file=container_dir / f"launch-{instance}.json",
            start_error_file=slot.start_error_file,
        )
        process = ContainerProcess(launch, config.processes_dir, lambda p: self._post_exit(slot, p))
        named_ports = {p["name"]: int(p["containerPort"]) for p in spec.get("ports") or [] if p.get("name")}
        slot.probe_target = ProbeTarget(pod_ip, process.pid, env, working_dir, named_ports)
        return process

    def _start_probes(self, slot: ContainerSlot, process: ContainerProcess, kinds: tuple[str, ...]) -> None:
        assert slot.probe_stop is not None and slot.probe_target is not None
        for kind in kinds:
            probe = slot.spec.get(f"{kind}Probe")
            if probe:
                ProbeWorker(kind, probe, slot.probe_target,
                            lambda k, ok, detail: self._post_probe(slot, process, k, ok, detail),
                            slot.probe_stop).start()

    # --- exits, probes, restarts -------------------------------------------------------------------

    def _handle_exit(self, pod: dict[str, Any], slot: ContainerSlot, process: ContainerProcess) -> None:
        if slot.process is not process:
            return
        if slot.probe_stop:
            slot.probe_stop.set()
        slot.process = None
        slot.stop_deadline = None
        spec = slot.spec
        error_file = slot.start_error_file
        if process.exit_code == START_ERROR_EXIT_CODE and error_file is not None and error_file.exists():
            reason, message = "StartError", error_file.read_text(errors="replace")
        else:
            reason = terminated_reason(process.exit_code)
            message = termination_message(spec.get("terminationMessagePolicy") or "File", process.exit_code,
                                          slot.term_file or Path("/nonexistent"), process.spec.log_path)
        terminated = Terminated(exit_code=process.exit_code, reason=reason, finished_at=process.finished_at,
                                container_id=process.container_id, started_at=process.started_at,
                                message=message, signal=process.signal)
        record = slot.record
        record.state = terminated
        record.ready = record.started = False
        log.info("pod %s: container %s (pid %d) exited with code %d%s", self.key, slot.name, process.pid,
                 process.exit_code, f" (signal {process.signal})" if process.signal else "")
        if self.stopping_all or not self._should_restart(pod, slot, process.exit_code):
            return
        ran = (process.finished_at - process.started_at).total_seconds()
        delay = slot.backoff.next_delay(ran)
        slot.restart_at = time.monotonic() + delay
        if delay > 0:
            record.last_state = terminated
            record.state = Waiting("CrashLoopBackOff", f"back-off {go_duration(delay)} restarting failed "
                                                       f"container={slot.name} pod={format_pod(pod)}")
            self.ctx.events.pod_event(pod, "Warning", "BackOff", f"Back-off restarting failed container "
                                                                  f"{slot.name} in pod {format_pod(pod)}", slot.name)

    def _should_restart(self, pod: dict[str, Any], slot: ContainerSlot, exit_code: int) -> bool:
        policy = pod["spec"].get("restartPolicy") or "Always"
        if slot.is_init:
            return exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    def _handle_probe(
        self, pod: dict[str, Any], slot: ContainerSlot, process: ContainerProcess, kind: str, ok: bool, detail: str
    ) -> None:
        if slot.process is not process or slot.stop_deadline is not None:
            return
        label = kind.capitalize()
        if not ok:
            log.info("pod %s: container %s: %s probe failed: %s", self.key, slot.name, kind, detail)
            self.ctx.events.pod_event(pod, "Warning", "Unhealthy", f"{label} probe failed: {detail}", slot.name)
        if kind == "readiness":
            slot.readiness_ok = ok
        elif kind == "startup" and ok:
            slot.startup_done = True
            self._start_probes(slot, process, ("readiness", "liveness"))
        elif not ok:  # liveness, or a startup probe out of tries: restart the container
            probe = slot.spec.get(f"{kind}Probe") or {}
            grace = probe.get("terminationGracePeriodSeconds")
            self.ctx.events.pod_event(pod, "Normal", "Killing", f"Container {slot.name} failed {kind} probe, will be "
                                                                "restarted", slot.name)
            self._stop(pod, slot, float(grace) if grace is not None else self._spec_grace(pod), run_pre_stop=True)

    # --- stopping --------------------------------------------------------------------------------

    def _terminate(self, pod: dict[str, Any], grace: float, reason: str) -> None:
        """Stops every container (once; a shorter grace period later shortens the wait)."""
        if not self.stopping_all:
            self.stopping_all = True
            if reason == "DeadlineExceeded":
                self.reason, self.message = reason, "Pod was active on the node longer than the specified deadline"
            for slot in self.slots:
                slot.restart_at = slot.retry_at = None
            if self.processes():
                log.info("pod %s: stopping its containers (grace %gs)", self.key, grace)
        for slot in self.slots:
            self._stop(pod, slot, grace, run_pre_stop=True)

    def _stop(self, pod: dict[str, Any], slot: ContainerSlot, grace: float, run_pre_stop: bool) -> None:
        process = slot.process
        if process is None:
            return
        deadline = time.monotonic() + max(grace, MINIMUM_GRACE_SECONDS)
        if slot.stop_deadline is not None:
            slot.stop_deadline = min(slot.stop_deadline, deadline)
            return
        slot.stop_deadline = deadline
        if slot.probe_stop:
            slot.probe_stop.set()
        self.ctx.events.pod_event(pod, "Normal", "Killing", f"Stopping container {slot.name}", slot.name)
        pre_stop = ((slot.spec.get("lifecycle") or {}).get("preStop")) if run_pre_stop else None
        threading.Thread(target=self._stop_process, args=(slot, process, pre_stop), name=f"stop-{process.pid}",
                         daemon=True).start()

    def _stop_process(self, slot: ContainerSlot, process: ContainerProcess, pre_stop: dict[str, Any] | None) -> None:
        """preStop, SIGTERM to the group, SIGKILL at the deadline (which may move earlier meanwhile)."""
        if pre_stop and slot.probe_target is not None and slot.stop_deadline is not None:
            run_handler(pre_stop, slot.probe_target, max(0.0, slot.stop_deadline - time.monotonic()))
        process.signal_group(signal.SIGTERM)
        while not process.exited.wait(0.05):
            deadline = slot.stop_deadline
            if deadline is None or time.monotonic() >= deadline:
                process.signal_group(signal.SIGKILL)
                process.exited.wait()
                return

    def _deletion_grace(self, pod: dict[str, Any]) -> float:
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        return float(grace) if grace is not None else self._spec_grace(pod)

    def _spec_grace(self, pod: dict[str, Any]) -> float:
        grace = pod["spec"].get("terminationGracePeriodSeconds")
        return float(grace) if grace is not None else DEFAULT_GRACE_SECONDS

    def _active_deadline(self) -> float | None:
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        if seconds is None or self.start_time is None:
            return None
        elapsed = (now() - self.start_time).total_seconds()
        return time.monotonic() + float(seconds) - elapsed

    def _finish(self, pod: dict[str, Any]) -> None:
        """TerminatePod of the status manager: every container gets a terminal state, the pod a terminal phase."""
        if not self.terminal:
            for slot in self.slots:
                record = slot.record
                if isinstance(record.state, Terminated) or (slot.is_init and not slot.has_run):
                    continue
                record.state = Terminated(exit_code=137, reason="ContainerStatusUnknown", finished_at=now(),
                                          container_id="", message=STATUS_UNKNOWN_MESSAGE)
                record.ready = record.started = False
            self.terminal = True
            self._release()
        self._write_status(pod)
        log.info("pod %s %s", self.key, self.last_written.get("phase"))

    def _final_delete(self, pod: dict[str, Any]) -> None:
        if self.status_retry_at is not None:
            return  # the final status is not written yet; the retry deletes
        metadata = pod["metadata"]
        try:
            self.ctx.api.request("DELETE", path_of("api", "v1", "namespaces", metadata["namespace"], "pods",
                                                   metadata["name"]),
                                 body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                raise
        self.final_delete_sent = True
        log.info("pod %s: deleted", self.key)

    def _release(self) -> None:
        """Frees what a running pod holds (its IP); the pod folder goes when the pod is deleted."""
        for slot in self.slots:
            if slot.probe_stop:
                slot.probe_stop.set()
        if not self.host_network:
            self.ctx.addresses.release(self.uid)

    # --- status ----------------------------------------------------------------------------------

    def _write_status(self, pod: dict[str, Any]) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.record.started = slot.startup_done
                ready = slot.readiness_ok if "readinessProbe" in slot.spec else True
                slot.record.ready = slot.startup_done and ready
        view = PodView(
            pod=pod, init_records=[s.record for s in self.slots if s.is_init],
            records=[s.record for s in self.slots if not s.is_init], host_ip=HOST_IP, pod_ip=self.pod_ip,
            start_time=self.start_time, sandbox_ready=self.sandbox_ready and not self.terminal,
            pod_is_terminal=self.terminal, reason=self.reason, message=self.message,
        )
        status = build_pod_status(view, self.last_written, now())
        if status == self.last_written:
            return
        metadata = pod["metadata"]
        try:
            self.ctx.api.request(
                "PATCH", path_of("api", "v1", "namespaces", metadata["namespace"], "pods", metadata["name"], "status"),
                body={"metadata": {"uid": self.uid}, "status": status}, content_type=STRATEGIC_MERGE_PATCH)
        except ApiError as error:
            if error.status in (404, 409, 422):  # gone, or replaced by a pod of the same name
                log.info("pod %s: status not written: %s", self.key, error)
                return
            log.warning("pod %s: writing status failed: %s", self.key, error)
            self.status_retry_at = time.monotonic() + STATUS_RETRY_SECONDS
            return
        self.last_written = status

    def _restore(self, status: dict[str, Any]) -> None:
        """Continues from the status a previous kubelet wrote: restart counts, start time, IP, terminal phase."""
        if not status.get("containerStatuses") and not status.get("initContainerStatuses"):
            return
        by_name = {s["name"]: s for s in [*(status.get("initContainerStatuses") or []),
                                           *(status.get("containerStatuses") or [])]}
        for slot in self.slots:
            saved = by_name.get(slot.name)
            if saved is None:
                continue
            record = record_from_api(saved)
            if isinstance(record.state, Running):  # its process was killed when this kubelet started
                record.state = Terminated(exit_code=137, reason="Error", finished_at=now(),
                                          container_id=record.container_id, started_at=record.state.started_at,
                                          message=RESTARTED_MESSAGE)
            slot.record = record
            slot.has_run = bool(record.restart_count or record.last_state or isinstance(record.state, Terminated))
        self.start_time = self.start_time or parse_time(status.get("startTime"))
        self.pod_ip = status.get("podIP") if status.get("podIP") != HOST_IP else None
        self.last_written = {k: v for k, v in status.items() if k != "qosClass"}
        self.terminal = status.get("phase") in ("Succeeded", "Failed")

    def _new_record(self, spec: dict[str, Any]) -> ContainerRecord:
        initializing = bool(self.pod["spec"].get("initContainers"))
        return ContainerRecord(name=spec["name"], image=spec.get("image", ""),
                               state=Waiting("PodInitializing" if initializing else "ContainerCreating"))

