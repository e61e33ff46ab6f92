"""The words of a run, pinned once: what each message says, and that it says where the app and the data are.

tests/operator/test_workflow.py checks which message a transition chooses and with which facts; the wording is here.
"""

from __future__ import annotations

from datetime import timedelta

from django_migration_operator import messages
from django_migration_operator.plan import PlannedMigration
from django_migration_operator.status import Restore

REPLICAS = {"web": 2, "worker": 1}
KEPT_ALL: Restore = {"kept": ["objectOwners", "owner", "comment", "privileges", "settings"]}


def test_the_tail_is_the_last_lines_of_the_output() -> None:
    log = "\n".join(f"line {n}" for n in range(30)) + "\n\n"
    assert messages.tail(log) == "\n".join(f"line {n}" for n in range(10, 30))
    assert messages.tail(log, 2) == "line 28\nline 29"
    assert messages.tail("  \n") == "(no output)"


def test_a_plan_summary_names_each_migration_its_direction_and_class() -> None:
    plan = [PlannedMigration("blog", "0003_x", atomic=True, reversible=True, backwards=False, operations=(),
                             migration_class="expand"),
            PlannedMigration("shop", "0002_y", atomic=True, reversible=True, backwards=True, operations=())]
    assert messages.plan_summary(plan) == "2 migrations: blog.0003_x [expand], shop.0002_y (backwards)"
    assert messages.plan_summary(plan[:1]) == "1 migration: blog.0003_x [expand]"


def test_durations_drop_the_seconds_past_an_hour() -> None:
    assert messages.duration(timedelta(hours=1)) == "1h"
    assert messages.duration(timedelta(minutes=5, seconds=12)) == "5m12s"
    assert messages.duration(timedelta(days=2, hours=4, seconds=3)) == "2d4h"
    assert messages.duration(timedelta()) == "0s"


class TestNothingChanged:
    """A run refused before it touched anything says so, and what to fix."""

    def test_bad_input(self) -> None:
        problem = "app.deployment: Deployment 'nope' not found in namespace shop; create it or correct the name"
        message = messages.invalid_spec([problem])
        assert problem in message and "Nothing was changed" in message

    def test_online_refused(self) -> None:
        message = messages.online_refused(["blog.0007_backfill is unknown (RunPython)"])
        assert "blog.0007_backfill is unknown" in message and "Nothing was changed" in message
        assert "Set strategy: Offline, or Auto" in message

    def test_outside_the_window(self) -> None:
        message = messages.outside_window(messages.window_over(900))
        assert "the maintenance window (window.start) is over" in message and "Nothing was changed" in message
        assert "(900s)" in message
        assert messages.window_over(0) == "the maintenance window (window.start) is over"

    def test_irreversible(self) -> None:
        step = PlannedMigration("blog", "0002_populate_categories", atomic=True, reversible=False, backwards=True,
                                operations=("RunPython",))
        message = messages.irreversible([step])
        assert "blog.0002_populate_categories" in message and "nothing was changed" in message


def test_a_scheduled_run_says_when_it_starts_and_why_not_earlier() -> None:
    message = messages.scheduled("2026-11-24T13:00:00+00:00", "UTC", timedelta(hours=1), 0)
    assert "opens 2026-11-24T13:00:00+00:00 (UTC), in 1h" in message and "room" not in message
    later = messages.scheduled("2026-11-25T12:00:00+00:00", "UTC", timedelta(hours=23, minutes=10), 900)
    assert "the first with room for the predicted downtime (900s)" in later


def test_a_rehearsal_tells_its_durations_and_the_predicted_downtime() -> None:
    assert messages.rehearsed({"dumpSeconds": 1.5, "migrateSeconds": 0.5, "predictedDowntimeSeconds": 5}) == \
        "; rehearsed on a copy: dump 1.5s, migrate 0.5s, predicted downtime 5s"
    failed = messages.rehearsal_failed("RuntimeError: drill: atomic migration fails")
    assert "RuntimeError: drill: atomic migration fails" in failed
    assert "Production was never touched and the app never stopped" in failed
    assert messages.rehearsal_verification_failed([messages.lost_rows("blog_post", 200, 150)]) == \
        "verification failed on the copy: table blog_post lost rows: 200 before, 150 after"


