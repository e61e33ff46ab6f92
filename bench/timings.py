"""Timings of one demo run against the physical limits of SPEC §7: reaction, downtime, backup.

`.venv/bin/python -m bench.timings [--posts 2000] [--repeat 3] [--path success|failure] [--output FILE]`

1. Deploys the demo blog (release 1.0 at blog 0002, 2 web replicas and a worker, N posts) in a fresh namespace
   `bench-<random>` with its own database, starts the operator as a local process for that namespace only and
   applies the demo's DjangoMigration (0002 -> 0005).
2. Follows the run through kubernetes watches in this process: the DjangoMigration, its Jobs (and their pods),
   the app's pods and Deployments. Every event is stamped with time.monotonic() when it arrives, so all times
   below are differences between events seen by the same clock. A prober asks the Ready web pods for
   GET /posts/count all along, which gives the downtime as a client sees it.
3. After the run, measures the same work alone with local processes on copies of a database in the same state
   (blog 0002, same posts): `pg_dump --format=custom`, `pg_dump > backup.sql`, `pg_restore --list` and
   `manage.py migrate --noinput`, each --repeat times (median); then restores the operator's own dump into
   fresh databases with `pg_restore --single-transaction --exit-on-error --no-owner`.
4. Prints the tables and removes the namespace, the databases, the claim's folder and the temporary files.

`--path failure` runs the same with the app's drill `fail_atomic` installed: the migrate Job fails, the run
restores the database and starts the old app again; table 3 then sets the downtime against dump + the failing
migrate + restore.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster
from devcluster.config import REPO_ROOT
from django_migration_operator.jobs import BACKUP_MOUNT
from django_migration_operator.resource import GROUP, PLURAL, RUN_LABEL, STEP_LABEL, VERSION
from django_migration_operator.status import ConditionType, RunStatus, condition
from django_migration_operator.workflow import PHASES, TERMINAL

RUN_NAME = "blog-release-2"
FAILURE_DRILL = "fail_atomic"  # examples/blog/drills: an atomic migration that raises after its CreateModel
BACKUP_CLAIM = "blog-backups"  # BlogStack's claim
BLOG_DIR = REPO_ROOT / "examples" / "blog"
APP_NAME_LABEL = "app.kubernetes.io/name"
APP_COMPONENT_LABEL = "app.kubernetes.io/component"
JOB_PHASES = tuple(phase for phase, facts in PHASES.items() if facts.job)  # the phases that wait for a Job
WATCH_SERVER_TIMEOUT = 60
PROBE_PATH = "/posts/count"
PROBE_INTERVAL = 0.05


def progress(message: str) -> None:
    print(f"[bench {datetime.now(UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
    watch_errors: list[str] = field(default_factory=list)


Lister = Callable[..., Any]


class Observer:
    """Four watches in threads (run, Jobs, pods, Deployments of one namespace), stamping events on arrival.

    Each watch lists first and then watches from the list's resourceVersion, so nothing that happens after
    `start()` returns is missed; a watch that ends (server timeout) resumes from the last resourceVersion.
    """

    def __init__(self, api: client.ApiClient, namespace: str, run: str) -> None:
        self.namespace = namespace
        self.run = run
        self.seen = Observations()
        self._api = api
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        self._streams: list[tuple[str, Lister, tuple[Any, ...], Callable[[str, dict[str, Any], float], None]]] = [
            ("djangomigrations", custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL),
             self._on_run),
            ("jobs", client.BatchV1Api(api).list_namespaced_job, (namespace,), self._on_job),
            ("pods", core.list_namespaced_pod, (namespace,), self._on_pod),
            ("deployments", client.AppsV1Api(api).list_namespaced_deployment, (namespace,), self._on_deployment),
        ]

    def start(self) -> None:
        ready = threading.Barrier(len(self._streams) + 1)
        for name, lister, args, handler in self._streams:
            thread = threading.Thread(target=self._follow, args=(name, lister, args, handler, ready), daemon=True,
                                      name=f"watch-{name}")
            thread.start()
            self._threads.append(thread)
        ready.wait(timeout=60)  # every watch has listed once

    def stop(self) -> None:
        self._stop.set()

    def wait_for(self, predicate: Callable[[Observations], bool], what: str, timeout: float) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: predicate(self.seen), timeout=timeout):
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; phases seen: "
                                   f"{[phase for _, phase in self.seen.phases]}")

    def serving_web_ips(self) -> list[str]:
        """The web pods a Service would send requests to: Ready, not terminating."""
        with self._lock:
            return [p.ip for p in self.seen.pods.values()
                    if not p.job_pod and p.component == "web" and p.ip and p.ready and not p.terminating
                    and p.deleted is None]

    # --- the watch loop ---------------------------------------------------------------------------------

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
            self.seen.watch_errors.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
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

    def _on_run(self, kind: str, raw: dict[str, Any], now: float) -> None:
        if raw.get("metadata", {}).get("name") != self.run or kind == "DELETED":
            return
        seen = self.seen
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
        record = self.seen.jobs.setdefault(metadata["name"], JobRecord(metadata["name"], labels.get(STEP_LABEL, "?"),
                                                                       now))
        for job_condition in (raw.get("status") or {}).get("conditions") or []:
            if (record.criteria_met is None and job_condition.get("status") == "True"
                    and job_condition.get("type") in ("SuccessCriteriaMet", "FailureTarget")):
                record.criteria_met = now
            if (record.finished is None and job_condition.get("status") == "True"
                    and job_condition.get("type") in ("Complete", "Failed")):
                record.finished, record.outcome = now, job_condition["type"]

    def _on_pod(self, kind: str, raw: dict[str, Any], now: float) -> None:
        metadata, status = raw.get("metadata", {}), raw.get("status") or {}
        labels = metadata.get("labels") or {}
        if labels.get(RUN_LABEL) == self.run:
            component, job_pod = labels.get(STEP_LABEL, "?"), True
        elif labels.get(APP_NAME_LABEL) == "blog":
            component, job_pod = labels.get(APP_COMPONENT_LABEL, "?"), False
        else:
            return
        pod = self.seen.pods.setdefault(metadata["name"], PodRecord(metadata["name"], component, job_pod, now))
        pod.ip = status.get("podIP") or pod.ip
        pod.ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        pod.terminating = bool(metadata.get("deletionTimestamp"))
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
        # The operator's own test (kube.deployment_state and workflow._scaling_up).
        ready = (status.get("observedGeneration", 0) >= metadata.get("generation", 0)
                 and status.get("updatedReplicas", 0) >= replicas and status.get("replicas", 0) == replicas
                 and status.get("availableReplicas", 0) >= replicas)
        self.seen.deployments.append(DeploymentEvent(now, metadata["name"], replicas, ready))


# --- what a client of the app saw ---------------------------------------------------------------------------


class HttpProbe:
    """Asks the Ready web pods for GET /posts/count every 50 ms; remembers when one answered 200."""

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


def operator_run(stack: BlogStack, api: client.ApiClient, operators: list[LocalOperator],
                 timeout: float, rehearse: bool = False) -> RunResult:
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
    observer.wait_for(lambda _: bool(observer.serving_web_ips()), "a Ready web pod", timeout=30)
    time.sleep(1)
    progress(f"kubectl apply DjangoMigration {RUN_NAME} (operator log: {operator.log_path})")
    applied = time.monotonic()
    stack.apply(stack.migration(RUN_NAME, rehearsal={"enabled": rehearse}))
    apply_returned = time.monotonic()
    observer.wait_for(lambda seen: bool(seen.phases) and seen.phases[-1][1] in TERMINAL, f"{RUN_NAME} to end",
                      timeout=timeout)
    ended = observer.seen.phases[-1][0]
    # One answer after the end closes the last silence (the app is available by then).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(t > ended for t in probe.answered):
        time.sleep(0.05)
    probe.stop()
    observer.stop()
    seen = observer.seen
    progress(f"run ended: {seen.phases[-1][1]}: {seen.status.get('message', '')}")
    return RunResult(applied, apply_returned, seen, probe.longest_silence(applied, time.monotonic()),
                     probe.attempts, operator.log_path)


# --- the same work alone, as local processes ----------------------------------------------------------------


@dataclass
class AloneResult:
    dump_custom: list[float] = field(default_factory=list)
    dump_plain: list[float] = field(default_factory=list)
    restore_list: list[float] = field(default_factory=list)
    migrate: list[float] = field(default_factory=list)
    size_custom: list[int] = field(default_factory=list)
    size_plain: list[int] = field(default_factory=list)
    restore_custom: list[float] = field(default_factory=list)
    restore_plain: list[float] = field(default_factory=list)
    restore_source: str = ""
    notes: list[str] = field(default_factory=list)


def run_quiet(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              stdout: Any = subprocess.DEVNULL) -> float:
    """Runs a command and returns its wall time; a failure never shows the command line (it holds the URL)."""
    started = time.perf_counter()
    result = subprocess.run(list(command), env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} {command[1] if len(command) > 1 else ''} failed "
                           f"({result.returncode}): {result.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def blog_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BLOG_RELEASE", "BLOG_DRILLS")}
    return {**env, "DATABASE_URL": database_url, "BLOG_RELEASE": "2", "PYTHONUNBUFFERED": "1"}


def manage(cluster: Cluster, database: str, *arguments: str) -> float:
    return run_quiet([sys.executable, "manage.py", *arguments], env=blog_env(cluster.database_url(database)),
                     cwd=BLOG_DIR)


def create_database(cluster: Cluster, name: str, created: list[str], template: str | None = None) -> None:
    with psycopg.connect(cluster.database_url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        created.append(name)
        admin.execute(f'CREATE DATABASE "{name}"{f" TEMPLATE {template}" if template else ""}'.encode())


def drop_database(cluster: Cluster, name: str) -> None:
    with psycopg.connect(cluster.database_url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def scalar(cluster: Cluster, database: str, sql: str) -> Any:
    with psycopg.connect(cluster.database_url(database)) as connection:
        row = connection.execute(sql.encode()).fetchone()
        return row[0] if row else None


def alone(cluster: Cluster, base: str, posts: int, repeat: int, workdir: Path, created: list[str],
          operator_dump: Path | None) -> AloneResult:
    result = AloneResult()
    template = f"{base}_state0002"
    progress(f"alone: database {template} at blog 0002 with {posts} posts (local manage.py, BLOG_RELEASE=2)")
    create_database(cluster, template, created)
    manage(cluster, template, "migrate", "blog", "0002_populate_categories", "--noinput")
    manage(cluster, template, "seed_blog", "--posts", str(posts))
    result.notes.append(f"state copied for every repetition: {template} (blog 0002, "
                        f"{scalar(cluster, template, 'SELECT count(*) FROM blog_post')} posts)")
    for number in range(repeat):
        name = f"{base}_alone{number}"
        create_database(cluster, name, created, template=template)
        url = cluster.database_url(name)
        custom, plain = workdir / f"alone{number}.dump", workdir / f"alone{number}.sql"
        # Alternated, so that neither dump always profits from the other's warm cache.
        for kind in (("custom", "plain") if number % 2 == 0 else ("plain", "custom")):
            if kind == "custom":
                result.dump_custom.append(run_quiet(["pg_dump", "--format=custom", f"--file={custom}",
                                                     f"--dbname={url}"]))
            else:
                with plain.open("wb") as output:  # the migration guide's `pg_dump > backup.sql`
                    result.dump_plain.append(run_quiet(["pg_dump", f"--dbname={url}"], stdout=output))
        result.size_custom.append(custom.stat().st_size)
        result.size_plain.append(plain.stat().st_size)
        result.restore_list.append(run_quiet(["pg_restore", "--list", str(custom)]))
        result.migrate.append(manage(cluster, name, "migrate", "--noinput"))
        latest = scalar(cluster, name, "SELECT max(name) FROM django_migrations WHERE app = 'blog'")
        if number == 0:
            result.notes.append(f"alone migrate ends at blog {latest}")
        drop_database(cluster, name)
        progress(f"alone {number + 1}/{repeat}: pg_dump -Fc {result.dump_custom[-1]:.2f}s, "
                 f"plain {result.dump_plain[-1]:.2f}s, migrate {result.migrate[-1]:.2f}s")

    source = operator_dump if operator_dump and operator_dump.exists() else workdir / "alone0.dump"
    result.restore_source = (f"the operator's dump ({source.name}, {source.stat().st_size} bytes)"
                             if source == operator_dump else f"an alone custom dump ({source.name}; the operator's "
                             "was not found)")
    for number in range(repeat):
        name = f"{base}_restore{number}"
        create_database(cluster, name, created)
        result.restore_custom.append(run_quiet(["pg_restore", "--single-transaction", "--exit-on-error",
                                                "--no-owner", f"--dbname={cluster.database_url(name)}",
                                                str(source)]))
        restored = scalar(cluster, name, "SELECT count(*) FROM blog_post")
        drop_database(cluster, name)
        name = f"{base}_psql{number}"
        create_database(cluster, name, created)
        result.restore_plain.append(run_quiet(["psql", "--no-psqlrc", "--quiet", "--single-transaction",
                                               "--set=ON_ERROR_STOP=1", f"--dbname={cluster.database_url(name)}",
                                               f"--file={workdir / 'alone0.sql'}"]))
        drop_database(cluster, name)
        if number == 0:
            result.notes.append(f"the restored custom dump holds {restored} posts")
        progress(f"restore {number + 1}/{repeat}: pg_restore {result.restore_custom[-1]:.2f}s, "
                 f"psql {result.restore_plain[-1]:.2f}s")
    drop_database(cluster, template)
    return result


# --- the report ---------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
              notes: Sequence[str] = ()) -> None:
        widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

        def render(row: Sequence[str]) -> str:
            cells = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i])
                     for i, cell in enumerate(row)]
            return "  ".join(cells).rstrip()

        self.line()
        self.line(title)
        self.line("-" * len(title))
        self.line(render(headers))
        self.line(render(["-" * w for w in widths]))
        for row in rows:
            self.line(render(row))
        for note in notes:
            self.line(f"  {note}")


def sec(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def phase_at(phases: Sequence[tuple[float, str]], moment: float) -> int:
    """The index of the phase current at `moment`."""
    index = 0
    for number, (start, _) in enumerate(phases):
        if start <= moment:
            index = number
    return index


def all_ready_at(events: Sequence[DeploymentEvent], replicas: dict[str, int], after: float) -> float | None:
    """When every recorded Deployment was first back at its replicas and ready, at or after `after`."""
    latest: dict[str, DeploymentEvent] = {}
    for event in events:
        latest[event.name] = event
        if event.at >= after and all(name in latest and latest[name].replicas == count and latest[name].ready
                                     for name, count in replicas.items()):
            return event.at
    return None


def report_run(report: Report, run: RunResult) -> tuple[dict[str, float], list[float]]:
    """Tables 1 and 2; returns the phases' durations and the Job reactions."""
    seen = run.seen
    phases = seen.phases
    added = seen.run_added or run.applied
    rows = [["kubectl apply (process start to exit)", "0.00", sec(run.apply_returned - run.applied)],
            ["object ADDED (seen by the watch)", sec(added - run.applied), "-"]]
    if seen.run_first_modified is not None:
        rows.append(["first write by the operator (finalizer)", sec(seen.run_first_modified - run.applied),
                     sec(seen.run_first_modified - added)])
    first_phase = phases[1][0] if len(phases) > 1 else None
    rows.append(["reaction to apply: ADDED -> first phase", sec(first_phase - run.applied) if first_phase else "-",
                 sec(first_phase - added) if first_phase else "-"])
    durations: dict[str, float] = {}
    for number, (start, phase) in enumerate(phases):
        if number == 0:
            continue  # Pending: from ADDED to the first phase, the row above
        if number + 1 < len(phases):
            durations[phase] = phases[number + 1][0] - start
            rows.append([f"phase {phase}", sec(start - run.applied), sec(durations[phase])])
        else:
            rows.append([f"phase {phase} (end)", sec(start - run.applied), "-"])
    end = phases[-1][0]
    rows.append(["total: apply -> end", "", sec(end - run.applied)])
    rows.append(["total: ADDED -> end", "", sec(end - added)])
    report.table("1. One run, step by step (watch arrival times; at = seconds since kubectl apply started)",
                 ["step", "at (s)", "duration (s)"], rows,
                 [f"phases seen: {' -> '.join(p for _, p in phases)}; result: {seen.status.get('message', '')}"])

    rows = []
    reactions: list[float] = []
    for job in sorted(seen.jobs.values(), key=lambda j: j.added):
        index = phase_at(phases, job.added)
        phase_start, phase = phases[index]
        following = phases[index + 1] if index + 1 < len(phases) else None
        pod = next((p for p in seen.pods.values() if p.job_pod and p.component == job.step), None)
        # The first sign the step is done: the operator acts on a succeeded pod without waiting for the Job
        # controller's condition (which lags by up to its 1 s sync batch), and on a failed one after it.
        done = [t for t in (pod.ended if pod else None, job.finished) if t is not None]
        reaction = following[0] - min(done) if following and done else None
        if reaction is not None:
            reactions.append(reaction)
        rows.append([job.name, phase, sec(job.added - phase_start),
                     sec(pod.added - job.added) if pod else "-",
                     sec(pod.running - pod.added) if pod and pod.running else "-",
                     sec(pod.ended - pod.running) if pod and pod.ended and pod.running else "-",
                     sec(job.finished - pod.ended) if pod and pod.ended and job.finished else "-",
                     f"{job.outcome or 'running'}", sec(reaction),
                     following[1] if following else "-"])
    headers = ["Job", "phase", "phase->Job", "Job->pod", "pod->Running", "Running->end", "pod end->cond.",
               "condition", "REACTION", "next phase"]
    notes = ["REACTION = the Job's pod ended or its Complete/Failed condition, whichever was seen first -> the run's "
             "next phase seen (all by watches here)",
             "phase->Job: the operator creating the Job; Job->pod: the Job controller; pod->Running: the kubelet; "
             "Running->end: the work (process start included); pod end->cond.: the Job controller"]
    if reactions:
        notes.append(f"max REACTION over the Jobs: {max(reactions):.2f} s (goal: ~1 s or less)")
    controller = []
    for job in sorted(seen.jobs.values(), key=lambda j: j.added):
        pod = next((p for p in seen.pods.values() if p.job_pod and p.component == job.step), None)
        if pod and pod.ended and job.finished:
            met = f"{job.criteria_met - pod.ended:.2f}" if job.criteria_met else "-"
            controller.append(f"{job.step} {met}/{job.finished - pod.ended:.2f}")
    if controller:
        notes.append("pod end -> SuccessCriteriaMet/Complete seen: " + ", ".join(controller)
                     + " s (kube-controller-manager batches a Job's pod updates: SyncJobBatchPeriod = 1 s)")

    # The two steps that wait for pods and Deployments rather than a Job.
    other: list[str] = []
    down = next((n for n, (_, p) in enumerate(phases) if p == "ScalingDown"), None)
    scaling_down = phases[down][0] if down is not None else None
    backing_up = phases[down + 1][0] if down is not None and down + 1 < len(phases) else None
    app_pods = [p for p in seen.pods.values() if not p.job_pod and p.deleted is not None and scaling_down is not None
                and p.deleted >= scaling_down]
    if backing_up is not None and app_pods:
        last_gone = max(p.deleted for p in app_pods if p.deleted is not None)
        other.append(f"last app pod deleted -> next phase (ScalingDown ends): {backing_up - last_gone:.2f} s "
                     f"({len(app_pods)} pods; ScalingDown took {backing_up - (scaling_down or backing_up):.2f} s)")
    scaling_up = next((t for t, p in phases if p == "ScalingUp"), None)
    if scaling_up is not None:
        ready = all_ready_at(seen.deployments, dict(seen.status.get("replicas") or {}), scaling_up)
        if ready is not None:
            other.append(f"Deployments back and available -> {phases[-1][1]}: {end - ready:.2f} s "
                         f"(ScalingUp took {end - scaling_up:.2f} s, of which the app starting "
                         f"{ready - scaling_up:.2f} s)")
    report.table("2. Reaction between steps (a child Job ends -> the run's next phase)", headers, rows,
                 [*notes, *other])
    return durations, reactions


