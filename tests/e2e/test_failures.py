"""Failure paths on devcluster: whatever breaks, the data after equals the data before and the app is accounted for.

Each scenario takes a checksum of every table (columns, and rows in primary-key order) before the run and compares
it after. The failure drills of the demo app (examples/blog/drills) make real migrations fail in real ways.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from demo.load import LoadGenerator
from demo.stack import BlogStack, LocalOperator, drop_database
from devcluster.cluster import Cluster
from tests.e2e.kit import (
    applied_migrations,
    assert_no_secret,
    checksum,
    conditions,
    events,
    images,
    query,
    replicas,
    run_status,
    run_to_end,
    running_images,
    spec_replicas,
    wait_for,
    wait_for_end,
    wait_for_phase,
)

RECORDED = {"web": 2, "worker": 1}
NO_CHECKS: dict[str, list[Any]] = {"checks": []}  # the demo's check holds only once 0005 ran


def assert_rolled_back(stack: BlogStack, name: str, status: dict[str, Any], before: dict[str, str],
                       reason: str) -> None:
    assert status["phase"] == "Failed", status.get("message")
    assert status["failure"]["reason"] == reason, status["failure"]
    assert conditions(status)["RolledBack"] == "True" and conditions(status)["Succeeded"] == "False"
    assert "restored from the backup" in status["message"]
    assert checksum(stack) == before, "the database differs from the one before the run"
    assert spec_replicas(stack) == RECORDED and images(stack) == {"web": "blog:1.0", "worker": "blog:1.0"}
    assert running_images(stack) == {"web": {"blog:1.0"}, "worker": {"blog:1.0"}}
    assert {"Restored", reason} <= {e["reason"] for e in events(stack, name)}


# --- the migration fails: restore, start the old app, Failed with RolledBack ----------------------------------


def test_failing_atomic_migration_is_rolled_back_and_no_acknowledged_write_is_lost(
        new_stack: Any, operator: LocalOperator) -> None:
    stack = new_stack(drills="fail_atomic")
    before = checksum(stack)
    with LoadGenerator(stack) as load:
        wait_for(lambda: len(load.acknowledged) >= 5, "the app to acknowledge writes", timeout=30)
        # Writes acknowledged before the app stopped are in the backup, so the restore keeps them.
        status = run_to_end(stack, stack.migration(name="atomic"))
        count = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= count + 3, "writes on the restored database", timeout=60)
    assert status["phase"] == "Failed"
    assert "drill: atomic migration fails" in status["message"]
    assert not load.missing(), f"acknowledged writes lost: {load.missing()}"
    written = set(load.acknowledged)
    after = checksum(stack)
    # Every table but blog_post is exactly as before; blog_post holds the old rows plus the acknowledged ones.
    assert {t: v for t, v in after.items() if t != "blog_post"} == {t: v for t, v in before.items()
                                                                     if t != "blog_post"}
    posts = {post_id for (post_id,) in query(stack, "SELECT id FROM blog_post")}
    assert len(posts) == 120 + len(written)
    assert conditions(status)["RolledBack"] == "True" and spec_replicas(stack) == RECORDED
    print(f"\nload on the failure path: {len(written)} writes acknowledged, all found; {load.refused} refused")
    assert_no_secret(stack, operator)


def test_failing_non_atomic_migration_half_applied_is_rolled_back(new_stack: Any) -> None:
    stack = new_stack(drills="fail_nonatomic")
    before = checksum(stack)
    status = run_to_end(stack, stack.migration(name="nonatomic", verify=NO_CHECKS))
    assert "drill: non-atomic migration fails half-way" in status["migrateOutput"]
    assert_rolled_back(stack, "nonatomic", status, before, "MigrationFailed")
    assert "drill_fail_nonatomic_thing" not in checksum(stack), "the half-applied table must be gone"


def database_properties(stack: BlogStack) -> tuple[Any, ...]:
    """The database's owner, ACL, comment, and its settings for all roles and for one."""
    with psycopg.connect(stack.cluster.database_url()) as admin:
        row = admin.execute(
            "SELECT pg_get_userbyid(d.datdba), ARRAY(SELECT unnest(d.datacl)::text ORDER BY 1), "
            "shobj_description(d.oid, 'pg_database'), ARRAY(SELECT coalesce(r.rolname, '(all)') || ': ' || "
            "array_to_string(s.setconfig, ', ') FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole "
            "WHERE s.setdatabase = d.oid ORDER BY 1) FROM pg_database d WHERE d.datname = %s",
            (stack.database,)).fetchone()
    assert row is not None
    return tuple(row)