def test_a_scaled_up_deployment_names_who_scaled_it() -> None:
    assert messages.scaled_up_during_run("web", 3, "argocd-controller", "Migrating") == \
        "Deployment web was scaled to 3 by argocd-controller while the run is in Migrating; scaling it down to 0 again"


def test_a_pod_that_never_started_names_the_deadline_and_the_pods_reason() -> None:
    message = messages.not_started(60, "ImagePullBackOff: Back-off pulling image \"postgres:99\"")
    assert "did not start within jobTemplate.startTimeoutSeconds (60s): ImagePullBackOff" in message


class TestFailureWording:
    def test_a_failed_backup_says_no_migration_was_attempted(self) -> None:
        message = messages.backup_failed("BackoffLimitExceeded", "pg_dump: error")
        assert message == "the backup failed (BackoffLimitExceeded): pg_dump: error; no migration was attempted"
        assert "timed out: backup.timeoutSeconds" in messages.backup_failed("DeadlineExceeded", "")
        assert "The app kept serving" in messages.backup_failed_online(message)

    def test_a_failed_migration_names_the_migration_and_the_error_not_the_whole_traceback(self) -> None:
        log = ("Traceback (most recent call last):\n  File \"/app/manage.py\", line 22, in <module>\n"
               "RuntimeError: drill: atomic migration fails\n"
               "  Applying blog.0003_add_post_status... OK\n  Applying drill_fail_atomic.0001_initial...")
        assert messages.migration_failed(False, log) == (
            "the migration failed while applying drill_fail_atomic.0001_initial: RuntimeError: drill: atomic "
            "migration fails (the output's tail is in status.migrateOutput)")

    def test_a_failure_without_an_error_line_shows_the_output_tail(self) -> None:
        assert messages.migration_failed(False, "  Applying blog.0004_x...\nKilled") == (
            "the migration failed while applying blog.0004_x: Applying blog.0004_x...\nKilled")

    def test_a_timed_out_migration_says_so(self) -> None:
        log = ("  Applying blog.0003_add_post_status... OK\n  Applying blog.0004_rollback...\nTraceback (most recent "
               "call last):\n  File \"manage.py\", line 22, in <module>\nKeyboardInterrupt\nDJANGOOPS_TIMEOUT 8\n")
        assert messages.migration_failed(True, log).startswith(
            "the migration timed out (migrate.timeoutSeconds) while applying blog.0004_rollback: KeyboardInterrupt")
        assert "timed out" in messages.migration_failed(True, "")

    def test_a_failed_online_migration_says_the_app_kept_serving_and_what_did_commit(self) -> None:
        log = ("  Applying blog.0006_post_subtitle... OK\n  Applying blog.0007_x...\n"
               "django.db.utils.IntegrityError: check constraint violated")
        message = messages.online_migration_failed(messages.migration_failed(False, log), log)
        assert "kept serving" in message and "IntegrityError" in message
        assert "nothing was stopped or restored" in message
        assert "applied before it (expand, harmless to the running release): blog.0006_post_subtitle" in message
        assert "applied before it" not in messages.online_migration_failed("boom", "  Applying blog.0007_x...")

    def test_verification_failures_name_each_problem(self) -> None:
        message = messages.verification_failed([messages.not_applied("blog.0003_add_post_status", backwards=False),
                                                messages.lost_rows("blog_post", 200, 100),
                                                messages.check_failed("no orphans", "3", "0")])
        assert "blog.0003_add_post_status is not applied" in message
        assert "blog_post lost rows: 200 before, 100 after" in message
        assert "check 'no orphans' returned '3'" in message
        assert messages.not_applied("blog.0004_x", backwards=True) == "django_migrations: blog.0004_x is not unapplied"
        online = messages.verification_failed_online(message, "/backups/web/run.dump")
        assert "nothing was restored" in online and "/backups/web/run.dump" in online

    def test_on_failure_keep_says_the_app_stays_stopped(self) -> None:
        assert "app stays stopped" in messages.kept_as_failed("boom", on_failure_keep=True)
        assert "(onFailure is Keep)" in messages.kept_as_failed("boom", on_failure_keep=True)
        assert "(backup.enabled is false)" in messages.kept_as_failed("boom", on_failure_keep=False)

    def test_a_failed_restore_says_the_app_stays_stopped_and_how_to_restore_by_hand(self) -> None:
        message = messages.restore_failed("boom", "pg_restore: error", "/backups/web/run.dump", "backups")
        assert message.startswith("boom; then the restore failed too: pg_restore: error")
        assert "stays stopped" in message and "PersistentVolumeClaim backups" in message
        assert "`pg_restore --single-transaction --exit-on-error --no-owner -d <database> /backups/web/run.dump`" in \
            message

    def test_an_online_failure_after_the_expand_says_what_serves(self) -> None:
        assert "serves without the contract changes" in messages.contract_failed("boom", "shop:3")
        stalled = messages.rollout_stalled("shop:3", ["web"])
        assert "(web: ProgressDeadlineExceeded)" in stalled and "contract migrations were not run" in stalled

    def test_a_failed_run_whose_app_runs_again_says_so_and_whether_it_was_restored(self) -> None:
        images = {"web": {"django": "shop:1"}}
        message = messages.failed_app_running("the migration failed: RuntimeError: boom.", REPLICAS, images, 60,
                                              restore=None)
        assert message == ("the migration failed: RuntimeError: boom. The app runs again (web 2, worker 1) on shop:1 "
                           "after 60s of downtime")
        restored = messages.failed_app_running("boom", REPLICAS, {}, 60, restore=KEPT_ALL)
        assert "the database was restored from the backup" in restored and "every object keeps its owner" in restored


