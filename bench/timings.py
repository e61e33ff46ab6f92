"""Timings of one demo run against its physical limits, the same work done alone: reaction, downtime, backup.

`.venv/bin/python -m bench.timings [--posts 2000] [--repeat 3] [--path success|failure] [--output FILE]`

1. Deploys the demo blog (release 1.0 at blog 0002, 2 web replicas and a worker, N posts) in a fresh namespace
   `bench-<random>` with its own database, starts the operator as a local process for that namespace only and
   applies the demo's DjangoMigration (0002 -> 0005).
2. Follows the run through kubernetes watches in this process: the DjangoMigration, its Jobs (and their pods),
   the app's pods and Deployments. Every event is stamped with time.monotonic() when it arrives, so all times
   below are differences between events seen by the same clock. A prober asks the Ready web pods for
   GET /posts/count all along, which gives the downtime as a client sees it.
3. After the run, measures the same work alone with local processes on copies of a database in the same state
   (blog 0002, same posts): the operator's pg_dump (jobs.DUMP_FUNCTIONS), `pg_dump > backup.sql`, `pg_restore
   --list` and `manage.py migrate --noinput`, each --repeat times (median); then restores the operator's own dump into
   fresh databases with `pg_restore --single-transaction --exit-on-error --no-owner`.
4. Prints the tables and removes the namespace, the databases, the claim's folder and the temporary files.

`--path failure` runs the same with the app's drill `fail_atomic` installed: the migrate Job fails, the run
restores the database and starts the old app again; table 3 then sets the downtime against dump + the failing
migrate + restore.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
from kubernetes import config

from bench.baseline import alone
from bench.observe import operator_run
from bench.report import (
    Report,
    header,
    progress,
    report_backup,
    report_downtime,
    report_rehearsal,
    report_rollback,
    report_run,
)
from demo.stack import BlogStack, LocalOperator, drop_database, wait_for
from devcluster.cluster import Cluster
from django_migration_operator.jobs import BACKUP_MOUNT
from django_migration_operator.status import ConditionType, condition

FAILURE_DRILL = "fail_atomic"  # examples/blog/drills: an atomic migration that raises after its CreateModel
BACKUP_CLAIM = "blog-backups"  # BlogStack's claim
APP_PODS = "app.kubernetes.io/name=blog"  # the labels of BlogStack's web and worker pods


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


def stop_app(stack: BlogStack, say: Callable[[str], None]) -> None:
    """The app at zero before the alone steps, as during the run's: its worker counts the posts every 2 s, which at
    10M posts kept a core busy and made the dump and the migrate alone take 1.3-2x what they took in the run."""
    say("stopping the app for the alone steps")
    stack.kubectl("scale", "-n", stack.namespace, "deployment/web", "deployment/worker", "--replicas=0")
    wait_for(lambda: not stack.kubectl("get", "pods", "-n", stack.namespace, "-l", APP_PODS, "-o", "name").stdout,
             "the app's pods gone", timeout=60)


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
        run = operator_run(stack, api, operators, args.timeout, args.rehearse, progress)
        backup_path = str((run.seen.status.get("backup") or {}).get("path") or "")
        operator_dump = (cluster.layout.volume_claims / stack.namespace / BACKUP_CLAIM
                         / backup_path.removeprefix(BACKUP_MOUNT).lstrip("/")) if backup_path else None
        stop_app(stack, progress)
        measured = alone(cluster, stack.database, args.posts, args.repeat, workdir, databases, operator_dump,
                         progress)

        durations, _ = report_run(report, run)
        (report_rollback if failure else report_downtime)(report, run, durations, measured)
        report_backup(report, run, durations, measured)
        if args.rehearse:
            report_rehearsal(report, run)
        if run.watch_errors:
            report.line()
            report.line("watch errors (resumed): " + "; ".join(run.watch_errors))
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
