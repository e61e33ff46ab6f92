"""Following one run: kubernetes watches of the run, its Jobs, the app's pods and Deployments, stamped on arrival,
and an HTTP prober that sees the downtime as a client does."""

from __future__ import annotations

import itertools
import math
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from demo.stack import BlogStack, LocalOperator
from django_migration_operator.resource import GROUP, PLURAL, RUN_LABEL, STEP_LABEL, VERSION
from django_migration_operator.status import RunStatus
from django_migration_operator.wait import KubeSource, watch_run
from django_migration_operator.workflow import TERMINAL

RUN_NAME = "blog-release-2"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_COMPONENT_LABEL = "app.kubernetes.io/component"
WATCH_SERVER_TIMEOUT = 60
PROBE_PATH = "/posts/count"
PROBE_INTERVAL = 0.05


# --- what the watches saw -----------------------------------------------------------------------------------


@dataclass
class JobRecord:
    name: str
    step: str
    added: float  # first seen (the operator created it)
    finished: float | None = None  # Complete or Failed condition first seen
    outcome: str | None = None
    criteria_met: float | None = None  # SuccessCriteriaMet or FailureTarget first seen (set before the above)


@dataclass
class PodRecord:
    name: str
    component: str  # web or worker for the app's pods; the step (plan, backup, ...) for a Job's pod
    job_pod: bool
    added: float
    ip: str | None = None
    ready: bool = False
    terminating: bool = False
    terminating_at: float | None = None  # deletionTimestamp first seen
    ready_at: float | None = None  # condition Ready first seen True
    unready_at: float | None = None  # terminating, condition Ready first seen False after that (its exit)
    running: float | None = None  # phase Running first seen
    ended: float | None = None  # phase Succeeded or Failed first seen
    deleted: float | None = None


@dataclass(frozen=True)
class DeploymentEvent:
    at: float
    name: str
    replicas: int
    ready: bool  # rolled out and every replica available, as the operator judges it


@dataclass
class Observations:
    run_added: float | None = None
    run_first_modified: float | None = None
    phases: list[tuple[float, str]] = field(default_factory=list)  # (first seen, phase), one per transition
    status: RunStatus = field(default_factory=RunStatus)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    pods: dict[str, PodRecord] = field(default_factory=dict)
    deployments: list[DeploymentEvent] = field(default_factory=list)


Lister = Callable[..., Any]