Part = tuple[str, float, str]  # (what, seconds, detail): one term of a physical limit


def report_against_limit(report: Report, title: str, run: RunResult, durations: dict[str, float],
                         parts: Sequence[Part], limit_name: str, phases: Sequence[tuple[str, float | None]],
                         note: str) -> None:
    """Table 3: the run's downtime, as status says and as HTTP clients saw it, against the sum of `parts`."""
    downtime = float(run.seen.status.get("downtimeSeconds") or 0.0)
    limit = sum(seconds for _, seconds, _ in parts)
    rows = [["status.downtimeSeconds (stoppedAt -> app available again)", sec(downtime), ""]]
    if run.http_silence:
        gap, start, stop = run.http_silence
        rows.append(["HTTP: longest time no Ready web pod answered GET /posts/count", sec(gap),
                     f"{start - run.applied:.1f}s -> {stop - run.applied:.1f}s"])
    rows += [[what, sec(seconds), detail] for what, seconds, detail in parts]
    rows += [
        [f"physical limit = {limit_name}", sec(limit), ""],
        ["ratio downtime / limit", f"{downtime / limit:.2f}x" if limit else "-", ""],
        ["operator overhead = downtime - limit", sec(downtime - limit), ""],
    ]
    if run.http_silence and limit:
        rows.append(["ratio HTTP silence / limit", f"{run.http_silence[0] / limit:.2f}x", ""])
    for phase, alone_time in phases:
        if phase in durations:
            against = f"alone {alone_time:.2f}s, +{durations[phase] - alone_time:.2f}s" if alone_time else ""
            rows.append([f"  in the run: phase {phase}", sec(durations[phase]), against])
    report.table(title, ["", "seconds", "detail"], rows,
                 [f"{note}. HTTP probe: {run.probe_attempts} rounds every {PROBE_INTERVAL * 1000:.0f} ms"])


