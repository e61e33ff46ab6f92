"""The demo blog stack on devcluster: database, Secret, backup claim, web and worker Deployments, sample data.

Used by the demo (`make demo`) and by the operator's end-to-end tests, so both run the same app the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import config
from kubernetes.client.exceptions import ApiException
from psycopg import sql

from devcluster.cluster import Cluster
from devcluster.config import REPO_ROOT
from django_migration_operator.wait import KubeSource, watch_run
from django_migration_operator.workflow import TERMINAL

CRD_FILE = "crds/djangomigrations.djangoops.dev.yaml"


@dataclass(frozen=True)
class BlogStack:
    cluster: Cluster
    namespace: str
    database: str  # the PostgreSQL database name
    web_replicas: int = 2
    worker_replicas: int = 1
    release: str = "1.0"  # the image tag the app runs before the migration
    drills: str = ""  # BLOG_DRILLS of the app (and so of the plan and migrate Jobs, which copy its pod template)

    @property
    def database_url(self) -> str:
        return self.cluster.database_url(self.database)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def apply(self, *manifests: dict[str, Any]) -> None:
        self.cluster.apply(self.namespace, *manifests)

    def watch_run(self, name: str, timeout: float) -> Iterator[dict[str, Any]]:
        """The DjangoMigration `name` at each change for `timeout` seconds, through the waiter's watch: a phase of a
        few tens of milliseconds, such as Verifying, would slip between two polls. Fails if the run is not there."""
        api = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        for seen in watch_run(KubeSource(self.namespace, name, api), timeout):
            if seen.run is None:
                raise RuntimeError(f"DjangoMigration {self.namespace}/{name} "
                                   f"{'was deleted' if seen.deleted else 'not found'}")
            yield seen.run

    def prepare(self, posts: int = 200, migrate_to: str = "0002_populate_categories",
                say: Callable[[str], None] = print, copy_of: str | None = None) -> None:
        """The namespace, the database at `migrate_to` with sample posts, the Secret blog-db and the claim
        blog-backups: all but the app's Deployments. With `copy_of`, the database is a copy of that prepared one
        (CREATE DATABASE ... TEMPLATE), in a fraction of the setup Job's time."""
        create_database(self.cluster, self.database, template=copy_of)
        self.kubectl("apply", "-f", CRD_FILE)
        self.kubectl("create", "namespace", self.namespace)
        wait_for(lambda: self.kubectl("get", "serviceaccount", "default", "-n", self.namespace, check=False)
                 .returncode == 0, "the namespace's default ServiceAccount")
        say(f"namespace {self.namespace}: database {self.database}, Secret blog-db, claim blog-backups")
        self.apply(*self.database_objects())
        if copy_of:
            return
        say(f"preparing the database: migrate blog {migrate_to}, seed {posts} posts")
        setup = f"python manage.py migrate blog {migrate_to} --noinput && python manage.py seed_blog --posts {posts}"
        self.apply(self._job("blog-setup", ["sh", "-c", setup]))
        # COPY writes about 100k posts a second here: 10M took 100 s on a good day, more than 120 s on a slow one.
        timeout = max(120, posts // 25_000)
        self.kubectl("wait", "-n", self.namespace, "--for=condition=Complete", "job/blog-setup",
                     f"--timeout={timeout}s")

    def deploy(self, posts: int = 200, migrate_to: str = "0002_populate_categories",
               say: Callable[[str], None] = print) -> None:
        """Prepares the namespace and the database (`prepare`) and runs the app on it, ready."""
        self.prepare(posts, migrate_to, say)
        say(f"deploying web ({self.web_replicas} replicas) and worker ({self.worker_replicas}), image "
            f"blog:{self.release}")
        self.apply(self.web(), self.worker())
        for name in ("web", "worker"):
            self.kubectl("rollout", "status", "-n", self.namespace, f"deployment/{name}", "--timeout=120s")

    def drop(self) -> None:
        """Deletes the namespace, with everything in it (pods stopped), then the database."""
        self.kubectl("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=true", "--timeout=120s")
        drop_database(self.cluster, self.database)

    def database_objects(self) -> tuple[dict[str, Any], ...]:
        """The Secret with the app's DATABASE_URL and the claim the backups go into."""
        return ({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "blog-db"},
                 "stringData": {"DATABASE_URL": self.database_url}},
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "blog-backups"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})

    def web(self) -> dict[str, Any]:
        return _deployment("web", self.web_replicas, {
            "name": "django", "image": f"blog:{self.release}", "env": self._env(),
            "command": ["gunicorn", "blogsite.wsgi", "--bind", "$(POD_IP):8000", "--workers", "1", "--threads", "4"],
            "ports": [{"name": "http", "containerPort": 8000}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
            # A rolling update (an online run's) deletes a pod before every client has stopped sending to it: it
            # keeps serving for a moment, then gunicorn finishes what it has in hand on SIGTERM.
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
        })

    def worker(self) -> dict[str, Any]:
        # Stands for a Celery worker: a second Deployment that holds database connections and must stop too.
        loop = "import time\nfrom blog.models import Post\nwhile True:\n    Post.objects.count()\n    time.sleep(2)"
        return _deployment("worker", self.worker_replicas, {
            "name": "worker", "image": f"blog:{self.release}", "env": self._env(),
            "command": ["python", "manage.py", "shell", "-c", loop],
        })

    def migration(self, name: str = "blog-release-2", image: str = "blog:2.0", **spec: Any) -> dict[str, Any]:
        """The DjangoMigration of the demo: the release-2 image takes the database from 0002 to 0005."""
        body: dict[str, Any] = {
            "app": {"deployment": "web", "image": image, "stop": ["worker"]},
            "database": {"urlSecret": {"name": "blog-db", "key": "DATABASE_URL"}},
            "backup": {"volumeClaim": "blog-backups"},
            "verify": {"rowCounts": ["blog_post", "blog_category"],
                       "checks": [{"name": "posts have a category",
                                   "sql": "SELECT count(*) FROM blog_post WHERE category_id IS NULL",
                                   "expect": "0"}]},
        }
        for key, value in spec.items():
            body[key] = {**body[key], **value} if isinstance(value, dict) and key in body else value
        return {"apiVersion": "djangoops.dev/v1alpha1", "kind": "DjangoMigration",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": body}

    def _env(self) -> list[dict[str, Any]]:
        env: list[dict[str, Any]] = [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "blog-db", "key": "DATABASE_URL"}}},
        ]
        if self.drills:
            env.append({"name": "BLOG_DRILLS", "value": self.drills})
        return env

    def _job(self, name: str, command: list[str]) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
                    "name": "setup", "image": f"blog:{self.release}", "command": command, "env": self._env()}]}}}}


