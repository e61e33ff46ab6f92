"""Faults around a run on devcluster: PostgreSQL stopping in the middle of a step, the kube-apiserver restarting.

Each trial stops a real component of devcluster (as `devcluster down` stops it) once the run reached a phase, and
starts it again some seconds later. It keeps writing through the app before and after the run, and takes a
checksum of every table before and after. Whatever the fault, the run ends in a state that says where the app and
the data are, the app runs with its replicas, and no acknowledged write is lost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from demo.load import LoadGenerator
from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster
from tests.e2e.kit import (
    applied_migrations,
    checksum,
    conditions,
    events,
    images,
    jobs_ran_once,
    query,
    reach,
    spec_replicas,
    wait_for,
    wait_for_end,
)

pytestmark = pytest.mark.e2e

RECORDED = {"web": 2, "worker": 1}
OLD = {"web": "blog:1.0", "worker": "blog:1.0"}
# Long enough that the step's pod meets the stopped server, and that the restore must wait for it.
OUTAGE_SECONDS = 10


def fault_trial(stack: BlogStack, cluster: Cluster, manifest: dict[str, Any], phase: str, component: str,
                during: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], dict[str, str], set[int]]:
    """Runs `manifest` under load; once it reached `phase`, `during` runs, then `component` is stopped for
    OUTAGE_SECONDS. Returns the run's end status, the checksums of the tables before, and the acknowledged posts,
    each checked to be in the database."""
    name = manifest["metadata"]["name"]
    before = checksum(stack)
    with LoadGenerator(stack) as load:
        wait_for(lambda: len(load.acknowledged) >= 5, "the app to acknowledge writes", timeout=30)
        stack.apply(manifest)
        reach(stack, name, phase)
        during()
        with cluster.stopped(component):
            time.sleep(OUTAGE_SECONDS)
        status = wait_for_end(stack, name, timeout=300)
        count = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= count + 3, "writes after the run", timeout=60)
    assert not load.missing(), f"acknowledged writes lost: {load.missing()}"
    assert spec_replicas(stack) == RECORDED and status["replicas"] == RECORDED, status.get("message")
    assert all(count == 1 for count in jobs_ran_once(stack, name).values()), jobs_ran_once(stack, name)
    print(f"\n{name}: {status['phase']}: {status['message']}")
    return status, before, set(load.acknowledged)


def assert_data_as_before(stack: BlogStack, before: dict[str, str], posts: int, written: set[int]) -> None:
    """Every table but blog_post as before the run; blog_post holds the old rows plus the acknowledged ones."""
    after = checksum(stack)
    assert {t: v for t, v in after.items() if t != "blog_post"} == {t: v for t, v in before.items()
                                                                     if t != "blog_post"}
    assert {post_id for (post_id,) in query(stack, "SELECT id FROM blog_post")} >= written
    assert query(stack, "SELECT count(*) FROM blog_post") == [(posts + len(written),)]
    assert applied_migrations(stack)[-1] == "0002_populate_categories"


def until_running(stack: BlogStack, job: str) -> Callable[[], None]:
    """Waits until the Job's pod runs: the server then stops under a step that has begun."""
    return lambda: wait_for(lambda: re.search(r"\bRunning\b", stack.kubectl(
        "get", "pods", "-n", stack.namespace, "-l", f"job-name={job}", "--no-headers").stdout),
        f"the pod of Job {job} to run", timeout=60, interval=0.05)


def test_postgres_stopping_before_the_backup_is_waited_for_and_the_run_goes_on(
        new_stack: Callable[..., BlogStack], cluster: Cluster) -> None:
    # Stopped while the app's pods stop: BackingUp's first look (the row counts) meets the stopped server.
    stack = new_stack()
    status, _, written = fault_trial(stack, cluster, stack.migration(name="wait-db"), "ScalingDown", "postgres")
    assert status["phase"] == "Succeeded", status["message"]
    unreachable = [e for e in events(stack, "wait-db") if e["reason"] == "DatabaseUnreachable"]
    assert unreachable and unreachable[0]["type"] == "Warning", [e["reason"] for e in events(stack, "wait-db")]
    assert "the database does not answer" in unreachable[0]["message"]
    assert applied_migrations(stack)[-1] == "0005_ensure_data_integrity"
    assert {post_id for (post_id,) in query(stack, "SELECT id FROM blog_post")} >= written