class Observer:
    """Four watches in threads (runs, Jobs, pods, Deployments of one namespace, or of all), stamping events on
    arrival; what each namespace's run named `run` did is in `by_namespace`.

    Each watch lists first and then watches from the list's resourceVersion, so nothing that happens after
    `start()` returns is missed; a watch that ends (server timeout) resumes from the last resourceVersion. The run
    of one namespace is followed by the waiter's watcher (`wait.watch_run`); the runs of every namespace, and the
    rest, by the loop below.
    """

    def __init__(self, api: client.ApiClient, namespace: str | None, run: str) -> None:
        self.namespace = namespace  # None: every namespace
        self.run = run
        self.by_namespace: dict[str, Observations] = defaultdict(Observations)
        self.watch_errors: list[str] = []
        self._api = api
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        core, batch, apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
        self._streams: list[tuple[str, Lister, tuple[Any, ...], Callable[[str, dict[str, Any], float], None]]] = [
            ("jobs", batch.list_namespaced_job, (namespace,), self._on_job),
            ("pods", core.list_namespaced_pod, (namespace,), self._on_pod),
            ("deployments", apps.list_namespaced_deployment, (namespace,), self._on_deployment),
        ] if namespace else [
            ("djangomigrations", client.CustomObjectsApi(api).list_cluster_custom_object, (GROUP, VERSION, PLURAL),
             self._on_any_run),
            ("jobs", batch.list_job_for_all_namespaces, (), self._on_job),
            ("pods", core.list_pod_for_all_namespaces, (), self._on_pod),
            ("deployments", apps.list_deployment_for_all_namespaces, (), self._on_deployment),
        ]

    def start(self) -> None:
        ready = threading.Barrier(len(self._streams) + (2 if self.namespace else 1))
        self._threads = [threading.Thread(target=self._follow_run, args=(self.namespace, ready), daemon=True,
                                          name="watch-djangomigrations")] if self.namespace else []
        self._threads += [threading.Thread(target=self._follow, args=(name, lister, args, handler, ready), daemon=True,
                                           name=f"watch-{name}") for name, lister, args, handler in self._streams]
        for thread in self._threads:
            thread.start()
        ready.wait(timeout=60)  # every watch has listed once

    def stop(self) -> None:
        self._stop.set()

    @property
    def seen(self) -> Observations:
        """What the run of the one namespace watched did."""
        assert self.namespace is not None
        return self.by_namespace[self.namespace]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        with self._lock:
            if not self._lock.wait_for(predicate, timeout=timeout):
                phases = {namespace: [phase for _, phase in seen.phases]
                          for namespace, seen in self.by_namespace.items()}
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; phases seen: {phases}")

    def serving_web_ips(self) -> list[str]:
        """The web pods a Service sends requests to, as kube-proxy chooses them since Kubernetes 1.28 (KEP-1669, every
        traffic policy): the Ready ones not terminating; when there are none, the Ready terminating ones, which
        still serve in their preStop."""
        with self._lock:
            ready = [p for p in self.seen.pods.values()
                     if not p.job_pod and p.component == "web" and p.ready and p.deleted is None]
            return ([p.ip for p in ready if p.ip and not p.terminating]
                    or [p.ip for p in ready if p.ip])

    # --- the watch loops --------------------------------------------------------------------------------

    def _follow_run(self, namespace: str, ready: threading.Barrier) -> None:
        listed = False
        for seen in watch_run(KubeSource(namespace, self.run, self._api), math.inf,
                              on_retry=lambda error: self._note_error("djangomigrations", error)):
            now = time.monotonic()
            if seen.run is not None:  # None: not applied yet (or deleted)
                with self._lock:
                    self._on_run(seen.run, now)
                    self._lock.notify_all()
            if not listed:
                listed = True
                ready.wait()
            if self._stop.is_set():
                return

    def _follow(self, name: str, lister: Lister, args: tuple[Any, ...],
                handler: Callable[[str, dict[str, Any], float], None], ready: threading.Barrier) -> None:
        resource_version: str | None = None
        first = True
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list(lister, args, handler)
                    if first:
                        first = False
                        ready.wait()
                stream = watch.Watch().stream(lister, *args, resource_version=resource_version,
                                              allow_watch_bookmarks=True, timeout_seconds=WATCH_SERVER_TIMEOUT,
                                              _request_timeout=WATCH_SERVER_TIMEOUT + 30)
                for event in stream:
                    now = time.monotonic()
                    raw: dict[str, Any] = event["raw_object"]
                    kind = event["type"]
                    if kind == "ERROR":
                        if raw.get("code") == 410:
                            resource_version = None  # too old: list again
                            break
                        raise RuntimeError(f"watch error: {raw.get('message')}")
                    resource_version = raw.get("metadata", {}).get("resourceVersion") or resource_version
                    if kind != "BOOKMARK":
                        with self._lock:
                            handler(kind, raw, now)
                            self._lock.notify_all()
                    if self._stop.is_set():
                        return
            except ApiException as error:
                if error.status == 410:
                    resource_version = None
                    continue
                self._note_error(name, error)
            except Exception as error:  # a broken connection: resume from the last resourceVersion
                self._note_error(name, error)

    def _note_error(self, name: str, error: Exception) -> None:
        with self._lock:
            self.watch_errors.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
        time.sleep(0.2)

    def _list(self, lister: Lister, args: tuple[Any, ...],
              handler: Callable[[str, dict[str, Any], float], None]) -> str:
        result = lister(*args)
        now = time.monotonic()
        body: dict[str, Any] = result if isinstance(result, dict) else self._api.sanitize_for_serialization(result)
        with self._lock:
            for item in body.get("items") or []:
                handler("ADDED", item, now)
            self._lock.notify_all()
        return str(body["metadata"]["resourceVersion"])

    # --- handlers (called with the lock held) -------------------------------------------------------------

    def _on_any_run(self, kind: str, raw: dict[str, Any], now: float) -> None:
        if raw.get("metadata", {}).get("name") == self.run and kind != "DELETED":
            self._on_run(raw, now)

    def _on_run(self, raw: dict[str, Any], now: float) -> None:
        seen = self.by_namespace[raw["metadata"]["namespace"]]
        if seen.run_added is None:
            seen.run_added = now
        elif seen.run_first_modified is None:
            seen.run_first_modified = now
        seen.status = raw.get("status") or RunStatus()
        phase = seen.status.get("phase") or "Pending"
        if not seen.phases or seen.phases[-1][1] != phase:
            seen.phases.append((now, phase))

    def _on_job(self, kind: str, raw: dict[str, Any], now: float) -> None:
        metadata = raw.get("metadata", {})
        labels = metadata.get("labels") or {}
        if labels.get(RUN_LABEL) != self.run:
            return
        record = self.by_namespace[metadata["namespace"]].jobs.setdefault(
            metadata["name"], JobRecord(metadata["name"], labels.get(STEP_LABEL, "?"), now))
        for condition in (raw.get("status") or {}).get("conditions") or []:
            if (record.criteria_met is None and condition.get("status") == "True"
                    and condition.get("type") in ("SuccessCriteriaMet", "FailureTarget")):
                record.criteria_met = now
            if (record.finished is None and condition.get("status") == "True"
                    and condition.get("type") in ("Complete", "Failed")):
                record.finished, record.outcome = now, condition["type"]

    def _on_pod(self, kind: str, raw: dict[str, Any], now: float) -> None:
        metadata, status = raw.get("metadata", {}), raw.get("status") or {}
        labels = metadata.get("labels") or {}
        if labels.get(RUN_LABEL) == self.run:
            component, job_pod = labels.get(STEP_LABEL, "?"), True
        elif labels.get(APP_NAME_LABEL) == "blog":
            component, job_pod = labels.get(APP_COMPONENT_LABEL, "?"), False
        else:
            return
        pod = self.by_namespace[metadata["namespace"]].pods.setdefault(
            metadata["name"], PodRecord(metadata["name"], component, job_pod, now))
        pod.ip = status.get("podIP") or pod.ip
        pod.ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        pod.terminating = bool(metadata.get("deletionTimestamp"))
        if pod.terminating and pod.terminating_at is None:
            pod.terminating_at = now
        if pod.ready and pod.ready_at is None:
            pod.ready_at = now
        if pod.terminating and not pod.ready and pod.ready_at is not None and pod.unready_at is None:
            pod.unready_at = now
        phase = status.get("phase")
        if phase == "Running" and pod.running is None:
            pod.running = now
        if phase in ("Succeeded", "Failed") and pod.ended is None:
            pod.ended = now
        if kind == "DELETED" and pod.deleted is None:
            pod.deleted = now

    def _on_deployment(self, kind: str, raw: dict[str, Any], now: float) -> None:
        if kind == "DELETED":
            return
        metadata, spec, status = raw["metadata"], raw.get("spec") or {}, raw.get("status") or {}
        replicas = int(spec.get("replicas", 1))
        # The operator's own test (observe.deployment_state and workflow._scaling_up).
        ready = (status.get("observedGeneration", 0) >= metadata.get("generation", 0)
                 and status.get("updatedReplicas", 0) >= replicas and status.get("replicas", 0) == replicas
                 and status.get("availableReplicas", 0) >= replicas)
        self.by_namespace[metadata["namespace"]].deployments.append(DeploymentEvent(now, metadata["name"], replicas,
                                                                                     ready))


