"""Container processes: start one in its own mount namespace, pump its output into the log, notice its exit.

A container is one process group (the spawned pid leads it). The exit is seen by a thread blocked in
waitid, so the kubelet reacts within milliseconds. When the main process ends, whatever is left of its
group is killed, as a runtime tears down a container whose init process exited. Every group is recorded in
the state folder until it is gone, so a kubelet that starts after a crash can kill what the last one left.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from devcluster.kubelet import oci
from devcluster.kubelet.container_init import START_ERROR_EXIT_CODE
from devcluster.kubelet.logs import CriLogWriter

log = logging.getLogger("devcluster.kubelet")

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds devcluster/
LOG_DRAIN_SECONDS = 1.0  # how long an exit waits for the last output when a stray process holds the pipes


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    working_dir: str
    mounts: list[dict[str, Any]]
    image_dirs: list[str]  # the image's own folders: kept visible when a volume is mounted over an ancestor
    hostname: str | None
    log_path: Path
    spec_file: Path
    start_error_file: Path
    overlay: dict[str, str] | None = None  # lowerdir, upperdir, workdir and target of an OCI container's root
    runc: oci.RuncContainer | None = None


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time in clock ticks) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


class ContainerProcess:
    def __init__(self, spec: LaunchSpec, processes_dir: Path, on_exit: Callable[[ContainerProcess], None]) -> None:
        self.spec = spec
        self.on_exit = on_exit
        self.exited = threading.Event()
        self.logs_done = threading.Event()
        self.exit_code = 0
        self.signal: int | None = None
        self.finished_at = datetime.now(UTC)
        self._reap_lock = threading.Lock()
        self._reaped = False
        self._killed = False

        spec.spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec.spec_file.write_text(json.dumps({
            "argv": spec.argv, "env": spec.env, "workingDir": spec.working_dir, "mounts": spec.mounts,
            "imageDirs": spec.image_dirs, "hostname": spec.hostname, "startErrorFile": str(spec.start_error_file),
            "overlay": spec.overlay,
        }))
        namespaces = ["--mount", "--uts"] if spec.hostname else ["--mount"]
        self.started_at = datetime.now(UTC)
        self.popen = subprocess.Popen(
            ["unshare", *namespaces, "--propagation", "private", "--",
             sys.executable, "-s", "-m", "devcluster.kubelet.container_init", str(spec.spec_file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(PACKAGE_ROOT)},
        )
        self.pid = self.popen.pid
        self.record = processes_dir / str(self.pid)
        stat = _proc_stat(self.pid)
        processes_dir.mkdir(parents=True, exist_ok=True)
        self.record.write_text(f"{self.pid} {stat[2] if stat else 0}\n")
        assert self.popen.stdout is not None and self.popen.stderr is not None
        threading.Thread(target=self._pump, args=(self.popen.stdout, self.popen.stderr),
                         name=f"logs-{self.pid}", daemon=True).start()
        threading.Thread(target=self._wait, name=f"wait-{self.pid}", daemon=True).start()

    @property
    def container_id(self) -> str:
        runc = self.spec.runc
        return f"runc://{runc.container_id}" if runc else f"devcluster://{self.pid}"

    def signal_group(self, sig: int) -> None:
        """To the group; runc forwards a SIGTERM to the container, and a SIGKILL is the container's removal."""
        with self._reap_lock:
            if self._reaped:
                return  # the group id may belong to someone else by now
            if sig == signal.SIGKILL and self.spec.runc:
                self._killed = True
                self.spec.runc.remove()
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def _pump(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        writer = CriLogWriter(self.spec.log_path)
        streams = {stdout.fileno(): "stdout", stderr.fileno(): "stderr"}
        with selectors.DefaultSelector() as selector:
            for fd in streams:
                selector.register(fd, selectors.EVENT_READ)
            while streams:
                for key, _ in selector.select():
                    data = os.read(key.fd, 64 * 1024)
                    if data:
                        writer.write(streams[key.fd], data)
                    else:
                        selector.unregister(key.fd)
                        del streams[key.fd]
        writer.close()
        stdout.close()
        stderr.close()
        self.logs_done.set()

    def _wait(self) -> None:
        # Wait without reaping, so the group id stays ours while the rest of the group is killed.
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self.finished_at = datetime.now(UTC)
        with self._reap_lock:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self._reaped = True
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        if self.popen.returncode < 0:
            self.signal = -self.popen.returncode
            self.exit_code = 128 + self.signal
        else:
            self.exit_code = self.popen.returncode
        if self.spec.runc:
            self._end_container(self.spec.runc)
        self.record.unlink(missing_ok=True)
        self.logs_done.wait(LOG_DRAIN_SECONDS)
        self.exited.set()
        try:
            self.on_exit(self)
        except Exception:
            log.exception("handling the exit of pid %d failed", self.pid)

    def _end_container(self, runc: oci.RuncContainer) -> None:
        """Removes what runc left; a container that never started ends as a process that could not start."""
        why = runc.start_error() if self.exit_code and not self._killed else None
        if why is not None:
            self.spec.start_error_file.write_text(why)
            self.exit_code, self.signal = START_ERROR_EXIT_CODE, None
        runc.remove()


def kill_leftovers(processes_dir: Path) -> int:
    """Kills the process groups a previous kubelet recorded and that still run; returns how many."""
    if not processes_dir.exists():
        return 0
    recorded: dict[int, int] = {}
    for record in processes_dir.iterdir():
        try:
            pgid, started = (int(part) for part in record.read_text().split())
            recorded[pgid] = started
        except ValueError:
            pass
        record.unlink(missing_ok=True)
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        # Only a member of a recorded group that started no earlier than its leader: pids can be reused.
        if stat and stat[1] in recorded and stat[2] >= recorded[stat[1]]:
            with suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


def kill_own_children() -> None:
    """The last safety net of a stopping kubelet: no child of it may outlive it."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] == me:
                with suppress(ProcessLookupError, PermissionError):
                    if stat[1] != os.getpgrp():
                        os.killpg(stat[1], signal.SIGKILL)
                    os.kill(int(entry.name), signal.SIGKILL)