def test_a_restore_gives_back_the_databases_owner_privileges_comment_and_settings(new_stack: Any) -> None:
    stack = new_stack(drills="fail_atomic")
    owner, reader = sql.Identifier(f"{stack.database}_owner"), sql.Identifier(f"{stack.database}_reader")
    database = sql.Identifier(stack.database)
    # As a hardened production database is: owned by a role of its own (not the URL's), closed to PUBLIC.
    statements = [sql.SQL("CREATE ROLE {} NOLOGIN").format(owner), sql.SQL("CREATE ROLE {} LOGIN").format(reader),
                  sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, owner),
                  sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(database),
                  sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, reader),
                  sql.SQL("COMMENT ON DATABASE {} IS 'the blog''s posts'").format(database),
                  sql.SQL("ALTER DATABASE {} SET statement_timeout = '5min'").format(database),
                  sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '8MB'").format(reader, database)]
    with psycopg.connect(stack.cluster.database_url(), autocommit=True) as admin:
        for statement in statements:
            admin.execute(statement)
    try:
        before, properties = checksum(stack), database_properties(stack)
        assert properties[0] == f"{stack.database}_owner" and len(properties[3]) == 2
        status = run_to_end(stack, stack.migration(name="properties"))
        assert_rolled_back(stack, "properties", status, before, "MigrationFailed")
        assert status["restore"]["kept"] == ["objectOwners", "owner", "comment", "privileges", "settings"]
        assert "kept: the database's owner, privileges, comment and settings" in status["message"]
        assert database_properties(stack) == properties
    finally:
        drop_database(stack.cluster, stack.database)
        with psycopg.connect(stack.cluster.database_url(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}, {}").format(owner, reader))


def test_timed_out_migration_is_rolled_back_and_a_scale_up_meanwhile_is_undone(new_stack: Any) -> None:
    stack = new_stack(drills="slow")
    before = checksum(stack)
    stack.apply(stack.migration(name="slow", migrate={"timeoutSeconds": 8}, verify=NO_CHECKS))
    wait_for_phase(stack, "slow", "Migrating")
    stack.kubectl("scale", "-n", stack.namespace, "deployment/worker", "--replicas=3")
    status = wait_for_end(stack, "slow")
    assert "timed out (migrate.timeoutSeconds) while applying drill_slow.0001_sleep" in status["message"]
    # The pod's own log is kept (the Job controller's deadline would have deleted it: "(no output)"). Its tail is
    # the interrupted migration's traceback, down to the migration's own file.
    assert "drills/slow/migrations/0001_sleep.py" in status["migrateOutput"], status["migrateOutput"]
    assert "KeyboardInterrupt" in status["migrateOutput"]
    assert_rolled_back(stack, "slow", status, before, "MigrationFailed")
    warnings = [e for e in events(stack, "slow") if e["reason"] == "ScaledUpDuringRun"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "Deployment worker was scaled to 3" in warnings[0]["message"]
    # Who did it comes from managedFields, which the API server does not always fill for the scale subresource.
    assert " by " not in warnings[0]["message"] or " by kubectl" in warnings[0]["message"]


# --- verification fails: restore -----------------------------------------------------------------------------


def test_a_migration_that_loses_rows_fails_verification_and_is_rolled_back(new_stack: Any) -> None:
    stack = new_stack(drills="drop_posts", release="2.0")
    before = checksum(stack)
    status = run_to_end(stack, stack.migration(name="drops"))
    assert "table blog_post lost rows: 120 before, 60 after" in status["message"]
    assert conditions(status)["Verified"] == "False"
    assert status["rowCounts"]["blog_post"] == {"before": 120, "after": 60}
    assert images(stack)["web"] == "blog:2.0"  # this stack runs release 2 from the start
    assert status["phase"] == "Failed" and conditions(status)["RolledBack"] == "True"
    assert checksum(stack) == before and spec_replicas(stack) == RECORDED


def test_a_failing_user_check_is_rolled_back(new_stack: Any) -> None:
    stack = new_stack()
    before = checksum(stack)
    check = {"name": "no posts at all", "sql": "SELECT count(*) FROM blog_post", "expect": "0"}
    status = run_to_end(stack, stack.migration(name="checked", verify={"checks": [check]}))
    assert "check 'no posts at all' returned '120', expected '0'" in status["message"]
    assert_rolled_back(stack, "checked", status, before, "VerificationFailed")
    assert applied_migrations(stack)[-1] == "0002_populate_categories"


# --- the backup or the restore fails ----------------------------------------------------------------------------


def claim_folder(stack: BlogStack) -> Path:
    return stack.cluster.layout.volume_claims / stack.namespace / "blog-backups"


def test_a_failing_backup_migrates_nothing_and_starts_the_app_again(new_stack: Any) -> None:
    stack = new_stack()
    # A file where the app's backup folder must go: mkdir fails inside the backup Job, as on a broken volume.
    claim_folder(stack).mkdir(parents=True, exist_ok=True)
    (claim_folder(stack) / "web").write_text("not a folder")
    before = checksum(stack)
    status = run_to_end(stack, stack.migration(name="nobackup"))
    assert status["phase"] == "Failed" and status["failure"]["reason"] == "BackupFailed"
    assert "no migration was attempted" in status["message"] and "File exists" in status["message"]
    assert conditions(status)["BackupTaken"] == "False"
    assert "migrate" not in status["jobs"]
    assert checksum(stack) == before and spec_replicas(stack) == RECORDED


def test_a_tools_image_that_cannot_be_pulled_fails_planning_within_the_start_deadline(new_stack: Any) -> None:
    stack = new_stack()
    before, generations = checksum(stack), replicas(stack)
    # An image the cluster cannot pull: devcluster's kubelet knows only its image map (ErrImagePull). The plan's
    # pod tries the tools image first, so this is found before anything stops, not by the backup's pod. Its tag
    # tells no PostgreSQL version, which the run would refuse before it plans (tools_problem).
    status = run_to_end(stack, stack.migration(name="nopull", backup={"image": "registry.example/db-tools:absent"},
                                               jobTemplate={"startTimeoutSeconds": 10}), timeout=120)
    assert status["phase"] == "Failed" and "planning failed, nothing was changed" in status["message"], status
    assert "did not start within jobTemplate.startTimeoutSeconds (10s): ErrImagePull" in status["message"] or \
        "did not start within jobTemplate.startTimeoutSeconds (10s): ImagePullBackOff" in status["message"]
    assert "replicas" not in status and replicas(stack) == generations, "the app was never stopped"
    assert checksum(stack) == before and set(status["jobs"]) == {"plan"}
    jobs_left = stack.kubectl("get", "jobs", "-n", stack.namespace, "-o", "name").stdout.split()
    assert "job.batch/nopull-plan" not in jobs_left, "the Job whose pod never started is deleted"


# --- rehearsal on a scratch copy ---------------------------------------------------------------------------


def scratch_databases(stack: BlogStack) -> list[str]:
    with psycopg.connect(stack.cluster.database_url()) as admin:
        return [name for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'djangoops_rehearsal_%'").fetchall()]


def test_a_rehearsal_of_a_failing_migration_fails_at_rehearsing_and_touches_nothing(new_stack: Any) -> None:
    stack = new_stack(drills="fail_atomic")
    before, generations = checksum(stack), replicas(stack)
    status = run_to_end(stack, stack.migration(name="rehearsed", rehearsal={"enabled": True}))
    assert status["phase"] == "Failed" and status["failure"]["step"] == "Rehearsing", status.get("message")
    assert status["failure"]["reason"] == "RehearsalFailed"
    assert "drill: atomic migration fails" in status["message"]
    assert "Production was never touched and the app never stopped" in status["message"]
    assert "replicas" not in status and replicas(stack) == generations, "the app was never scaled"
    assert checksum(stack) == before
    assert set(status["jobs"]) == {"plan", "rehearse"} and scratch_databases(stack) == []


def test_a_rehearsal_never_migrates_production_when_the_app_does_not_follow_the_url(new_stack: Any) -> None:
    stack = new_stack()
    before = applied_migrations(stack)
    # The app reads DATABASE_URL; pointing another variable at the copy leaves Django on production.
    status = run_to_end(stack, stack.migration(name="misdirected", rehearsal={"enabled": True, "urlEnv": "OTHER_URL"}))
    assert status["phase"] == "Failed" and status["failure"]["reason"] == "RehearsalFailed", status.get("message")
    assert "the rehearsal refused to migrate" in status["message"] and "rehearsal.urlEnv" in status["message"]
    assert applied_migrations(stack) == before, "production must not be migrated"
    assert scratch_databases(stack) == []


def test_a_rehearsal_that_succeeds_shows_the_predicted_downtime_before_approval(new_stack: Any) -> None:
    stack = new_stack()
    stack.apply(stack.migration(name="predicted", rehearsal={"enabled": True}, approval="Manual"))
    status = wait_for_phase(stack, "predicted", "AwaitingApproval", timeout=180)
    rehearsal = status["rehearsal"]
    assert rehearsal["outcome"] == "Succeeded", rehearsal
    assert rehearsal["dumpSeconds"] >= 0 and rehearsal["migrateSeconds"] > 0 and rehearsal["sizeBytes"] > 0
    assert rehearsal["predictedDowntimeSeconds"] >= rehearsal["dumpSeconds"] + rehearsal["migrateSeconds"]
    assert f"predicted downtime {rehearsal['predictedDowntimeSeconds']:.0f}s" in status["message"]
    assert scratch_databases(stack) == [] and "replicas" not in status
    stack.kubectl("patch", "djm", "predicted", "-n", stack.namespace, "--type=merge", "-p",
                  json.dumps({"spec": {"approval": "Automatic"}}))
    final = wait_for_end(stack, "predicted")
    assert final["phase"] == "Succeeded", final.get("message")
    print(f"\nrehearsal: predicted {rehearsal['predictedDowntimeSeconds']}s, real {final['downtimeSeconds']}s")


def test_a_run_waits_in_scheduled_until_its_window_opens_then_runs(new_stack: Any) -> None:
    stack = new_stack()
    opens = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    stack.apply(stack.migration(name="windowed", window={"start": opens.isoformat(), "duration": "10m"}))
    scheduled = wait_for_phase(stack, "windowed", "Scheduled", timeout=60)
    assert "waiting for the maintenance window" in scheduled["message"], scheduled["message"]
    assert scheduled["window"]["opensAt"].startswith(opens.strftime("%Y-%m-%dT%H:%M:%S"))
    assert "replicas" not in scheduled, "nothing stops before the window opens"
    final = wait_for_end(stack, "windowed")
    assert final["phase"] == "Succeeded", final.get("message")
    stopped = datetime.fromisoformat(final["stoppedAt"].replace("Z", "+00:00"))
    assert opens <= stopped < opens + timedelta(seconds=30), (opens, stopped)


class Receiver:
    """A real HTTP server on 127.0.0.1: records each JSON body it gets, answers `status`, or never answers."""

    def __init__(self, status: int | None) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.bodies.append(json.loads(payload))
                if status is None:
                    time.sleep(4)  # longer than the webhook's timeout
                    return
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0KEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks_get_every_message_of_a_run_in_order_and_a_failing_one_never_holds_it(new_stack: Any) -> None:
    stack = new_stack()
    receivers = {"team": Receiver(200), "broken": Receiver(500), "silent": Receiver(None)}
    try:
        for name, receiver in receivers.items():
            stack.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"hook-{name}"},
                         "stringData": {"url": receiver.url}})
        hooks = [{"name": name, "urlSecret": {"name": f"hook-{name}", "key": "url"}, "timeoutSeconds": 1}
                 for name in receivers]
        opens = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=25)
        stack.apply(stack.migration(name="told", notify=hooks, approval="Manual",
                                    window={"start": opens.isoformat(), "duration": "10m"}))
        wait_for_phase(stack, "told", "AwaitingApproval", timeout=120)
        stack.kubectl("patch", "djm", "told", "-n", stack.namespace, "--type=merge", "-p",
                      json.dumps({"spec": {"approval": "Automatic"}}))
        final = wait_for_end(stack, "told")
        # The last message goes out after the status says Succeeded, to each webhook in turn: silent's comes last.
        wait_for(lambda: len(receivers["silent"].bodies) >= 4, "the last message at every webhook", timeout=20)
    finally:
        for receiver in receivers.values():
            receiver.close()
    assert final["phase"] == "Succeeded", final.get("message")
    bodies = receivers["team"].bodies
    assert [b["kind"] for b in bodies] == ["AwaitingApproval", "Scheduled", "Stopping", "Succeeded"]
    assert all(b["run"] == {"namespace": stack.namespace, "name": "told"} for b in bodies)
    assert bodies[-1]["downtimeSeconds"] == final["downtimeSeconds"] and bodies[-1]["message"] == final["message"]
    assert bodies[-1]["command"] == f"kubectl -n {stack.namespace} describe djm told"
    # The failing receivers were asked every time, and each failure is an event; the run went on regardless.
    assert len(receivers["broken"].bodies) == len(receivers["silent"].bodies) == 4
    # The last message goes out after the status says Succeeded: its failures are posted a moment later.
    failed = wait_for(lambda: (found := [e["message"] for e in events(stack, "told")
                                         if e["reason"] == "NotificationFailed"]) and len(found) >= 8 and found,
                      "a NotificationFailed event per message of each failing webhook", timeout=20)
    assert len(failed) == 8 and all("T0KEN" not in message and "127.0.0.1" not in message for message in failed)
    assert any("HTTP 500" in message for message in failed) and any("timed out" in message for message in failed)
    # A silent webhook costs at most its timeout per message: the app's downtime stays that of a run without one.
    assert final["downtimeSeconds"] < 20