def _deployment(name: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "blog", "app.kubernetes.io/component": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 10, "containers": [container]}}}}


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.2) -> Any:
    """Polls `predicate` until it returns something truthy, and returns that; fails naming `what` after `timeout`
    seconds. A kubernetes client error (e.g. not created yet) counts as not yet."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ApiException as error:
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def wait_for_run(stack: BlogStack, name: str, until: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float) -> dict[str, Any]:
    """The run's status once `until` holds for it; fails naming `what` after `timeout` seconds, as `wait_for` does."""
    for run in stack.watch_run(name, timeout):
        status = dict(run.get("status") or {})
        if until(status):
            return status
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_end(stack: BlogStack, name: str, timeout: float = 240) -> dict[str, Any]:
    """The run's status once it Succeeded or Failed."""
    return wait_for_run(stack, name, lambda status: status.get("phase") in TERMINAL, f"DjangoMigration {name} to end",
                        timeout)


def create_database(cluster: Cluster, name: str, template: str | None = None) -> None:
    """A fresh database `name` on devcluster's PostgreSQL: one of that name is dropped first."""
    drop_database(cluster, name)
    with psycopg.connect(cluster.database_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)) + (
            sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")))


def drop_database(cluster: Cluster, name: str) -> None:
    """DROP DATABASE IF EXISTS ... WITH (FORCE): its connections are ended."""
    with psycopg.connect(cluster.database_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class LocalOperator:
    """The operator as a local process against devcluster (`python -m django_migration_operator`).

    `kill` is SIGKILL, as when a node dies: the failure drills restart it at any moment of a run.
    """

    def __init__(self, cluster: Cluster, log_name: str, namespaces: tuple[str, ...] = (),
                 options: tuple[str, ...] = ()) -> None:
        self.log_path = cluster.layout.log_file(log_name)
        self._env = {**cluster.tool_env(), "PYTHONPATH": f"{REPO_ROOT / 'operator'}{os.pathsep}{REPO_ROOT}"}
        self._arguments = [*(arg for namespace in namespaces for arg in ("--namespace", namespace)), *options]
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this start's lines begin: the log file is shared with earlier starts
        # A port of its own: pods and other local operators share this host's network.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.metrics_url = f"http://127.0.0.1:{probe.getsockname()[1]}/metrics"

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "django_migration_operator", "--liveness", "off",
                 "--metrics", self.metrics_url.removeprefix("http://").removesuffix("/metrics"), *self._arguments],
                env=self._env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)

    def wait_ready(self, timeout: float = 60) -> None:
        """Waits until kopf logged in (its watches start right after): what is applied next meets a running operator."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                if b"Initial authentication has finished" in log.read():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the operator did not log in within {timeout:.0f}s; see {self.log_path}")

    def usage(self) -> tuple[float, int]:
        """The running operator's CPU seconds (user and system) and peak resident memory in bytes, from /proc."""
        assert self._process is not None
        proc = Path("/proc") / str(self._process.pid)
        fields = (proc / "stat").read_text().rpartition(")")[2].split()  # from field 3 on: utime is 14, stime 15
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        peak = next(int(line.split()[1]) * 1024 for line in (proc / "status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
        return cpu, peak

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self._process is None:
            return
        self._process.send_signal(sig)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