def report_downtime(report: Report, run: RunResult, durations: dict[str, float], alone: AloneResult) -> None:
    dump, migrate = median(alone.dump_custom), median(alone.migrate)
    parts = [(f"pg_dump --format=custom alone (median of {len(alone.dump_custom)})", dump, spread(alone.dump_custom)),
             (f"manage.py migrate --noinput alone (median of {len(alone.migrate)})", migrate, spread(alone.migrate))]
    report_against_limit(
        report, "3. Downtime against the physical limit (SPEC §7)", run, durations, parts, "dump + migrate",
        [("ScalingDown", None), ("BackingUp", dump), ("Migrating", migrate), ("Verifying", None), ("ScalingUp", None)],
        "downtime = stoppedAt -> ScalingUp done; the phases above add up to it (stoppedAt is written at the start "
        "of ScalingDown)")


def report_rollback(report: Report, run: RunResult, durations: dict[str, float], alone: AloneResult) -> None:
    """The failure path: the downtime of a run that restores the database, against dump + failure + restore."""
    migrate_pod = next((p for p in run.seen.pods.values() if p.job_pod and p.component == "migrate"), None)
    failed_migrate = (migrate_pod.ended - migrate_pod.running
                      if migrate_pod and migrate_pod.ended and migrate_pod.running else 0.0)
    dump, restore = median(alone.dump_custom), median(alone.restore_custom)
    rolled_back = condition(run.seen.status, ConditionType.ROLLED_BACK).get("status", "-")
    parts = [(f"pg_dump --format=custom alone (median of {len(alone.dump_custom)})", dump, spread(alone.dump_custom)),
             ("the failing migrate, as it ran in its Job (pod Running -> end)", failed_migrate, ""),
             (f"pg_restore --single-transaction alone (median of {len(alone.restore_custom)})", restore,
              spread(alone.restore_custom))]
    report_against_limit(
        report, "3. Rollback: downtime of a failed run against the physical limit", run, durations, parts,
        "dump + failing migrate + restore",
        [("ScalingDown", None), ("BackingUp", dump), ("Migrating", None), ("Restoring", restore), ("ScalingUp", None)],
        f"RolledBack={rolled_back}; Restoring = drop and recreate the database, then pg_restore --single-transaction "
        "--exit-on-error in a Job; the alone restore goes into a fresh empty database")


