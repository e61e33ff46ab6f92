"""Starts, checks and stops the processes of devcluster.

Each component is one local process, started in its own session so it outlives the `devcluster up` that
started it, with a pid file and a log file in the state folder. `up` starts only what is not running, so
it is idempotent; `down` stops everything in reverse order and leaves no process or mount behind.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devcluster.build import Binaries, ensure_binaries
from devcluster.config import (
    IMAGE_MAP,
    NODE_NAME,
    OCI_IMAGES,
    POD_NETWORK,
    PORTS,
    PROJECT_DIR,
    REPO_ROOT,
    SERVICE_ACCOUNT_ISSUER,
    SERVICE_CIDR,
    state_dir,
)
from devcluster.pki import Pki, ensure_pki

POSTGRES_USER = "postgres"


class StartError(SystemExit):
    """A component could not start: the message names it, its port and its log."""


@dataclass
class Component:
    name: str
    argv: list[str]
    port: int
    healthy: Callable[[], bool]
    startup_seconds: float = 60.0
    stop_signal: int = signal.SIGTERM
    stop_seconds: float = 20.0
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """The files of one devcluster state folder."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def volume_claims(self) -> Path:
        return self.root / "volumes"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres" / "data"

    @property
    def postgres_socket_dir(self) -> Path:
        return self.root / "postgres" / "socket"

    @property
    def postgres_password_file(self) -> Path:
        return self.root / "postgres" / "superuser-password"

    def pid_file(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / f"{name}.kubeconfig"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        """One JSON line per API request, with its user agent: bench/scale.py counts the operator's own."""
        return self.log_file("kube-apiserver-audit")


class Cluster:
    """The devcluster of one state folder: the Python face of the `devcluster` command."""

    def __init__(self, root: Path | None = None, log: Callable[[str], None] | None = None) -> None:
        self.layout = Layout(root or state_dir())
        self.say = log or _say

    # --- what callers use -------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def postgres_password(self) -> str:
        return self.layout.postgres_password_file.read_text().strip()

    def database_url(self, database: str = "postgres") -> str:
        return f"postgres://{POSTGRES_USER}:{self.postgres_password()}@127.0.0.1:{PORTS.postgres}/{database}"

    def tool_env(self) -> dict[str, str]:
        """The environment in which kubectl and helm talk to this cluster."""
        bins = ensure_binaries(self.say)
        path = os.pathsep.join([*(str(d) for d in bins.path_dirs), os.environ.get("PATH", "")])
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), PATH=path)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """kubectl against this cluster; with `check`, a failure raises with kubectl's own words."""
        result = subprocess.run(["kubectl", *args], env=self.tool_env(), capture_output=True, text=True, input=input,
                                check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def apply(self, namespace: str, *manifests: Mapping[str, object]) -> None:
        """`kubectl apply` of the manifests, as one List, into `namespace`."""
        self.kubectl("apply", "-n", namespace, "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)}))

    def up(self, with_scheduler: bool = False) -> float:
        """Starts whatever is not running; returns the seconds it took."""
        started = time.monotonic()
        bins = ensure_binaries(self.say)
        with self._lock():
            pki = ensure_pki(self.layout.pki)
            self._write_kubeconfigs(pki)
            self.layout.audit_policy.write_text(_AUDIT_POLICY)
            self._prepare_postgres()
            components = self._components(bins, pki, with_scheduler)
            for component in components:
                self._start(component)
            self._wait_node_ready()
        elapsed = time.monotonic() - started
        self.say(f"up in {elapsed:.1f}s; KUBECONFIG={self.kubeconfig}")
        return elapsed

    def down(self) -> None:
        """Stops every process in reverse start order; leaves no mount behind."""
        with self._lock():
            names = [c for c in reversed(_START_ORDER) if self._pid(c) is not None]
            for name in names:
                self._stop(name)
            self._unmount_leftovers()
        self.say("down" if names else "down (nothing was running)")

    @contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        """Stops one component (a fault trial: "postgres", "kube-apiserver") as `down` would; at the block's end,
        `up` starts it again, and the cluster is whole whatever the block did."""
        if name not in _START_ORDER:
            raise ValueError(f"no component {name!r}; the components are {', '.join(_START_ORDER)}")
        with self._lock():
            if self._pid(name) is not None:
                self._stop(name)
        try:
            yield
        finally:
            self.up()

    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for name in _START_ORDER:
            pid = self._pid(name)
            rows.append({
                "component": name,
                "pid": pid,
                "running": pid is not None,
                "rss_mib": _rss_mib(pid) if pid else None,
                "log": str(self.layout.log_file(name)),
            })
        return rows

    def running(self) -> bool:
        return all(self._pid(name) is not None for name in _REQUIRED) and _apiserver_ready(self._admin_tls())

    # --- components ----------------------------------------------------------------------------------

    def _components(self, bins: Binaries, pki: Pki, with_scheduler: bool) -> list[Component]:
        layout = self.layout
        etcd_url = f"http://127.0.0.1:{PORTS.etcd_client}"
        etcd = Component(
            name="etcd",
            argv=[str(bins.etcd), "--name=devcluster", f"--data-dir={layout.root / 'etcd'}",
                  f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
                  f"--listen-peer-urls=http://127.0.0.1:{PORTS.etcd_peer}",
                  f"--initial-advertise-peer-urls=http://127.0.0.1:{PORTS.etcd_peer}",
                  f"--initial-cluster=devcluster=http://127.0.0.1:{PORTS.etcd_peer}",
                  "--unsafe-no-fsync",  # a throwaway test cluster: speed over durability
                  "--log-level=warn"],
            port=PORTS.etcd_client,
            healthy=lambda: _http_ok(f"{etcd_url}/health", expect='"health":"true"'),
        )
        postgres = Component(
            name="postgres",
            argv=[str(postgres_bin() / "postgres"), "-D", str(layout.postgres_data), "-p", str(PORTS.postgres),
                  "-k", str(layout.postgres_socket_dir), "-c", "listen_addresses=127.0.0.1",
                  "-c", "fsync=off", "-c", "max_connections=200"],
            port=PORTS.postgres,
            healthy=lambda: _tcp_open(PORTS.postgres),
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
            user=POSTGRES_USER,
        )
        apiserver = Component(
            name="kube-apiserver",
            argv=[str(bins.kube("kube-apiserver")),
                  f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                  f"--secure-port={PORTS.apiserver}",
                  f"--tls-cert-file={pki.cert('apiserver')}", f"--tls-private-key-file={pki.key('apiserver')}",
                  f"--client-ca-file={pki.cert('ca')}", "--authorization-mode=RBAC",
                  f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                  f"--service-account-key-file={pki.service_account_public_key}",
                  f"--service-account-signing-key-file={pki.service_account_private_key}",
                  f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
                  f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                  f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                  "--kubelet-preferred-address-types=InternalIP", "--profiling=false",
                  f"--audit-policy-file={layout.audit_policy}", f"--audit-log-path={layout.audit_log}",
                  "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-maxbackup=1",
                  "--endpoint-reconciler-type=none"],  # no kube-proxy: clients use 127.0.0.1 directly
            port=PORTS.apiserver,
            healthy=lambda: _apiserver_ready(self._admin_tls()),
            startup_seconds=90.0,
        )
        cm_kubeconfig = str(layout.component_kubeconfig("controller-manager"))
        controller_manager = Component(
            name="kube-controller-manager",
            argv=[str(bins.kube("kube-controller-manager")), f"--kubeconfig={cm_kubeconfig}",
                  f"--authentication-kubeconfig={cm_kubeconfig}", f"--authorization-kubeconfig={cm_kubeconfig}",
                  "--leader-elect=false", "--use-service-account-credentials=true",
                  f"--service-account-private-key-file={pki.service_account_private_key}",
                  f"--root-ca-file={pki.cert('ca')}",
                  f"--cluster-signing-cert-file={pki.cert('ca')}", f"--cluster-signing-key-file={pki.key('ca')}",
                  "--bind-address=127.0.0.1", f"--secure-port={PORTS.controller_manager}",
                  "--profiling=false"],
            port=PORTS.controller_manager,
            healthy=lambda: _http_ok(f"https://127.0.0.1:{PORTS.controller_manager}/healthz", expect="ok"),
        )
        kubelet_config = self._write_kubelet_config(pki, bind_unscheduled=not with_scheduler)
        kubelet = Component(
            name="kubelet",
            argv=[sys.executable, "-m", "devcluster.kubelet", "--config", str(kubelet_config)],
            port=PORTS.kubelet,
            healthy=lambda: _http_ok(f"https://127.0.0.1:{PORTS.kubelet}/healthz", expect="ok"),
            stop_seconds=60.0,  # it stops every pod first, each with its grace period
            env={"PYTHONPATH": str(PROJECT_DIR)},
        )
        components = [etcd, postgres, apiserver, controller_manager, kubelet]
        if with_scheduler:
            sched_kubeconfig = str(layout.component_kubeconfig("scheduler"))
            components.append(Component(
                name="kube-scheduler",
                argv=[str(bins.kube("kube-scheduler")), f"--kubeconfig={sched_kubeconfig}",
                      f"--authentication-kubeconfig={sched_kubeconfig}",
                      f"--authorization-kubeconfig={sched_kubeconfig}", "--leader-elect=false",
                      "--bind-address=127.0.0.1", f"--secure-port={PORTS.scheduler}"],
                port=PORTS.scheduler,
                healthy=lambda: _http_ok(f"https://127.0.0.1:{PORTS.scheduler}/healthz", expect="ok"),
            ))
        return components

    def _start(self, component: Component) -> None:
        name = component.name
        if self._pid(name) is not None:
            if not component.healthy():
                self._wait_healthy(component, self._pid(name) or 0)
            return
        if _tcp_open(component.port):
            raise StartError(f"devcluster: cannot start {name}: port 127.0.0.1:{component.port} is taken by a "
                             f"process devcluster did not start (see `ss -ltnp 'sport = :{component.port}'`)")
        log_path = self.layout.log_file(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.layout.pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        self.say(f"starting {name} on 127.0.0.1:{component.port} (log: {log_path})")
        with log_path.open("ab") as log:
            process = subprocess.Popen(component.argv, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       user=component.user, env={**os.environ, **component.env},
                                       cwd=self.layout.root)
        self.layout.pid_file(name).write_text(f"{process.pid}\n{component.stop_signal}\n{component.stop_seconds}\n")
        self._wait_healthy(component, process.pid)

    def _wait_healthy(self, component: Component, pid: int) -> None:
        deadline = time.monotonic() + component.startup_seconds
        while time.monotonic() < deadline:
            if component.healthy():
                return
            if not _alive(pid):
                self.layout.pid_file(component.name).unlink(missing_ok=True)
                raise StartError(self._failure(component, "exited during start"))
            time.sleep(0.1)
        raise StartError(self._failure(
            component, f"did not become healthy on 127.0.0.1:{component.port} within {component.startup_seconds:.0f}s"))

    def _failure(self, component: Component, what: str) -> str:
        log_path = self.layout.log_file(component.name)
        tail = log_path.read_text(errors="replace").splitlines()[-12:] if log_path.exists() else []
        return (f"devcluster: {component.name} {what}; log: {log_path}\n"
                + "\n".join(f"  | {line}" for line in tail))

    def _stop(self, name: str) -> None:
        pid_file = self.layout.pid_file(name)
        lines = pid_file.read_text().split()
        pid, stop_signal, stop_seconds = int(lines[0]), int(lines[1]), float(lines[2])
        self.say(f"stopping {name} (pid {pid})")
        _signal_group(pid, stop_signal)
        deadline = time.monotonic() + stop_seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            self.say(f"{name} did not stop within {stop_seconds:.0f}s: killing it")
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        pid_file.unlink(missing_ok=True)

    def _pid(self, name: str) -> int | None:
        pid_file = self.layout.pid_file(name)
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().split()[0])
        if _alive(pid):
            return pid
        pid_file.unlink(missing_ok=True)
        return None

    # --- configuration files -------------------------------------------------------------------------

    def _write_kubeconfigs(self, pki: Pki) -> None:
        for path, user in ((self.layout.kubeconfig, "admin"),
                           (self.layout.component_kubeconfig("controller-manager"), "controller-manager"),
                           (self.layout.component_kubeconfig("scheduler"), "scheduler"),
                           (self.layout.component_kubeconfig("kubelet"), "kubelet")):
            config = {
                "apiVersion": "v1", "kind": "Config", "current-context": "devcluster",
                "clusters": [{"name": "devcluster", "cluster": {
                    "server": f"https://127.0.0.1:{PORTS.apiserver}",
                    "certificate-authority": str(pki.cert("ca"))}}],
                "users": [{"name": user, "user": {
                    "client-certificate": str(pki.cert(user)), "client-key": str(pki.key(user))}}],
                "contexts": [{"name": "devcluster", "context": {
                    "cluster": "devcluster", "user": user, "namespace": "default"}}],
            }
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _write_kubelet_config(self, pki: Pki, bind_unscheduled: bool) -> Path:
        images = yaml.safe_load(IMAGE_MAP.read_text())
        substitutions = {"{repo}": str(REPO_ROOT), "{postgres_bin}": str(postgres_bin()),
                         "{postgres_major}": str(postgres_major()), "{python_bin}": str(Path(sys.executable).parent),
                         "{oci_images}": str(OCI_IMAGES)}
        config = {
            "kubeconfig": str(self.layout.component_kubeconfig("kubelet")),
            "nodeName": NODE_NAME,
            "stateDir": str(self.layout.root / "kubelet"),
            "volumeClaimRoot": str(self.layout.volume_claims),
            "podNetwork": POD_NETWORK,
            "apiserver": {"host": "127.0.0.1", "port": PORTS.apiserver},
            "serving": {"address": "127.0.0.1", "port": PORTS.kubelet,
                        "certFile": str(pki.cert("kubelet-serving")), "keyFile": str(pki.key("kubelet-serving"))},
            "bindUnscheduledPods": bind_unscheduled,
            "images": _substitute(images, substitutions),
        }
        path = self.layout.root / "kubelet.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def _prepare_postgres(self) -> None:
        data = self.layout.postgres_data
        socket_dir = self.layout.postgres_socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", f"{POSTGRES_USER}:", str(socket_dir.parent)], check=True)
        if (data / "PG_VERSION").exists():
            return
        self.say("initialising PostgreSQL (once per state folder)")
        password_file = self.layout.postgres_password_file
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(18) + "\n")
        subprocess.run(["chown", f"{POSTGRES_USER}:", str(password_file)], check=True)
        password_file.chmod(0o600)
        result = subprocess.run(
            [str(postgres_bin() / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "--auth-local=trust",
             "--auth-host=scram-sha-256", f"--pwfile={password_file}", "--encoding=UTF8", "--locale=C.UTF-8"],
            user=POSTGRES_USER, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StartError(f"devcluster: initdb failed in {data}:\n{result.stderr}")

    # --- helpers -----------------------------------------------------------------------------------

    def _admin_tls(self) -> ssl.SSLContext:
        pki = Pki(self.layout.pki)
        context = ssl.create_default_context(cafile=str(pki.cert("ca")))
        context.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
        return context

    def _wait_node_ready(self) -> None:
        deadline = time.monotonic() + 60
        url = f"https://127.0.0.1:{PORTS.apiserver}/api/v1/nodes/{NODE_NAME}"
        context = self._admin_tls()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    node = json.load(response)
                conditions = node.get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return
            except urllib.error.URLError:
                pass
            time.sleep(0.2)
        raise StartError(f"devcluster: node {NODE_NAME} did not become Ready within 60s; "
                         f"kubelet log: {self.layout.log_file('kubelet')}")

    def _unmount_leftovers(self) -> None:
        root = str(self.layout.root)
        with open("/proc/self/mountinfo") as mountinfo:
            mount_points = [line.split()[4] for line in mountinfo]
        for point in sorted((p for p in mount_points if p.startswith(root)), key=len, reverse=True):
            self.say(f"unmounting leftover {point}")
            subprocess.run(["umount", "-l", point], check=False)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with (self.layout.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


# Every request once, when its response is complete, without bodies: who asked for what (user, user agent, verb).
_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
"""

_START_ORDER = ("etcd", "postgres", "kube-apiserver", "kube-controller-manager", "kubelet", "kube-scheduler")
_REQUIRED = _START_ORDER[:-1]


def _say(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


def postgres_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        raise StartError("devcluster: PostgreSQL server not found under /usr/lib/postgresql/*/bin; "
                         "install it with `apt-get install postgresql` (scripts/bootstrap does)")
    return Path(candidates[-1]).parent


def postgres_major() -> int:
    """The major version of the PostgreSQL server devcluster runs: postgres:<it> is its tools image."""
    return int(postgres_bin().parent.name)


def _substitute(value: object, substitutions: dict[str, str]) -> object:
    if isinstance(value, str):
        for placeholder, replacement in substitutions.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, dict):
        return {str(_substitute(k, substitutions)): _substitute(v, substitutions) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, substitutions) for v in value]
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except FileNotFoundError:
        return None
    return None


def _tcp_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str, expect: str, context: ssl.SSLContext | None = None) -> bool:
    if context is None and url.startswith("https"):
        context = ssl._create_unverified_context()  # health endpoints of self-signed local servers
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return expect in response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def _apiserver_ready(context: ssl.SSLContext) -> bool:
    return _http_ok(f"https://127.0.0.1:{PORTS.apiserver}/readyz", expect="ok", context=context)
