"""Online runs on devcluster: the app keeps serving through backup, expand, rollout and contract.

The demo's release 3.0 is all expand and contract (a nullable subtitle, an index, then status dropped), so Auto
takes it online; release 2.0 has data migrations (RunPython) and goes offline (test_operator.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from demo.load import LoadGenerator
from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster
from django_migration_operator.jobs import LOCK_TIMEOUT_SECONDS
from tests.e2e.kit import (
    applied_migrations,
    checksum,
        images,
    make_stack,
    query,
    replicas,
    run_to_end,
    running_images,
    wait_for,
    wait_for_end,
    wait_for_phase,
)

RELEASE_3 = ["0006_post_subtitle", "0007_post_created_index", "0008_remove_post_status"]
# The seed's posts without a category came after 0005 here, so the demo's check does not hold; this one does.
NO_SUBTITLES = {"checks": [{"name": "no subtitles yet", "sql": "SELECT count(*) FROM blog_post WHERE subtitle IS NOT "
                                                              "NULL", "expect": "0"}]}


@pytest.fixture
def release_2(cluster: Cluster, operator: LocalOperator) -> Iterator[BlogStack]:
    """The demo app at release 2.0 on its full schema (0005): release 3.0's migrations are pending."""
    stack = make_stack(cluster, f"online-{uuid.uuid4().hex[:6]}", release="2.0",
                       migrate_to="0005_ensure_data_integrity")
    yield stack
    stack.drop()


def columns(stack: BlogStack) -> set[str]:
    return {name for (name,) in query(stack, "SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = 'blog_post'")}


def test_auto_takes_an_expand_and_contract_release_online_with_no_failed_request(release_2: BlogStack) -> None:
    stack = release_2
    with LoadGenerator(stack) as load:
        wait_for(lambda: len(load.acknowledged) >= 5, "the app to acknowledge writes", timeout=30)
        status = run_to_end(stack, stack.migration(name="release-3", image="blog:3.0", verify=NO_SUBTITLES))
        count = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= count + 5, "writes on release 3", timeout=60)

    assert status["phase"] == "Succeeded", status.get("message")
    assert status["strategy"] == "Online" and status["strategyReason"].startswith("Auto chose Online")
    assert [(m["name"], m["class"]) for m in status["plan"]] == list(zip(RELEASE_3, ["expand", "expand", "contract"],
                                                                         strict=True))
    assert status["downtimeSeconds"] == 0 and "replicas" not in status, "nothing was scaled"
    assert load.refused == 0, f"{load.refused} requests failed during an online run"
    assert not load.missing(), f"acknowledged writes lost: {load.missing()}"
    assert applied_migrations(stack)[-3:] == RELEASE_3
    assert "subtitle" in columns(stack) and "status" not in columns(stack)
    assert images(stack) == {"web": "blog:3.0", "worker": "blog:3.0"}
    assert running_images(stack) == {"web": {"blog:3.0"}, "worker": {"blog:3.0"}}
    assert status["backup"]["verified"] is True
    print(f"\nonline run under load: {len(load.acknowledged)} writes acknowledged, 0 failed, slowest answer "
          f"{load.slowest:.2f}s, downtime {status['downtimeSeconds']}s")


def test_an_online_migration_gives_up_on_a_lock_and_no_request_waits_longer_than_its_timeout(
        release_2: BlogStack) -> None:
    stack = release_2
    with LoadGenerator(stack) as load, psycopg.connect(stack.database_url) as holder:
        wait_for(lambda: len(load.acknowledged) >= 5, "the app to acknowledge writes", timeout=30)
        holder.execute("SELECT count(*) FROM blog_post")  # ACCESS SHARE until the rollback: ALTER TABLE waits
        stack.apply(stack.migration(name="locked", image="blog:3.0", verify=NO_SUBTITLES))
        wait_for_phase(stack, "locked", "Migrating")  # the expand step
        time.sleep(3 * LOCK_TIMEOUT_SECONDS)  # long enough for an attempt to give up
        holder.rollback()
        status = wait_for_end(stack, "locked")
        count = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= count + 3, "writes after the run", timeout=60)

    assert status["phase"] == "Succeeded", status.get("message")
    assert "blog.0006_post_subtitle gave up waiting for a lock (attempt 1 of" in status["migrateOutput"]
    assert load.refused == 0 and not load.missing()
    assert load.slowest <= LOCK_TIMEOUT_SECONDS + 1, f"a request waited {load.slowest:.2f}s behind the migration"
    print(f"\nlocked table: slowest answer {load.slowest:.2f}s (lock timeout {LOCK_TIMEOUT_SECONDS}s)")


def test_an_online_run_whose_expand_migration_fails_never_stops_the_app(
        cluster: Cluster, operator: LocalOperator) -> None:
    stack = make_stack(cluster, f"online-{uuid.uuid4().hex[:6]}", drills="clash")
    try:
        before, generations = checksum(stack), replicas(stack)
        no_checks: dict[str, Any] = {"checks": []}
        status = run_to_end(stack, stack.migration(name="clash", strategy="Online", migrate={"app": "drill_clash"},
                                                   verify=no_checks))
        assert status["phase"] == "Failed" and status["conditions"][-1]["reason"] == "MigrationFailed"
        assert "already exists" in status["message"] and "kept serving" in status["message"]
        assert checksum(stack) == before, "PostgreSQL rolled the migration back: the database is as it was"
        assert replicas(stack) == generations, "the Deployments were never scaled or patched"
        assert images(stack) == {"web": "blog:1.0", "worker": "blog:1.0"}
    finally:
        stack.drop()