def report_backup(report: Report, run: RunResult, durations: dict[str, float], alone: AloneResult) -> None:
    backup = run.seen.status.get("backup") or {}
    size = int(backup.get("sizeBytes") or 0)
    custom_time, plain_time = median(alone.dump_custom), median(alone.dump_plain)
    custom_size, plain_size = int(median(alone.size_custom)), int(median(alone.size_plain))
    restore, plain_restore = median(alone.restore_custom), median(alone.restore_plain)
    n = len(alone.dump_custom)
    rows = [
        ["operator: BackingUp phase (Job, pg_dump -Fc, pg_restore --list)", sec(durations.get("BackingUp")),
         str(size), f"{backup.get('format')}, verified {backup.get('verified')}"],
        [f"pg_dump --format=custom alone (median of {n})", sec(custom_time), str(custom_size),
         spread(alone.dump_custom)],
        [f"pg_dump > backup.sql alone, the guide's (median of {n})", sec(plain_time), str(plain_size),
         spread(alone.dump_plain)],
        [f"pg_restore --list alone, the operator's check (median of {n})", sec(median(alone.restore_list)), "",
         spread(alone.restore_list)],
        ["ratio operator dump / plain (size)", "", f"{size / plain_size:.2f}x" if plain_size else "-", ""],
        ["ratio custom / plain alone (time, size)", f"{custom_time / plain_time:.2f}x",
         f"{custom_size / plain_size:.2f}x", ""],
        ["ratio operator BackingUp phase / plain pg_dump (time)",
         f"{durations['BackingUp'] / plain_time:.2f}x" if "BackingUp" in durations else "-", "", ""],
        [f"pg_restore --single-transaction --exit-on-error --no-owner (median of {len(alone.restore_custom)})",
         sec(restore), "", spread(alone.restore_custom)],
        [f"psql --single-transaction -f backup.sql, the plain restore (median of {len(alone.restore_plain)})",
         sec(plain_restore), "", spread(alone.restore_plain)],
    ]
    report.table("4. Backup: the operator's custom dump against the guide's `pg_dump > backup.sql`",
                 ["", "seconds", "bytes", "detail"], rows,
                 [f"restored: {alone.restore_source}, each time into a fresh empty database", *alone.notes])