class TestRestoreSummary:
    def test_a_restore_says_what_it_gave_back_besides_the_data(self) -> None:
        assert messages.restore_summary(KEPT_ALL) == \
            "kept: the database's owner, privileges, comment and settings; every object keeps its owner"
        assert "starting the app on the restored database" in messages.restored("/backups/web/run.dump", KEPT_ALL)

    def test_a_partial_restore_says_what_it_could_not_give_back(self) -> None:
        partial: Restore = {"kept": ["comment"], "notActingAs": "reports", "refused": 1,
                            "refusedStatements": ['permission denied to set parameter "search_path"']}
        summary = messages.restore_summary(partial)
        assert "kept: the database's comment" in summary
        assert "its objects now belong to the database URL's role, which cannot act as reports" in summary
        assert 'not re-applied: permission denied to set parameter "search_path"' in summary
        assert messages.restore_summary({}) == \
            "the data only: the backup holds none of the database's own properties"

    def test_a_restore_that_ran_again_says_how_often(self) -> None:
        assert "went away" not in messages.restore_summary({**KEPT_ALL, "attempts": 1})
        assert messages.restore_summary({"kept": ["objectOwners"], "attempts": 3}) == (
            "every object keeps its owner; the server went away during the restore: it ran 3 times, the last one "
            "whole, from its DROP")


class TestSuccessWording:
    def test_a_success_says_whether_the_plan_applied_or_unapplied(self) -> None:
        assert messages.succeeded(1, False, 4, REPLICAS, {}).startswith(
            "1 migration applied, 4s downtime; app running (web 2, worker 1)")
        assert messages.succeeded(1, True, 4, REPLICAS, {}).startswith(
            "1 migration unapplied, 4s downtime; app running (web 2, worker 1)")
        assert "1 migration applied, 42s downtime" in messages.succeeded(1, False, 42, REPLICAS, {})

    def test_a_success_names_the_images_the_app_runs(self) -> None:
        images = {"web": {"django": "shop:2"}, "worker": {"celery": "shop:2"}}
        assert messages.succeeded(3, False, 9, REPLICAS, images).endswith("app running (web 2, worker 1) on shop:2")
        online = messages.succeeded_online(2, {"web": {"django": "shop:3"}})
        assert "2 migrations applied online, 0s downtime" in online and "on shop:3" in online