def test_a_failing_restore_leaves_the_app_stopped_and_says_where_the_backup_is(
        new_stack: Any, operator: LocalOperator) -> None:
    stack = new_stack(drills="slow")
    before = checksum(stack)
    # Only the slow drill: no blog migration commits before the timeout, so nothing changes the data.
    stack.apply(stack.migration(name="norestore", migrate={"app": "drill_slow", "timeoutSeconds": 6},
                                verify=NO_CHECKS))
    migrating = wait_for_phase(stack, "norestore", "Migrating")
    # The verified dump is damaged while the migration runs: the restore cannot read its table of contents.
    dump = claim_folder(stack) / migrating["backup"]["path"].removeprefix("/backups/")
    (dump / "toc.dat").write_bytes(b"not a dump any more")
    status = wait_for_end(stack, "norestore")
    assert status["phase"] == "Failed" and conditions(status)["ManualRestoreRequired"] == "True"
    assert conditions(status)["RolledBack"] == "False"
    assert spec_replicas(stack) == {"web": 0, "worker": 0}, "old code must not run on a broken schema"
    assert migrating["backup"]["path"] in status["message"] and "pg_restore" in status["message"]
    assert "scale the app back to status.replicas" in status["message"] and status["replicas"] == RECORDED
    assert any(e["reason"] == "RestoreFailed" and e["type"] == "Warning" for e in events(stack, "norestore"))
    # The restore checks the dump before it drops anything: the timed-out migration's transaction rolled back.
    assert checksum(stack) == before
    assert_no_secret(stack, operator)