# --- main ---------------------------------------------------------------------------------------------------


def cleanup(stack: BlogStack, operators: list[LocalOperator], databases: list[str],
            workdir: Path | None = None) -> None:
    progress(f"cleaning up: namespace {stack.namespace}, {len(databases) + 1} databases")
    # While the operator still runs: it removes its finalizer from the DjangoMigration, so the namespace can go.
    deleted = stack.kubectl("delete", "namespace", stack.namespace, "--ignore-not-found", "--wait=true",
                            "--timeout=120s", check=False)
    for operator in operators:
        operator.stop()
    if deleted.returncode != 0:
        progress(f"namespace deletion: {deleted.stderr.strip()}; removing finalizers and waiting again")
        names = stack.kubectl("get", "djm", "-n", stack.namespace, "-o", "name", check=False).stdout.split()
        for name in names:
            stack.kubectl("patch", "-n", stack.namespace, name, "--type=merge", "-p",
                          '{"metadata":{"finalizers":null}}', check=False)
        stack.kubectl("wait", "--for=delete", f"namespace/{stack.namespace}", "--timeout=120s", check=False)
    for name in [stack.database, *databases]:
        with contextlib.suppress(psycopg.Error):
            drop_database(stack.cluster, name)
    claim_folder = stack.cluster.layout.volume_claims / stack.namespace
    if stack.namespace.startswith("bench-") and claim_folder.is_dir():
        shutil.rmtree(claim_folder, ignore_errors=True)  # the backup claim's folder, kept by devcluster
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def bench_stack(cluster: Cluster, web: int, worker: int, drills: str) -> Iterator[
        tuple[BlogStack, list[LocalOperator], list[str], Path]]:
    suffix = secrets.token_hex(3)
    stack = BlogStack(cluster, namespace=f"bench-{suffix}", database=f"bench_{suffix}", web_replicas=web,
                      worker_replicas=worker, drills=drills)
    operators: list[LocalOperator] = []
    databases: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-timings-"))
    try:
        yield stack, operators, databases, workdir
    finally:
        cleanup(stack, operators, databases, workdir)


