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
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from devcluster.kubelet import oci
from devcluster.kubelet.api import STRATEGIC_MERGE_PATCH, ApiError, KubeApi, path_of
from devcluster.kubelet.config import Image, KubeletConfig
from devcluster.kubelet.environment import (
    ContainerConfigError,
    container_argv,
    process_env,
    resolve_env,
)
from devcluster.kubelet.events import EventRecorder
from devcluster.kubelet.ipam import PodAddresses
from devcluster.kubelet.lifecycle import (
    Container,
    LogLookupError,
    PodLifecycle,
    ProbeVerdict,
    SyncStep,
    containers_to_start,
    next_wake,
    pod_ended,
    records,
    sync_step,
)
from devcluster.kubelet.logs import termination_message
from devcluster.kubelet.node import hostname as node_hostname
from devcluster.kubelet.objects import ApiObjects
from devcluster.kubelet.probes import ProbeTarget, ProbeWorker, run_handler
from devcluster.kubelet.runtime import ContainerProcess, LaunchSpec
from devcluster.kubelet.status import PodView, Terminated, build_pod_status, now, parse_time, terminated_reason
from devcluster.kubelet.volumes import PodVolumes, VolumeError, container_mounts

log = logging.getLogger("devcluster.kubelet")

HOST_IP = "127.0.0.1"
MINIMUM_GRACE_SECONDS = 2.0  # the kubelet's minimumGracePeriodInSeconds
DEFAULT_GRACE_SECONDS = 30.0
STATUS_RETRY_SECONDS = 1.0
START_ERROR_EXIT_CODE = 128  # container_init's exit code when the command could not start


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
    """A process image's id is its entry; an OCI image's, the build its folder names now."""
    entry = {"oci": str(Path(image.oci).resolve())} if image.oci else {
        "workingDir": image.working_dir, "path": image.path, "env": image.env, "command": image.command}
    return "sha256:" + hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def format_pod(pod: dict[str, Any]) -> str:
    """format.Pod of the kubelet: name_namespace(uid)."""
    metadata = pod["metadata"]
    return f"{metadata['name']}_{metadata['namespace']}({metadata['uid']})"


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
        self.exits: list[tuple[Container, ContainerProcess]] = []
        self.probe_results: list[tuple[Container, ContainerProcess, str, bool, str]] = []

        config = context.config
        self.pod_dir = config.pods_dir / self.uid
        self.log_dir = config.logs_dir / f"{metadata['namespace']}_{metadata['name']}_{self.uid}"
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.volumes = PodVolumes(self.pod_dir, config.volume_claim_root)
        self.volume_error = ""
        self.lifecycle = PodLifecycle.NEW
        self.pod_ip: str | None = None
        self.start_time: datetime | None = None
        self.reason = ""
        self.message = ""
        self.last_written: dict[str, Any] = {}
        self.status_retry_at: float | None = None
        init_specs = pod["spec"].get("initContainers") or []
        self.slots = [Container.of(c, True, bool(init_specs)) for c in init_specs]
        self.slots += [Container.of(c, False, bool(init_specs)) for c in pod["spec"].get("containers") or []]
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
        index = slot.log_instance(previous, pod_name)
        process = slot.process
        complete = process.logs_done.is_set if process is not None and not previous else lambda: True
        return self.log_dir / container / f"{index}.log", complete

    def _wake(self) -> None:
        self.dirty = True
        self.condition.notify()

    def _post_exit(self, slot: Container, process: ContainerProcess) -> None:
        with self.condition:
            self.exits.append((slot, process))
            self._wake()

    def _post_probe(self, slot: Container, process: ContainerProcess, kind: str, ok: bool, detail: str) -> None:
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
        return next_wake(self.lifecycle, self.slots, self.status_retry_at, self.volumes.refresh_after,
                         self._active_deadline())

    def _sync(
        self,
        pod: dict[str, Any],
        removed: bool,
        exits: list[tuple[Container, ContainerProcess]],
        probe_results: list[tuple[Container, ContainerProcess, str, bool, str]],
    ) -> bool:
        """Does what is due; returns True when the worker is done (the pod is gone and so are its processes)."""
        self.status_retry_at = None
        for slot, process in exits:
            self._handle_exit(pod, slot, process)
        for slot, process, kind, ok, detail in probe_results:
            self._handle_probe(pod, slot, process, kind, ok, detail)

        deadline = self._active_deadline()
        step = sync_step(self.lifecycle, removed, bool(pod["metadata"].get("deletionTimestamp")),
                         deadline is not None and time.monotonic() >= deadline)
        if step is SyncStep.FORGET:
            self.lifecycle = max(self.lifecycle, PodLifecycle.STOPPING)
            for slot in self.slots:
                self._stop(pod, slot, MINIMUM_GRACE_SECONDS, run_pre_stop=False)
            if self.processes():
                return False
            self._release()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            log.info("pod %s is gone", self.key)
            return True
        if step is SyncStep.DELETE:
            self._terminate(pod, self._deletion_grace(pod), "")
            if not self.processes():
                self._finish(pod)
                self._final_delete(pod)
        elif step is SyncStep.DEADLINE:
            self._terminate(pod, self._spec_grace(pod), "DeadlineExceeded")
            if not self.processes():
                self._finish(pod)
            else:
                self._write_status(pod)
        elif step is SyncStep.PROGRESS:
            self._progress(pod)
            completed = pod_ended(pod["spec"], self.slots)
            if completed:
                self.lifecycle = PodLifecycle.TERMINAL
                self._release()
            self._write_status(pod)
            if completed:
                log.info("pod %s %s", self.key, self.last_written.get("phase"))
        return False

    # --- starting --------------------------------------------------------------------------------

    def _progress(self, pod: dict[str, Any]) -> None:
        if self.lifecycle is PodLifecycle.NEW:
            self._set_up_sandbox(pod)
        if not self._ensure_volumes(pod):
            return
        for slot in containers_to_start(self._restart_policy(pod), self.slots):
            self._start(pod, slot)

    def _set_up_sandbox(self, pod: dict[str, Any]) -> None:
        if self.start_time is None:
            self.start_time = now()
        if self.host_network:
            self.pod_ip = HOST_IP
        else:
            self.pod_ip = self.ctx.addresses.allocate(self.uid, self.pod_ip)
        (self.pod_dir / "containers").mkdir(parents=True, exist_ok=True)
        if not self.host_network:
            (self.pod_dir / "etc-hosts").write_text(self._hosts_file(pod))
        self.lifecycle = PodLifecycle.SANDBOXED

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
        if self.lifecycle is PodLifecycle.ACTIVE and not self.volumes.due():
            return True
        try:
            self.volumes.prepare(pod, self.ctx.objects, self.pod_ip or HOST_IP, HOST_IP, self.ctx.node_allocatable)
        except (VolumeError, ApiError, OSError, ContainerConfigError) as error:
            if self.lifecycle is PodLifecycle.ACTIVE:  # a refresh failed: keep the files the containers already have
                log.warning("pod %s: refreshing volumes failed: %s", self.key, error)
                return True
            message = str(error)
            if message != self.volume_error:
                log.warning("pod %s: %s", self.key, message)
                self.ctx.events.pod_event(pod, "Warning", "FailedMount", message)
            self.volume_error = message
            self.volumes.refresh_after = time.monotonic() + 1.0
            return False
        self.lifecycle = PodLifecycle.ACTIVE
        self.volume_error = ""
        return True

    def _start(self, pod: dict[str, Any], slot: Container) -> None:
        if not slot.start_due(time.monotonic()):
            return
        record = slot.record
        image = self.ctx.config.images.get(slot.spec.get("image", ""))
        if image is None:
            known = ", ".join(sorted(self.ctx.config.images))
            message = (f'image "{slot.spec.get("image")}" is not in devcluster\'s image map (known images: {known}); '
                       "add it to devcluster/images.yaml")
            if slot.image_missing(message):
                log.warning("pod %s: container %s: %s", self.key, slot.name, message)
                self.ctx.events.pod_event(pod, "Warning", "Failed", f"Failed to pull image: {message}", slot.name)
            return
        record.image_id = image_id(image)
        try:
            process = self._launch(pod, slot, image)
        except (ContainerConfigError, VolumeError, ApiError, OSError, ValueError) as error:
            reason = "CreateContainerConfigError" if isinstance(error, ContainerConfigError | VolumeError) \
                else "CreateContainerError"
            message = str(error)
            if slot.start_failed(reason, message, time.monotonic()):
                log.warning("pod %s: container %s: %s: %s", self.key, slot.name, reason, message)
                self.ctx.events.pod_event(pod, "Warning", "Failed", f"Error: {message}", slot.name)
            return
        slot.started(process)
        log.info("pod %s: container %s started (pid %d, restart %d)", self.key, slot.name, process.pid,
                 record.restart_count)
        for reason, message in (("Pulled", f'Container image "{record.image}" already present on machine'),
                                ("Created", f"Created container: {slot.name}"),
                                ("Started", f"Started container {slot.name}")):
            self.ctx.events.pod_event(pod, "Normal", reason, message, slot.name)
        slot.probe_stop = threading.Event()
        self._start_probes(slot, process, slot.first_probes())

    def _launch(self, pod: dict[str, Any], slot: Container, image: Image) -> ContainerProcess:
        spec = slot.spec
        config = self.ctx.config
        pod_ip = self.pod_ip or HOST_IP
        kubernetes_env = resolve_env(pod, spec, self.ctx.objects, self.ctx.service_env, pod_ip, HOST_IP,
                                     self.ctx.node_allocatable)
        hostname = node_hostname() if self.host_network else (pod["spec"].get("hostname") or pod["metadata"]["name"])
        mounts = container_mounts(spec, self.volumes, kubernetes_env)
        instance = slot.instance()
        container_dir = self.pod_dir / "containers" / slot.name
        container_dir.mkdir(parents=True, exist_ok=True)
        slot.term_file = container_dir / f"termination-log-{instance}"
        slot.term_file.write_bytes(b"")
        slot.term_file.chmod(0o666)  # as the kubelet's: the container's user, whoever it is, writes it
        slot.start_error_file = container_dir / f"start-error-{instance}"
        slot.start_error_file.unlink(missing_ok=True)
        mounts.append({"source": str(slot.term_file),
                       "target": spec.get("terminationMessagePath") or "/dev/termination-log", "readOnly": False})
        hosts = "/etc/hosts" if self.host_network else str(self.pod_dir / "etc-hosts")
        if not self.host_network or image.oci:  # a process container on the host network sees the host's own
            mounts.append({"source": hosts, "target": "/etc/hosts", "readOnly": self.host_network})
        mounts.sort(key=lambda m: len(Path(m["target"]).parts))
        log_path = self.log_dir / slot.name / f"{instance}.log"
        spec_file = container_dir / f"launch-{instance}.json"
        named_ports = {p["name"]: int(p["containerPort"]) for p in spec.get("ports") or [] if p.get("name")}
        if image.oci:
            oci_image = oci.load(image.oci)
            secure = oci.security(oci_image, pod["spec"], spec)
            env = oci.process_env(oci_image, kubernetes_env, hostname, secure.identity.home)
            argv = container_argv(spec, oci_image.entrypoint, oci_image.cmd, kubernetes_env)
            bundle = container_dir / f"bundle-{instance}"
            shutil.rmtree(bundle, ignore_errors=True)  # a kubelet before this one left it
            bundle.mkdir()
            (bundle / "config.json").write_text(json.dumps(oci.bundle_config(
                oci_image, argv, env, spec.get("workingDir") or oci_image.working_dir, mounts,
                None if self.host_network else hostname, secure)))
            runc = oci.RuncContainer(config.runc_dir, f"{self.uid}-{slot.name}-{instance}", bundle / "runc.log")
            launch = LaunchSpec(
                argv=runc.run_argv(bundle),
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, working_dir="/", mounts=[], image_dirs=[],
                hostname=None, log_path=log_path, spec_file=spec_file, start_error_file=slot.start_error_file,
                overlay={"lowerdir": str(oci_image.rootfs), "upperdir": str(bundle / "upper"),
                         "workdir": str(bundle / "work"), "target": str(bundle / "rootfs")},
                runc=runc)
        else:
            env = process_env(image, kubernetes_env, hostname)
            launch = LaunchSpec(
                argv=container_argv(spec, image.command, (), kubernetes_env), env=env,
                working_dir=spec.get("workingDir") or image.working_dir, mounts=mounts,
                image_dirs=[image.working_dir, *image.path],
                hostname=None if self.host_network else hostname, log_path=log_path, spec_file=spec_file,
                start_error_file=slot.start_error_file)
        process = ContainerProcess(launch, config.processes_dir, lambda p: self._post_exit(slot, p))
        exec_prefix = launch.runc.exec_prefix() if launch.runc else (
            "nsenter", f"--mount=/proc/{process.pid}/ns/mnt", f"--wd={launch.working_dir}", "--")
        slot.probe_target = ProbeTarget(pod_ip, process.pid, env, exec_prefix, named_ports)
        return process

    def _start_probes(self, slot: Container, process: ContainerProcess, kinds: tuple[str, ...]) -> None:
        assert slot.probe_stop is not None and slot.probe_target is not None
        for kind in kinds:
            probe = slot.spec.get(f"{kind}Probe")
            if probe:
                ProbeWorker(kind, probe, slot.probe_target,
                            lambda k, ok, detail: self._post_probe(slot, process, k, ok, detail),
                            slot.probe_stop).start()

    # --- exits, probes, restarts -------------------------------------------------------------------

    def _handle_exit(self, pod: dict[str, Any], slot: Container, process: ContainerProcess) -> None:
        if slot.process is not process:
            return
        if slot.probe_stop:
            slot.probe_stop.set()
        slot.detach()  # first: a failure reading its messages below must not leave a dead process attached
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
        slot.ended(terminated)
        log.info("pod %s: container %s (pid %d) exited with code %d%s", self.key, slot.name, process.pid,
                 process.exit_code, f" (signal {process.signal})" if process.signal else "")
        if self.lifecycle >= PodLifecycle.STOPPING or not slot.restarts(self._restart_policy(pod), process.exit_code):
            return
        ran = (process.finished_at - process.started_at).total_seconds()
        if slot.back_off(ran, time.monotonic(), format_pod(pod)) > 0:
            self.ctx.events.pod_event(pod, "Warning", "BackOff", f"Back-off restarting failed container "
                                                                  f"{slot.name} in pod {format_pod(pod)}", slot.name)

    def _restart_policy(self, pod: dict[str, Any]) -> str:
        return str(pod["spec"].get("restartPolicy") or "Always")

    def _handle_probe(
        self, pod: dict[str, Any], slot: Container, process: ContainerProcess, kind: str, ok: bool, detail: str
    ) -> None:
        if slot.process is not process or slot.stop_deadline is not None:
            return
        label = kind.capitalize()
        if not ok:
            log.info("pod %s: container %s: %s probe failed: %s", self.key, slot.name, kind, detail)
            self.ctx.events.pod_event(pod, "Warning", "Unhealthy", f"{label} probe failed: {detail}", slot.name)
        verdict = slot.probed(kind, ok)
        if verdict is ProbeVerdict.START_PROBES:
            self._start_probes(slot, process, ("readiness", "liveness"))
        elif verdict is ProbeVerdict.RESTART:
            self.ctx.events.pod_event(pod, "Normal", "Killing", f"Container {slot.name} failed {kind} probe, will be "
                                                                "restarted", slot.name)
            grace = slot.probe_grace(kind)
            self._stop(pod, slot, grace if grace is not None else self._spec_grace(pod), run_pre_stop=True)

    # --- stopping --------------------------------------------------------------------------------

    def _terminate(self, pod: dict[str, Any], grace: float, reason: str) -> None:
        """Stops every container (once; a shorter grace period later shortens the wait)."""
        if self.lifecycle < PodLifecycle.STOPPING:
            self.lifecycle = PodLifecycle.STOPPING  # no more starts; pending back-offs and retries lapse
            if reason == "DeadlineExceeded":
                self.reason, self.message = reason, "Pod was active on the node longer than the specified deadline"
            if self.processes():
                log.info("pod %s: stopping its containers (grace %gs)", self.key, grace)
        for slot in self.slots:
            self._stop(pod, slot, grace, run_pre_stop=True)

    def _stop(self, pod: dict[str, Any], slot: Container, grace: float, run_pre_stop: bool) -> None:
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

    def _stop_process(self, slot: Container, process: ContainerProcess, pre_stop: dict[str, Any] | None) -> None:
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
        if self.lifecycle < PodLifecycle.TERMINAL:
            for slot in self.slots:
                slot.mark_unknown(now())
            self.lifecycle = PodLifecycle.TERMINAL
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
        self.lifecycle = PodLifecycle.DELETED
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
            slot.report_probes()
        view = PodView(
            pod=pod, init_records=records(self.slots, init=True), records=records(self.slots, init=False),
            host_ip=HOST_IP, pod_ip=self.pod_ip, start_time=self.start_time,
            sandbox_ready=self.lifecycle.sandbox_ready, pod_is_terminal=self.lifecycle >= PodLifecycle.TERMINAL,
            reason=self.reason, message=self.message,
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
            if saved is not None:
                slot.restore(saved, now())
        self.start_time = self.start_time or parse_time(status.get("startTime"))
        self.pod_ip = status.get("podIP") if status.get("podIP") != HOST_IP else None
        self.last_written = {k: v for k, v in status.items() if k != "qosClass"}
        if status.get("phase") in ("Succeeded", "Failed"):
            self.lifecycle = PodLifecycle.TERMINAL