def test_on_failure_keep_leaves_the_database_and_the_app_as_the_failure_left_them(new_stack: Any) -> None:
    stack = new_stack(drills="fail_nonatomic")
    status = run_to_end(stack, stack.migration(name="keep", onFailure="Keep", verify=NO_CHECKS))
    assert status["phase"] == "Failed" and "left as the failure left it (onFailure is Keep)" in status["message"]
    assert "drill_fail_nonatomic_thing" in checksum(stack)
    assert spec_replicas(stack) == {"web": 0, "worker": 0}


# --- refused at Planning: nothing is touched --------------------------------------------------------------------


@pytest.mark.parametrize(("release_drills", "migrate", "expected"), [
    ("", {"app": "blog", "target": "0001_initial"},
     "the plan unapplies blog.0002_populate_categories, which cannot be reversed"),
    ("conflict", {}, "Conflicting migrations detected; multiple leaf nodes in the migration graph"),
])
def test_refused_at_planning_before_anything_stops(new_stack: Any, release_drills: str, migrate: dict[str, str],
                                                   expected: str) -> None:
    stack = new_stack()
    if release_drills:
        # A release that brings conflicting migrations: the app runs it, the database was set up before.
        stack.kubectl("set", "env", "-n", stack.namespace, "deployment/web", f"BLOG_DRILLS={release_drills}")
        stack.kubectl("rollout", "status", "-n", stack.namespace, "deployment/web", "--timeout=120s")
    before, generations = checksum(stack), replicas(stack)
    status = run_to_end(stack, stack.migration(name="refused", migrate=migrate))
    assert status["phase"] == "Failed" and expected in status["message"], status["message"]
    assert "nothing was changed" in status["message"]
    assert replicas(stack) == generations and checksum(stack) == before
    assert set(status["jobs"]) == {"plan"}


