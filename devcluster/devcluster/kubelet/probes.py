"""Probes (readiness, liveness, startup) and lifecycle handlers (preStop), run as the kubelet's prober does.

httpGet goes to the pod IP by default; exec runs the command inside the container: in a process container's mount
namespace (via nsenter) with its environment and working folder, in an OCI container through `runc exec`, which
takes the user, environment and folder from the container's own config.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PROBE_USER_AGENT = "kube-probe/1.36"


@dataclass(frozen=True)
class ProbeTarget:
    """Where a container's probes and handlers run."""

    pod_ip: str
    pid: int
    env: dict[str, str]
    exec_prefix: tuple[str, ...]  # runs a command (the rest of the argv) inside the container
    named_ports: dict[str, int]

    def port(self, value: Any) -> int:
        if isinstance(value, int) or str(value).isdigit():
            return int(value)
        if value in self.named_ports:
            return self.named_ports[value]
        raise ValueError(f"port {value!r} is neither a number nor the name of a container port")


def run_handler(handler: Mapping[str, Any], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    """Runs one probe or lifecycle handler; returns (success, what happened)."""
    try:
        if get := handler.get("httpGet"):
            return _http_get(get, target, timeout)
        if tcp := handler.get("tcpSocket"):
            with socket.create_connection((tcp.get("host") or target.pod_ip, target.port(tcp["port"])), timeout):
                return True, ""
        if exec_ := handler.get("exec"):
            return _exec(list(exec_.get("command") or []), target, timeout)
        if sleep := handler.get("sleep"):
            time.sleep(min(float(sleep.get("seconds") or 0), timeout))
            return True, ""
    except (OSError, ValueError, http.client.HTTPException) as error:
        return False, str(error)
    return False, f"handler kind {', '.join(handler)} is not supported by devcluster's kubelet"


def _http_get(get: Mapping[str, Any], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    host = get.get("host") or target.pod_ip
    port = target.port(get["port"])
    connection: http.client.HTTPConnection
    if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                 context=ssl._create_unverified_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"User-Agent": PROBE_USER_AGENT, "Accept": "*/*"}
    headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})
    try:
        connection.request("GET", get.get("path") or "/", headers=headers)
        response = connection.getresponse()
        response.read(10 * 1024)
    finally:
        connection.close()
    if 200 <= response.status < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {response.status}"


def _exec(command: list[str], target: ProbeTarget, timeout: float) -> tuple[bool, str]:
    argv = [*target.exec_prefix, *command]
    try:
        result = subprocess.run(argv, env=target.env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:g}s"
    output = (result.stdout + result.stderr).decode(errors="replace").strip()[-1024:]
    if result.returncode != 0 and not output:
        output = f"command {command!r} exited with {result.returncode}"
    return result.returncode == 0, output


class ProbeWorker(threading.Thread):
    """Runs one probe of one container instance and reports each change of its result."""

    def __init__(
        self,
        kind: str,
        probe: Mapping[str, Any],
        target: ProbeTarget,
        report: Callable[[str, bool, str], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"{kind}-probe-{target.pid}", daemon=True)
        self.kind = kind
        self.probe = probe
        self.target = target
        self.report = report
        self.stop = stop

    def run(self) -> None:
        probe = self.probe
        period = float(probe.get("periodSeconds") or 10)
        timeout = float(probe.get("timeoutSeconds") or 1)
        success_threshold = int(probe.get("successThreshold") or 1)
        failure_threshold = int(probe.get("failureThreshold") or 3)
        initial_delay = float(probe.get("initialDelaySeconds") or 0)
        if self.stop.wait(initial_delay):
            return
        result: bool | None = None  # the last reported result
        successes = failures = 0
        while not self.stop.is_set():
            began = time.monotonic()
            ok, detail = run_handler(probe, self.target, timeout)
            if self.stop.is_set():
                return
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if ok and successes >= success_threshold and result is not True:
                result = True
                self.report(self.kind, True, "")
            elif not ok and failures >= failure_threshold and result is not False:
                result = False
                self.report(self.kind, False, detail)
            if self.kind == "startup" and result is True:
                return  # a startup probe stops once it has succeeded
            self.stop.wait(max(0.0, period - (time.monotonic() - began)))
