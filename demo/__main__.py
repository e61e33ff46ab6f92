"""The main job: two releases of the demo blog, each a DjangoMigration from apply to Succeeded, shown live.

Brings devcluster up, deploys the demo blog (release 1.0 at migration 0002, 2 web replicas and a worker, sample
posts) and runs the operator. Release 2.0 (0003-0005, with data migrations the operator cannot judge) goes
Offline: the app stops, is backed up, migrated and started on 2.0. Release 3.0 (0006-0008: expand, expand,
contract) goes Online: the app keeps serving while it is backed up, expanded, rolled out to 3.0 and contracted.
Each phase is shown as it happens, and each run ends with a summary.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster
from django_migration_operator.workflow import TERMINAL

NAMESPACE = "blog-demo"


def main() -> int:
    started = time.monotonic()
    cluster = Cluster()
    step("1/5", "devcluster: a real kube-apiserver, controller-manager, etcd, kubelet and PostgreSQL")
    cluster.up()
    stack = BlogStack(cluster, namespace=NAMESPACE, database="blog_demo")
    step("2/5", "the demo blog app (release 1.0, database at blog 0002)")
    stack.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s")
    stack.deploy(say=lambda message: print(f"      {message}"))
    step("3/5", "the operator (python -m django_migration_operator against devcluster)")
    operator = LocalOperator(cluster, "operator-demo", namespaces=(NAMESPACE,))  # the demo's runs only
    operator.start()
    try:
        print(f"      log: {operator.log_path}")
        operator.wait_ready()
        step("4/5", "kubectl apply: DjangoMigration blog-release-2 (image blog:2.0, strategy Auto, rehearsed on a "
                    "copy first)")
        stack.apply(stack.migration(rehearsal={"enabled": True}))
        offline = follow(stack, "blog-release-2")
        summary(stack, offline)
        online: dict[str, Any] = {}
        if offline.get("phase") == "Succeeded":
            step("5/5", "kubectl apply: DjangoMigration blog-release-3 (image blog:3.0, strategy Auto)")
            stack.apply(stack.migration(name="blog-release-3", image="blog:3.0"))
            online = follow(stack, "blog-release-3")
            summary(stack, online)
    finally:
        operator.stop()
    print(f"\n{time.monotonic() - started:.0f}s in all, including cluster start and app deployment. The cluster keeps "
          f"running: `eval \"$(.venv/bin/devcluster env)\"; kubectl -n {NAMESPACE} get djm`; stop it with "
          "`.venv/bin/devcluster down`.")
    return 0 if offline.get("phase") == online.get("phase") == "Succeeded" else 1


def step(number: str, text: str) -> None:
    print(f"\n\033[1m[{number}] {text}\033[0m", flush=True)


def follow(stack: BlogStack, name: str, timeout: int = 600) -> dict[str, Any]:
    """Prints every phase as it starts, with the time since apply, until the run ends."""
    applied = time.monotonic()
    last_phase = None
    status: dict[str, Any] = {}
    for run in stack.watch_run(name, timeout):
        status = dict(run.get("status") or {})
        phase = status.get("phase", "Pending")
        if phase != last_phase:
            print(f"      {time.monotonic() - applied:6.1f}s  {phase:<16} {status.get('message', '')}", flush=True)
            last_phase = phase
        if phase in TERMINAL:
            return status
    raise TimeoutError(f"the run did not end within {timeout}s; last status: {json.dumps(status)}")


def summary(stack: BlogStack, status: dict[str, Any]) -> None:
    step("summary", f"{status.get('phase')}: {status.get('message', '')}")
    plan = status.get("plan", [])
    print(f"      strategy    {status.get('strategy')}: {status.get('strategyReason')}")
    print(f"      plan        {len(plan)} migrations:")
    for migration in plan:
        print(f"                  {migration['app']}.{migration['name']}: {migration.get('class')} "
              f"({migration.get('reason')})")
    backup = status.get("backup", {})
    print(f"      backup      {backup.get('path')} ({backup.get('sizeBytes', 0)} bytes, "
          f"{backup.get('format')} {backup.get('compression', '')}, verified: {backup.get('verified')})")
    for table, counts in status.get("rowCounts", {}).items():
        before = f"{counts['before']} before" if "before" in counts else "not counted before (the app kept writing)"
        print(f"      rows        {table}: {before}, {counts.get('after')} after")
    rehearsal = status.get("rehearsal")
    if rehearsal:
        print(f"      rehearsal   {rehearsal.get('outcome')} on a scratch copy: dump {rehearsal.get('dumpSeconds')}s, "
              f"migrate {rehearsal.get('migrateSeconds')}s, predicted downtime "
              f"{rehearsal.get('predictedDowntimeSeconds')}s")
    print(f"      downtime    {status.get('downtimeSeconds')}s (no pod serving to app available again)")
    deployments = json.loads(stack.kubectl("get", "deployments", "-n", stack.namespace, "-o", "json").stdout)
    replicas = ", ".join(f"{d['metadata']['name']} {d['status'].get('availableReplicas', 0)}/{d['spec']['replicas']}"
                         for d in deployments["items"])
    recorded = status.get("replicas") or "none: never scaled"
    print(f"      replicas    {replicas} (recorded before: {recorded})")
    images = ", ".join(f"{d['metadata']['name']} {d['spec']['template']['spec']['containers'][0]['image']}"
                       for d in deployments["items"])
    print(f"      release     {images} (recorded before: {status.get('images')})")


if __name__ == "__main__":
    sys.exit(main())