# --- two runs on one database ----------------------------------------------------------------------------------


# Two runs from blog 0002: "first" to 0003, "second" to the latest. Whichever goes first, the other plans from where
# it stopped: this plan is the proof that they did not overlap.
PLANS_WHEN_FIRST = {
    "first": {"first": ["0003_add_post_status"], "second": ["0004_rollback", "0005_ensure_data_integrity"]},
    "second": {"second": ["0003_add_post_status", "0004_rollback", "0005_ensure_data_integrity"],
               "first": ["0005_ensure_data_integrity", "0004_rollback"]},  # backwards to 0003
}


def assert_serialised(runs: tuple[tuple[BlogStack, str], ...]) -> None:
    """Of the applied runs "first" and "second" (stack, name), one queues behind the other, and each plans from the
    state the other left. The first stack's database is the one both migrate."""
    queued = wait_for(lambda: next((s for s in (run_status(*run) for run in runs) if s.get("phase") == "Queued"),
                                   None), "one run to queue", timeout=30)
    ends = {name: wait_for_end(owner, name) for owner, name in runs}
    assert all(s["phase"] == "Succeeded" for s in ends.values()), ends
    assert queued["waitingFor"] in {f"{owner.namespace}/{name}" for owner, name in runs}
    assert queued["waitingFor"] in queued["message"]
    went_first = queued["waitingFor"].rpartition("/")[2]
    assert {name: [m["name"] for m in s["plan"]] for name, s in ends.items()} == PLANS_WHEN_FIRST[went_first]
    last = "0005_ensure_data_integrity" if went_first == "first" else "0003_add_post_status"
    assert applied_migrations(runs[0][0])[-1] == last