def test_postgres_stopping_in_the_middle_of_the_backup_fails_the_run_and_leaves_the_data_as_it_was(
        new_stack: Callable[..., BlogStack], cluster: Cluster) -> None:
    posts = 300_000  # a dump that lasts long enough to be cut off
    stack = new_stack(posts=posts)
    status, before, written = fault_trial(stack, cluster, stack.migration(name="dump-cut"), "BackingUp", "postgres",
                                          during=until_running(stack, "dump-cut-backup"))
    assert status["phase"] == "Failed", status["message"]
    assert status["failure"]["reason"] == "BackupFailed" and status["failure"]["step"] == "BackingUp"
    assert "no migration was attempted" in status["message"]
    assert conditions(status)["BackupTaken"] == "False"
    assert images(stack) == OLD
    assert_data_as_before(stack, before, posts, written)


def test_postgres_stopping_during_the_migration_is_restored_once_the_server_is_back(
        new_stack: Callable[..., BlogStack], cluster: Cluster) -> None:
    stack = new_stack()
    status, before, written = fault_trial(stack, cluster, stack.migration(name="migrate-cut"), "Migrating",
                                          "postgres")
    assert status["phase"] == "Failed", status["message"]
    assert status["failure"]["reason"] == "MigrationFailed" and status["failure"]["step"] == "Migrating"
    assert conditions(status)["RolledBack"] == "True"
    # The restore met the stopped server, waited for it and ran again from its DROP.
    assert status["restore"]["attempts"] >= 2, status["restore"]
    assert "the server went away during the restore" in status["message"]
    assert images(stack) == OLD
    assert_data_as_before(stack, before, 120, written)


def test_postgres_stopping_in_the_middle_of_the_restore_is_restored_again_once_the_server_is_back(
        new_stack: Callable[..., BlogStack], cluster: Cluster) -> None:
    posts = 300_000  # a restore that lasts long enough to be cut off
    stack = new_stack(drills="fail_atomic", posts=posts)
    status, before, written = fault_trial(stack, cluster, stack.migration(name="restore-cut"), "Restoring",
                                          "postgres", during=until_running(stack, "restore-cut-restore"))
    assert status["phase"] == "Failed", status["message"]
    assert status["failure"]["reason"] == "MigrationFailed"
    assert conditions(status)["RolledBack"] == "True"
    assert status["restore"]["attempts"] >= 2, status["restore"]
    log = stack.kubectl("logs", "-n", stack.namespace, "job/restore-cut-restore").stdout
    assert "attempt 1 broke off: the server went away" in log, log
    assert images(stack) == OLD
    assert_data_as_before(stack, before, posts, written)


def test_a_kube_apiserver_restart_during_a_run_is_waited_out_and_no_job_runs_twice(
        new_stack: Callable[..., BlogStack], cluster: Cluster, operator: LocalOperator) -> None:
    stack = new_stack()
    log_start = operator.log_path.stat().st_size
    status, _, written = fault_trial(stack, cluster, stack.migration(name="api-restart"), "BackingUp",
                                     "kube-apiserver")
    assert status["phase"] == "Succeeded", status["message"]
    assert applied_migrations(stack)[-1] == "0005_ensure_data_integrity"
    assert images(stack) == {"web": "blog:2.0", "worker": "blog:2.0"}
    assert {post_id for (post_id,) in query(stack, "SELECT id FROM blog_post")} >= written
    assert {"BackingUp", "Migrating", "PlanApplied"} <= {e["reason"] for e in events(stack, "api-restart")}
    # Whether the driver itself met the outage depends on when it looked (it sleeps until a Job's event or its
    # safety net); tests/operator/test_driver.py covers how it waits one out.
    with operator.log_path.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode(errors="replace")
    # Each line of a run names it: one operator drives the runs of every namespace.
    assert f"[{stack.namespace}/api-restart] phase BackingUp: " in text
    print(f"the driver met the outage {text.count('APIUnavailable')} times")
