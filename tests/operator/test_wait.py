"""The waiter of the Helm hook (`python -m django_migration_operator.wait`): what it prints and how it exits, and its
watch loop against a scripted source (410 Gone, deletion, API errors, timeout), without a cluster; the same watcher
as the demo, the e2e tests and the bench follow a run with it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from django_migration_operator import wait
from django_migration_operator.status import RunStatus
from django_migration_operator.wait import (
    EXIT_FAILED,
    EXIT_SUCCEEDED,
    EXIT_UNKNOWN,
    Gone,
    Progress,
    Report,
    Sighting,
    Transient,
    follow,
    watch_run,
)

SUCCEEDED: RunStatus = {"phase": "Succeeded",
                        "message": "3 migrations applied, 9s downtime; app running (web 2, worker 1)",
                        "conditions": [{"type": "Succeeded", "status": "True", "reason": "PlanApplied"}]}
FAILED: RunStatus = {
    "phase": "Failed",
    "message": "the migration failed: RuntimeError: drill: atomic migration fails. The app runs again "
               "(web 2, worker 1) after 12s of downtime; the database was restored from the backup taken before "
               "the migration",
    "failure": {"step": "Migrating", "reason": "MigrationFailed", "message": "the migration failed"},
    "conditions": [{"type": "RolledBack", "status": "True", "reason": "Restored"},
                   {"type": "Succeeded", "status": "False", "reason": "MigrationFailed"}],
}


def running(phase: str, message: str = "") -> RunStatus:
    return {"phase": phase, "message": message,
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}


# --- Progress: what to print, when to stop ----------------------------------------------------------------------


def test_a_run_without_status_waits_for_the_operator() -> None:
    progress = Progress("shop", "web-7")
    assert progress.see(None) == Report(("DjangoMigration shop/web-7: created, waiting for the operator to start it",))
    assert progress.see({}) == Report(), "said once"


def test_each_phase_change_is_printed_once_with_its_message() -> None:
    progress = Progress("shop", "web-7")
    planning = progress.see(running("Planning", "planning: listing the migrations to apply"))
    assert planning == Report(("DjangoMigration shop/web-7: Planning: planning: listing the migrations to apply",))
    assert progress.see(running("Planning", "planning: listing the migrations to apply")) == Report()
    assert progress.see(running("ScalingDown")).lines == ("DjangoMigration shop/web-7: ScalingDown",)
    # A new message in the same phase (e.g. Queued behind another run) is news too.
    progress.see(running("Queued", "waiting for run web-6, which holds this database"))
    again = progress.see(running("Queued", "waiting for run web-5, which holds this database"))
    assert again.lines == ("DjangoMigration shop/web-7: Queued: waiting for run web-5, which holds this database",)
    assert again.exit_code is None


def test_a_multi_line_message_on_the_way_is_one_line_and_the_end_shows_it_whole() -> None:
    progress = Progress("shop", "web-7")
    restoring = ("the migration failed: Traceback (most recent call last):\n  File \"migrate.py\", line 3\n"
                 "RuntimeError: boom\n  Applying x.0001...; restoring the database from /backups/web/web-7.dump")
    assert progress.see(running("Restoring", restoring)).lines == (
        "DjangoMigration shop/web-7: Restoring: the migration failed: Traceback (most recent call last): [... 2 more "
        "lines ...] Applying x.0001...; restoring the database from /backups/web/web-7.dump",)
    assert progress.see(running("Restoring", "a\nb")).lines == ("DjangoMigration shop/web-7: Restoring: a b",)
    failed: RunStatus = {**FAILED, "message": restoring + ". The app runs again"}
    assert progress.see(failed).lines[0] == f"DjangoMigration shop/web-7: Failed: {restoring}. The app runs again"


def test_succeeded_exits_0_with_the_summary() -> None:
    report = Progress("shop", "web-7").see(SUCCEEDED)
    assert report.exit_code == EXIT_SUCCEEDED
    assert report.lines == (f"DjangoMigration shop/web-7: Succeeded: {SUCCEEDED['message']}",)


def test_failed_exits_1_and_says_why_and_where_the_app_and_data_are() -> None:
    report = Progress("shop", "web-7").see(FAILED)
    assert report.exit_code == EXIT_FAILED
    first, summary = report.lines
    assert first == f"DjangoMigration shop/web-7: Failed: {FAILED['message']}"
    assert "restored from the backup" in first and "app runs again" in first
    assert summary.startswith("DjangoMigration shop/web-7 failed (reason MigrationFailed, RolledBack=True): "
                              "the migration did not succeed, so the release must not roll out")
    assert summary.endswith("kubectl -n shop describe djangomigration web-7")


def test_failed_before_anything_changed_names_the_reason_without_rolled_back() -> None:
    status: RunStatus = {"phase": "Failed",
                         "message": "app.deployment: Deployment 'web' not found in namespace shop; create it or "
                                    "correct the name. Nothing was changed",
                         "conditions": [{"type": "Succeeded", "status": "False", "reason": "InvalidSpec"}]}
    report = Progress("shop", "web-7").see(status)
    assert report.exit_code == EXIT_FAILED
    assert "failed (reason InvalidSpec)" in report.lines[1]
    # The reason of status.failure serves when the condition has none.
    bare = Progress("shop", "web-7").see({"phase": "Failed", "message": "x", "failure": {"reason": "BackupFailed"}})
    assert "failed (reason BackupFailed)" in bare.lines[1]
    assert "DjangoMigration shop/web-7 failed: " in Progress("shop", "web-7").see({"phase": "Failed"}).lines[1]


def test_timeout_says_the_run_goes_on_or_that_no_operator_started_it() -> None:
    progress = Progress("shop", "web-7")
    progress.see(None)
    (line,) = progress.timed_out(300).lines
    assert "timed out after 300s, the operator has not started it" in line
    assert "is the operator running and watching namespace shop? Follow it with" in line
    progress.see(running("Migrating", "backup verified; migrating"))
    report = progress.timed_out(300)
    assert report.exit_code == EXIT_UNKNOWN
    assert "still in phase Migrating (backup verified; migrating); the run goes on without this waiter. Follow " \
        "it with" in report.lines[0]
    assert "kubectl -n shop get djangomigration web-7 -w" in report.lines[0]


def test_missing_deleted_and_refused_exit_2() -> None:
    progress = Progress("shop", "web-7")
    assert progress.missing() == Report(("DjangoMigration shop/web-7 not found: nothing to wait for",), EXIT_UNKNOWN)
    progress.see(running("BackingUp"))
    assert progress.deleted() == Report(
        ("DjangoMigration shop/web-7 was deleted in phase BackingUp before it ended: its result is unknown",),
        EXIT_UNKNOWN)
    assert progress.refused("HTTP 403 Forbidden").exit_code == EXIT_UNKNOWN


# --- follow: the loop against a scripted source -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Script:
    """A Source whose lists and watches play back what the test says; a watch may raise, or pass time."""

    def __init__(self, clock: Clock, lists: list[Any], watches: list[Any]) -> None:
        self.clock = clock
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []

    def get(self) -> tuple[dict[str, Any] | None, str]:
        item = self.lists.pop(0)
        if isinstance(item, Exception):
            raise item
        body, version = item
        return body, version

    def events(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(resource_version)
        assert 1 <= timeout_seconds <= wait.WATCH_SECONDS
        for item in self.watches.pop(0):
            if isinstance(item, Exception):
                raise item
            if isinstance(item, float):  # the watch ends quietly after that many seconds
                self.clock.now += item
                return
            yield item


def body(version: str, status: RunStatus | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "web-7", "resourceVersion": version}, "status": status or {}}


def run(script: Script, clock: Clock, timeout: float = 600) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = follow(script, Progress("shop", "web-7"), timeout, lines.append, clock=clock, sleep=clock.sleep)
    return code, lines


def test_follow_prints_the_phases_from_the_watch_until_success() -> None:
    clock = Clock()
    script = Script(clock, lists=[(body("10", running("Planning", "planning")), "11")], watches=[[
        ("MODIFIED", body("12", running("Planning", "planning"))),  # no news: nothing printed
        ("BOOKMARK", {"metadata": {"resourceVersion": "13"}}),
        ("MODIFIED", body("14", running("ScalingDown", "stopping the app"))),
        ("MODIFIED", body("15", SUCCEEDED)),
    ]])
    code, lines = run(script, clock)
    assert code == EXIT_SUCCEEDED
    assert [line.split(": ")[1] for line in lines] == ["Planning", "ScalingDown", "Succeeded"]
    assert script.watched_from == ["11"]


def test_follow_watches_again_from_the_last_version_and_lists_again_after_410() -> None:
    clock = Clock()
    script = Script(clock,
                    lists=[(body("10", running("Migrating")), "10"), (body("30", FAILED), "30")],
                    watches=[[("MODIFIED", body("20", running("Migrating", "x"))), 59.0],  # server timeout
                             [Gone()]])
    code, lines = run(script, clock)
    assert code == EXIT_FAILED
    assert script.watched_from == ["10", "20"]
    assert lines[-1].startswith("DjangoMigration shop/web-7 failed (reason MigrationFailed, RolledBack=True)")


def test_follow_exits_2_when_the_run_is_missing_or_deleted() -> None:
    clock = Clock()
    assert run(Script(clock, lists=[(None, "5")], watches=[]), clock) == (
        EXIT_UNKNOWN, ["DjangoMigration shop/web-7 not found: nothing to wait for"])
    script = Script(clock, lists=[(body("5", running("BackingUp")), "5")],
                    watches=[[("DELETED", body("6", running("BackingUp")))]])
    code, lines = run(script, clock)
    assert code == EXIT_UNKNOWN and "was deleted in phase BackingUp" in lines[-1]


def test_follow_rides_out_api_errors_and_times_out_with_the_last_phase() -> None:
    clock = Clock()
    script = Script(clock,
                    lists=[Transient("connection reset"), (body("5", running("Migrating", "migrating")), "5"),
                           (body("8", running("Migrating", "migrating")), "8")],
                    watches=[[Transient("HTTP 503")], [60.0], [60.0]])
    code, lines = run(script, clock, timeout=100)
    assert code == EXIT_UNKNOWN
    assert len(lines) == 2 and lines[0] == "DjangoMigration shop/web-7: Migrating: migrating"
    assert "timed out after 100s, still in phase Migrating (migrating)" in lines[-1]
    assert clock.now >= 100


# --- watch_run: the watcher on its own, as the demo, the e2e tests and the bench use it ----------------------------


def test_watch_run_shows_every_look_from_before_the_run_exists_to_after_it_is_deleted_until_the_timeout() -> None:
    clock = Clock()
    script = Script(clock, lists=[(None, "3")], watches=[
        [("ADDED", body("4")), ("BOOKMARK", {"metadata": {"resourceVersion": "5"}}),
         ("MODIFIED", body("6", running("Planning"))), ("MODIFIED", body("7", running("Planning"))),
         ("DELETED", body("8", running("Planning"))), 10.0],
        [25.0]])
    seen = list(watch_run(script, 30, clock, clock.sleep))
    # The bench starts watching before the run is applied; every event counts, a status unchanged too (the
    # operator's first write is its finalizer).
    assert seen == [Sighting(None), Sighting(body("4")), Sighting(body("6", running("Planning"))),
                    Sighting(body("7", running("Planning"))), Sighting(None, deleted=True)]
    assert script.watched_from == ["3", "8"], "each watch goes on from the last version, bookmarks included"
    assert clock.now >= 30


def test_watch_run_reads_no_more_once_the_caller_has_what_it_waits_for() -> None:
    clock = Clock()
    script = Script(clock, lists=[(body("1", running("Planning")), "1")],
                    watches=[[("MODIFIED", body("2", running("Migrating"))), ("MODIFIED", body("3", SUCCEEDED))]])
    phases: list[str] = []
    for seen in watch_run(script, 600, clock, clock.sleep):
        assert seen.run is not None
        phases.append(seen.run["status"]["phase"])
        if phases[-1] == "Migrating":
            break
    assert phases == ["Planning", "Migrating"]
    assert script.watched_from == ["1"] and script.lists == [], "no other list or watch"


def test_watch_run_without_a_timeout_tells_of_each_error_it_rides_out() -> None:
    clock = Clock()
    script = Script(clock,
                    lists=[Transient("connection reset"), (body("5", running("Migrating")), "5"),
                           (body("7", running("Migrating")), "7"), (body("9", SUCCEEDED), "9")],
                    watches=[[Gone()], [Transient("HTTP 503")]])
    retried: list[str] = []
    phases: list[str] = []
    for seen in watch_run(script, math.inf, clock, clock.sleep, on_retry=lambda error: retried.append(str(error))):
        assert seen.run is not None
        phases.append(seen.run["status"]["phase"])
        if phases[-1] == "Succeeded":
            break
    assert phases == ["Migrating", "Migrating", "Succeeded"]
    assert retried == ["connection reset", "HTTP 503"], "a 410 is no error: a list again, at once"
    assert clock.now == 2 * wait.RETRY_SECONDS


def test_main_exits_2_with_one_line_when_the_api_refuses(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    class Forbidden:
        def __init__(self, namespace: str, name: str) -> None:
            assert (namespace, name) == ("shop", "web-7")

        def get(self) -> tuple[dict[str, Any] | None, str]:
            raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(wait, "KubeSource", Forbidden)
    assert wait.main(["web-7", "--namespace", "shop", "--timeout", "5"]) == EXIT_UNKNOWN
    assert capsys.readouterr().out == "DjangoMigration shop/web-7: cannot read it: HTTP 403 Forbidden\n"
