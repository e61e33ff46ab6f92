"""Helpers shared by the e2e scenarios."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg

from demo.stack import BlogStack, LocalOperator, wait_for_run
from demo.stack import wait_for as wait_for  # the scenarios import these from kit
from demo.stack import wait_for_end as wait_for_end
from devcluster.cluster import Cluster
from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import PHASES, Phase, phase_of

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


# --- the demo blog stack and its runs -------------------------------------------------------------------------


def make_stack(cluster: Cluster, namespace: str, posts: int = 120, migrate_to: str = "0002_populate_categories",
               **options: Any) -> BlogStack:
    stack = BlogStack(cluster, namespace=namespace, database=namespace.replace("-", "_"), **options)
    try:
        stack.deploy(posts=posts, migrate_to=migrate_to, say=lambda _: None)
    except BaseException:
        stack.drop()  # no fixture tears down what never was handed out
        raise
    return stack


def run_status(stack: BlogStack, name: str) -> dict[str, Any]:
    body = json.loads(stack.kubectl("get", "djm", name, "-n", stack.namespace, "-o", "json").stdout)
    return dict(body.get("status") or {})


def run_to_end(stack: BlogStack, manifest: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    stack.apply(manifest)
    return wait_for_end(stack, manifest["metadata"]["name"], timeout)


def wait_for_phase(stack: BlogStack, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    """The run's status once it is in `phase`."""
    return wait_for_run(stack, name, lambda status: status.get("phase") == phase, f"{name} to reach {phase}", timeout)


def reach(stack: BlogStack, name: str, target: str, timeout: float = 120) -> str:
    """Follows the run until it reached `target` or went past it, in the phase table's order; the phase it saw."""
    order: list[str] = list(PHASES)
    phase = Phase.PENDING
    for run in stack.watch_run(name, timeout):
        phase = phase_of(run.get("status") or RunStatus())
        if order.index(phase) >= order.index(target):
            return str(phase)  # its name, as the callers print and count it
    raise AssertionError(f"{name} did not reach {target} within {timeout:.0f}s (last seen: {phase})")


def events(stack: BlogStack, name: str) -> list[dict[str, Any]]:
    text = stack.kubectl("get", "events", "-n", stack.namespace, "--field-selector",
                         f"involvedObject.name={name}", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(text)["items"]
    return items


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.get("conditions", [])}


def jobs_ran_once(stack: BlogStack, name: str) -> dict[str, int]:
    """Each Job of the run: how many pods it ever ran (a Job created twice, or retried, shows more than one)."""
    items = json.loads(stack.kubectl("get", "jobs", "-n", stack.namespace, "-l", f"djangoops.dev/run={name}",
                                     "-o", "json").stdout)["items"]
    counts = {}
    for job in items:
        job_name = job["metadata"]["name"]
        pods = json.loads(stack.kubectl("get", "pods", "-n", stack.namespace, "-l", f"job-name={job_name}",
                                        "-o", "json").stdout)["items"]
        counts[job_name] = len(pods)
    return counts


def spec_replicas(stack: BlogStack) -> dict[str, int]:
    return {name: count for name, (count, _) in replicas(stack).items()}


def replicas(stack: BlogStack) -> dict[str, tuple[int, int]]:
    """Each Deployment: (spec.replicas, generation); the generation moves if anything scaled it."""
    items = json.loads(stack.kubectl("get", "deployments", "-n", stack.namespace, "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: (d["spec"]["replicas"], d["metadata"]["generation"]) for d in items}


def images(stack: BlogStack) -> dict[str, str]:
    """Each Deployment: the image of its first container (the demo's Deployments have one)."""
    items = json.loads(stack.kubectl("get", "deployments", "-n", stack.namespace, "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"] for d in items}


def running_images(stack: BlogStack) -> dict[str, set[str]]:
    """Each Deployment: the images its live pods run, as the kubelet reports them (not the template's wish)."""
    pods = json.loads(stack.kubectl("get", "pods", "-n", stack.namespace, "-l", "app.kubernetes.io/name=blog",
                                    "-o", "json").stdout)["items"]
    result: dict[str, set[str]] = {}
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        result.setdefault(component, set()).update(c["image"] for c in pod["spec"]["containers"])
    return result


def query(stack: BlogStack, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.database_url) as connection:
        return connection.execute(sql.encode()).fetchall()


def applied_migrations(stack: BlogStack, app: str = "blog") -> list[str]:
    rows = query(stack, f"SELECT name FROM django_migrations WHERE app = '{app}' ORDER BY id")
    return [name for (name,) in rows]


def checksum(stack: BlogStack) -> dict[str, str]:
    """Every table of the public schema: its columns and an md5 of its rows in primary-key order.

    Equal checksums before and after a run mean the same schema and the same data, row for row.
    """
    with psycopg.connect(stack.database_url) as connection:
        tables = [t for (t,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' ORDER BY 1")]
        result = {}
        for table in tables:
            columns = connection.execute(
                "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) "
                "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
                (table,)).fetchone()
            key = connection.execute(
                "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum)) "
                "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary", (f'public."{table}"',)).fetchone()
            order = key[0] if key and key[0] else "1"
            rows = connection.execute(
                f'SELECT md5(coalesce(string_agg(t::text, E\'\\n\' ORDER BY {order}), \'\')) '
                f'FROM public."{table}" t'.encode()).fetchone()
            result[table] = f"{columns[0] if columns else ''} | {rows[0] if rows else ''}"
        return result


def assert_no_secret(stack: BlogStack, operator: LocalOperator) -> None:
    """The database password is nowhere in the runs' status, the namespace's events, the Jobs or the operator log."""
    password = stack.cluster.postgres_password()
    for kind in ("djm", "events", "jobs"):
        text = stack.kubectl("get", kind, "-n", stack.namespace, "-o", "json").stdout
        assert password not in text, f"the database password leaked into {kind}"
    assert password.encode() not in operator.log_path.read_bytes(), "the database password leaked into the log"