def test_two_runs_on_one_database_never_overlap(new_stack: Any) -> None:
    stack = new_stack()
    first = stack.migration(name="first", migrate={"app": "blog", "target": "0003_add_post_status"}, verify=NO_CHECKS)
    second = stack.migration(name="second")
    stack.apply(first, second)
    assert_serialised(((stack, "first"), (stack, "second")))
    assert spec_replicas(stack) == RECORDED


def test_runs_in_two_namespaces_on_one_database_never_overlap(new_stack: Any, cluster: Cluster) -> None:
    stack = new_stack()
    # A second namespace whose app uses the same database (a second copy of the app, say): its runs must wait too.
    other = BlogStack(cluster, namespace=f"{stack.namespace}-b", database=stack.database, web_replicas=1)
    stack.kubectl("create", "namespace", other.namespace)
    try:
        wait_for(lambda: stack.kubectl("get", "serviceaccount", "default", "-n", other.namespace, check=False)
                 .returncode == 0, "the second namespace's default ServiceAccount")
        other.apply(*other.database_objects(), other.web(), other.worker())
        stack.apply(stack.migration(name="first", migrate={"app": "blog", "target": "0003_add_post_status"},
                                    verify=NO_CHECKS))
        other.apply(other.migration(name="second"))
        assert_serialised(((stack, "first"), (other, "second")))
    finally:
        stack.kubectl("delete", "namespace", other.namespace, "--wait=true", "--timeout=120s", check=False)