# --- what a client of the app saw ---------------------------------------------------------------------------


class HttpProbe:
    """Asks the web pods a Service routes to (`serving_web_ips`) for GET /posts/count every 50 ms; remembers when one
    answered 200."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.answered: list[float] = []
        self.attempts = 0
        self._stop = threading.Event()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # pod IPs, never a proxy
        self._thread = threading.Thread(target=self._run, daemon=True, name="http-probe")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            for ip in self.observer.serving_web_ips():
                try:
                    with self._opener.open(f"http://{ip}:8000{PROBE_PATH}", timeout=1) as response:
                        if response.status == 200:
                            self.answered.append(time.monotonic())
                            break
                except (urllib.error.URLError, OSError, ValueError):
                    continue
            time.sleep(PROBE_INTERVAL)

    def longest_silence(self, start: float, end: float) -> tuple[float, float, float] | None:
        """(seconds, from, to): the longest time between two answers in [start, end]; None without answers."""
        times = [t for t in self.answered if start <= t <= end]
        gaps = [(b - a, a, b) for a, b in itertools.pairwise(times)]
        return max(gaps) if gaps else None


# --- the operator run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    applied: float  # just before `kubectl apply`
    apply_returned: float
    seen: Observations
    http_silence: tuple[float, float, float] | None
    probe_attempts: int
    operator_log: Path
    watch_errors: list[str]  # errors the watches resumed after


def operator_run(stack: BlogStack, api: client.ApiClient, operators: list[LocalOperator],
                 timeout: float, rehearse: bool, say: Callable[[str], None]) -> RunResult:
    observer = Observer(api, stack.namespace, RUN_NAME)
    observer.start()
    operator = LocalOperator(stack.cluster, f"operator-{stack.namespace}", namespaces=(stack.namespace,))
    operator.start()
    operators.append(operator)
    # The run is applied to an operator that already watches: what is measured is its reaction to an event,
    # not its start-up listing.
    operator.wait_ready()
    time.sleep(3)
    probe = HttpProbe(observer)
    probe.start()
    observer.wait_for(lambda: bool(observer.serving_web_ips()), "a Ready web pod", timeout=30)
    time.sleep(1)
    say(f"kubectl apply DjangoMigration {RUN_NAME} (operator log: {operator.log_path})")
    applied = time.monotonic()
    stack.apply(stack.migration(RUN_NAME, rehearsal={"enabled": rehearse}))
    apply_returned = time.monotonic()
    observer.wait_for(lambda: bool(observer.seen.phases) and observer.seen.phases[-1][1] in TERMINAL,
                      f"{RUN_NAME} to end", timeout=timeout)
    ended = observer.seen.phases[-1][0]
    # One answer after the end closes the last silence (the app is available by then).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(t > ended for t in probe.answered):
        time.sleep(0.05)
    probe.stop()
    observer.stop()
    seen = observer.seen
    say(f"run ended: {seen.phases[-1][1]}: {seen.status.get('message', '')}")
    return RunResult(applied, apply_returned, seen, probe.longest_silence(applied, time.monotonic()),
                     probe.attempts, operator.log_path, observer.watch_errors)