def header(report: Report, stack: BlogStack, posts: int) -> None:
    tools = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    versions = json.loads(stack.kubectl("version", "-o", "json", check=False).stdout or "{}")
    kubernetes = (versions.get("serverVersion") or {}).get("gitVersion", "?")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    report.line(f"bench.timings  {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  {platform.node()}  "
                f"{os.cpu_count()} CPUs, load average {load} at the start")
    report.line(f"devcluster Kubernetes {kubernetes}, {tools}, Python {platform.python_version()}")
    failing = f"; drill {stack.drills}: the migrate Job fails, the run restores" if stack.drills else ""
    report.line(f"run: DjangoMigration {RUN_NAME} (BlogStack.migration(): blog 0002 -> 0005, image blog:2.0{failing}), "
                f"{stack.web_replicas} web replicas + {stack.worker_replicas} worker, {posts} posts, "
                f"namespace {stack.namespace}")


def report_rehearsal(report: Report, run: RunResult) -> None:
    """Table 5: the rehearsal's predicted downtime against the run's real one (issue 11: within 25%)."""
    rehearsal = run.seen.status.get("rehearsal") or {}
    real = float(run.seen.status.get("downtimeSeconds") or 0.0)
    predicted = float(rehearsal.get("predictedDowntimeSeconds") or 0.0)
    error = (predicted - real) / real if real else 0.0
    rows = [
        ["rehearsal: pg_dump on the copy", sec(rehearsal.get("dumpSeconds")), ""],
        ["rehearsal: migrate on the copy (Django start included)", sec(rehearsal.get("migrateSeconds")), ""],
        ["rehearsal: predicted downtime", sec(predicted), "dump + migrate + 3 s for pods"],
        ["status.downtimeSeconds of the run", sec(real), ""],
        ["prediction error (predicted - real) / real", f"{error:+.0%}",
         "goal: within 25%: " + ("holds" if abs(error) <= 0.25 else "MISSED")],
    ]
    report.table("5. Rehearsal: predicted against real downtime", ["", "seconds", "detail"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timings", description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000, help="posts in the database (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the alone measurements (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the run may take (default 600)")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--path", choices=("success", "failure"), default="success",
                        help="success: the demo migration (default); failure: the same with a migration that fails "
                             f"(drill {FAILURE_DRILL}), restored from the backup")
    parser.add_argument("--rehearse", action="store_true",
                        help="rehearse the run on a scratch copy first and compare its predicted downtime")
    args = parser.parse_args(argv)
    failure = args.path == "failure"

    cluster = Cluster(log=progress)
    cluster.up()
    report = Report()
    with bench_stack(cluster, web=2, worker=1, drills=FAILURE_DRILL if failure else "") as (
            stack, operators, databases, workdir):
        progress(f"deploying the blog in namespace {stack.namespace}, database {stack.database}, {args.posts} posts")
        stack.deploy(posts=args.posts, say=progress)
        header(report, stack, args.posts)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        run = operator_run(stack, api, operators, args.timeout, args.rehearse)
        backup_path = str((run.seen.status.get("backup") or {}).get("path") or "")
        operator_dump = (cluster.layout.volume_claims / stack.namespace / BACKUP_CLAIM
                         / backup_path.removeprefix(BACKUP_MOUNT).lstrip("/")) if backup_path else None
        measured = alone(cluster, stack.database, args.posts, args.repeat, workdir, databases, operator_dump)

        durations, _ = report_run(report, run)
        (report_rollback if failure else report_downtime)(report, run, durations, measured)
        report_backup(report, run, durations, measured)
        if args.rehearse:
            report_rehearsal(report, run)
        if run.seen.watch_errors:
            report.line()
            report.line("watch errors (resumed): " + "; ".join(run.seen.watch_errors))
        rolled_back = condition(run.seen.status, ConditionType.ROLLED_BACK).get("status") == "True"
        as_expected = (run.seen.phases[-1][1] == "Failed" and rolled_back) if failure else (
            run.seen.phases[-1][1] == "Succeeded")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(report.lines) + "\n")
        progress(f"written to {args.output}")
    return 0 if as_expected else 1


if __name__ == "__main__":
    sys.exit(main())