def test_no_acknowledged_write_is_lost_on_the_success_path(new_stack: Any) -> None:
    stack = new_stack()
    with LoadGenerator(stack) as load:
        wait_for(lambda: len(load.acknowledged) >= 5, "the app to acknowledge writes", timeout=30)
        status = run_to_end(stack, stack.migration(name="loaded"))
        count = len(load.acknowledged)
        wait_for(lambda: len(load.acknowledged) >= count + 3, "writes after the migration", timeout=60)
    assert status["phase"] == "Succeeded", status["message"]
    assert not load.missing(), f"acknowledged writes lost: {load.missing()}"
    assert status["rowCounts"]["blog_post"]["after"] >= 120
    print(f"\nload on the success path: {len(load.acknowledged)} writes acknowledged, all found; "
          f"{load.refused} refused while the app was stopped")


# --- the app's pods linger ---------------------------------------------------------------------------------------


def test_a_stopped_pod_held_by_a_finalizer_does_not_hold_the_run(new_stack: Any) -> None:
    # Its containers stopped (the kubelet gave it a terminal phase), but the object stays until someone removes the
    # finalizer, as an evicted pod stays until garbage-collected: neither can write, so the run must not wait.
    stack = new_stack()
    pod = stack.kubectl("get", "pods", "-n", stack.namespace, "-l", "app.kubernetes.io/component=worker",
                        "-o", "jsonpath={.items[0].metadata.name}").stdout
    hold = json.dumps({"metadata": {"finalizers": ["e2e.djangoops.dev/hold"]}})
    stack.kubectl("patch", "pod", pod, "-n", stack.namespace, "--type=merge", "-p", hold)
    try:
        status = run_to_end(stack, stack.migration(name="held"), timeout=120)
        held = json.loads(stack.kubectl("get", "pod", pod, "-n", stack.namespace, "-o", "json").stdout)
    finally:
        stack.kubectl("patch", "pod", pod, "-n", stack.namespace, "--type=merge",
                      "-p", json.dumps({"metadata": {"finalizers": None}}))
    assert status["phase"] == "Succeeded", status["message"]
    assert held["metadata"].get("deletionTimestamp") and held["status"]["phase"] in ("Succeeded", "Failed")
    assert running_images(stack) == {"web": {"blog:2.0"}, "worker": {"blog:2.0"}}


# --- the run is deleted ------------------------------------------------------------------------------------------


def gone(stack: BlogStack, name: str) -> bool:
    return stack.kubectl("get", "djm", name, "-n", stack.namespace, check=False).returncode != 0


def test_a_run_deleted_while_the_app_is_stopped_ends_first_and_starts_the_app(new_stack: Any) -> None:
    stack = new_stack()
    stack.apply(stack.migration(name="deleted"))
    wait_for_phase(stack, "deleted", "BackingUp")
    stack.kubectl("delete", "djm", "deleted", "-n", stack.namespace, "--wait=false")
    wait_for(lambda: gone(stack, "deleted"), "the deleted run to end and go", timeout=120)
    assert spec_replicas(stack) == RECORDED, "deleting a run must not leave the app stopped"
    assert applied_migrations(stack)[-1] == "0005_ensure_data_integrity"
    reasons = {e["reason"] for e in events(stack, "deleted")}
    assert "PlanApplied" in reasons, reasons


def test_a_run_deleted_before_the_app_was_touched_goes_at_once(new_stack: Any) -> None:
    stack = new_stack()
    generations = replicas(stack)
    stack.apply(stack.migration(name="unwanted", approval="Manual"))
    wait_for_phase(stack, "unwanted", "AwaitingApproval")
    stack.kubectl("delete", "djm", "unwanted", "-n", stack.namespace, "--wait=false")
    wait_for(lambda: gone(stack, "unwanted"), "the unapproved run to go", timeout=30)
    assert replicas(stack) == generations and applied_migrations(stack)[-1] == "0002_populate_categories"