def test_a_failed_notification_names_the_webhook_and_says_the_run_goes_on() -> None:
    assert messages.notification_failed("team", "Failed", "HTTP 500") == \
        "notify[team]: the Failed message was not delivered: HTTP 500; the run goes on"


class TestOutages:
    def test_an_outage_says_what_does_not_answer_and_that_the_run_goes_on_by_itself(self) -> None:
        assert messages.database_unreachable("connection refused") == \
            "the database does not answer: connection refused; the run goes on once it does"
        assert messages.api_unavailable("does not answer: MaxRetryError") == \
            "the Kubernetes API does not answer: MaxRetryError; trying again"
        assert messages.outage_over(31.4, "APIUnavailable") == "going on after 31 s: APIUnavailable is over"

    def test_a_refusal_names_the_fix(self) -> None:
        refusal = 'leases.coordination.k8s.io is forbidden: User "system:serviceaccount:ops:op" cannot get ...'
        assert messages.forbidden(refusal) == (
            f"the operator was refused: {refusal}; give its ServiceAccount that right again (the chart's RBAC grants "
            "it) and the run goes on")


def test_the_problems_pending_finds_name_the_field_and_the_fix() -> None:
    assert messages.deployment_not_found("app.stop", "worker", "shop") == (
        "app.stop: Deployment 'worker' not found in namespace shop; create it or correct the name")
    assert messages.claim_not_found("backups", "shop") == (
        "backup.volumeClaim: PersistentVolumeClaim 'backups' not found in namespace shop; create it, or name the claim "
        "the dumps go to")
    assert messages.claim_lost("backups") == (
        "backup.volumeClaim: PersistentVolumeClaim 'backups' is Lost (its volume is gone); recreate the claim or name "
        "another one")
    assert messages.claim_too_small("backups", 100 * 2**20, "shop", 3 * 2**30) == (
        "backup.volumeClaim: PersistentVolumeClaim 'backups' holds 100 MiB, too small for a dump of database 'shop' "
        "(3072 MiB on disk); a claim of half that (1536 MiB) holds a few dumps: resize it, or name a bigger one")
    assert messages.claim_too_small("backups", 1000, "shop", 20000).startswith(
        "backup.volumeClaim: PersistentVolumeClaim 'backups' holds 1000 bytes, too small for a dump of database 'shop' "
        "(20000 bytes on disk); a claim of half that (10000 bytes)")
    assert messages.webhook_secret_not_found("ops", "hooks", "ops", "shop") == (
        "notify[ops].urlSecret: Secret 'hooks' or its key 'ops' not found in namespace shop; create it, or remove the "
        "webhook")
    assert messages.url_secret_not_found("db", "url", "shop") == (
        "database.urlSecret: Secret 'db' or its key 'url' not found in namespace shop; create it, or name the Secret "
        "and key that hold the DATABASE_URL")
    assert messages.url_invalid("db", "url", "is not a postgres:// URL") == (
        "database.urlSecret: Secret 'db', key 'url' is not a postgres:// URL; store a postgres:// URL there")
    assert messages.cannot_connect("db", "shop", "connection refused") == (
        "database.urlSecret: Secret 'db': cannot connect to database 'shop': connection refused; fix the URL in the "
        "Secret or make the database reachable")
    refused = "role app may not create databases (it needs CREATEDB)"
    assert messages.restore_impossible(refused) == (
        f"onFailure: Restore is impossible: {refused}, so a restore could not recreate it; grant CREATEDB to that "
        "role, or set onFailure: Keep")
    assert messages.rehearsal_impossible(refused) == (
        f"rehearsal.enabled: a rehearsal needs a scratch database, but {refused}; grant CREATEDB to that role, or set "
        "rehearsal.enabled: false")
    assert messages.table_not_found("blog_post", "shop") == (
        "verify.rowCounts: table 'blog_post' does not exist in database 'shop'; remove it or name an existing table")
