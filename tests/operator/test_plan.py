"""The plan script and its parsing: pure tests on sample logs, then the script run for real by Django's shell
against a throwaway PostgreSQL and the demo blog (skipped where PostgreSQL's server binaries are missing)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from django_migration_operator.classify import classify_plan
from django_migration_operator.plan import (
    PLAN_MARKER,
    TIMEOUT_MARKER,
    PlannedMigration,
    PlanResult,
    irreversible_steps,
    migrate_command,
    online_migrate_command,
    parse_marker,
    parse_plan_output,
    plan_command,
    timed_command,
)
from tests.pgserver import create_database, throwaway_postgres

BLOG = Path(__file__).resolve().parents[2] / "examples" / "blog"

CONFLICT_MESSAGE = ("Conflicting migrations detected; multiple leaf nodes in the migration graph: "
                    "(0002_a, 0002_b in drill_conflict).\nTo fix them run 'python manage.py makemigrations --merge'")


def migration(name: str, *, reversible: bool = True, backwards: bool = False) -> PlannedMigration:
    return PlannedMigration("blog", name, atomic=True, reversible=reversible, backwards=backwards,
                            operations=("RunPython",))


# --- commands -----------------------------------------------------------------------------------------------

def test_plan_command_runs_the_script_in_djangos_shell() -> None:
    command = plan_command()
    assert command[:4] == ["python", "manage.py", "shell", "-c"]
    assert len(command) == 5
    compile(command[4], "plan script", "exec")  # a syntax error would only show in the Job otherwise
    assert repr(PLAN_MARKER) in command[4]


@pytest.mark.parametrize(("app", "target", "expected"), [
    (None, None, ["python", "manage.py", "migrate", "--database", "default", "--noinput"]),
    ("blog", None, ["python", "manage.py", "migrate", "blog", "--database", "default", "--noinput"]),
    ("blog", "zero", ["python", "manage.py", "migrate", "blog", "zero", "--database", "default", "--noinput"]),
])
def test_migrate_command(app: str | None, target: str | None, expected: list[str]) -> None:
    assert migrate_command("default", app, target) == expected


def test_migrate_command_passes_the_alias() -> None:
    assert migrate_command("analytics", None, None)[-3:] == ["--database", "analytics", "--noinput"]


# --- parsing ------------------------------------------------------------------------------------------------

def test_parse_marker_takes_the_last_marker_line() -> None:
    log = 'DJANGOOPS_PLAN {"plan": 1}\nnoise\nDJANGOOPS_PLAN {"plan": 2}\nmore noise\n'
    assert parse_marker(log, PLAN_MARKER) == {"plan": 2}


def test_parse_marker_ignores_the_marker_inside_a_line() -> None:
    assert parse_marker('echo DJANGOOPS_PLAN {"plan": []}\n', PLAN_MARKER) is None


@pytest.mark.parametrize("line", ['DJANGOOPS_PLAN {"plan": [', "DJANGOOPS_PLAN [1, 2]"])
def test_parse_marker_refuses_what_is_not_a_json_object(line: str) -> None:
    with pytest.raises(ValueError):
        parse_marker(line, PLAN_MARKER)


def test_a_plan_among_django_output() -> None:
    log = ("2 objects imported automatically (use -v 2 for details).\n"
           "WARNING django.request: something\n"
           'DJANGOOPS_PLAN {"plan": [{"app": "blog", "name": "0003_add_post_status", "atomic": true, '
           '"reversible": true, "backwards": false, "operations": ["AddField"]}]}\n'
           "\n")
    assert parse_plan_output(log) == PlanResult((PlannedMigration(
        "blog", "0003_add_post_status", atomic=True, reversible=True, backwards=False, operations=("AddField",)),))


def test_an_empty_plan_is_a_plan() -> None:
    assert parse_plan_output('DJANGOOPS_PLAN {"plan": []}\n') == PlanResult(())


def test_an_error_line_keeps_djangos_message_and_the_reason() -> None:
    log = "DJANGOOPS_PLAN " + json.dumps({"error": CONFLICT_MESSAGE, "reason": "Conflict"}) + "\n"
    assert parse_plan_output(log) == PlanResult((), error=CONFLICT_MESSAGE, reason="Conflict")


def test_no_marker_quotes_the_end_of_the_log() -> None:
    log = "Traceback (most recent call last):\n" + "".join(f"  frame {i}\n" for i in range(20)) + \
          "django.db.utils.OperationalError: connection refused\n"
    result = parse_plan_output(log)
    assert (result.migrations, result.reason) == ((), "NoPlan")
    assert result.error is not None
    assert result.error.startswith("the plan Job printed no plan; last lines:\n")
    assert result.error.endswith("frame 19\ndjango.db.utils.OperationalError: connection refused")
    assert "frame 10" not in result.error


@pytest.mark.parametrize("log", [
    'DJANGOOPS_PLAN {"plan": [{"app": "blog"',                      # cut off
    'DJANGOOPS_PLAN {"plan": [{"app": "blog", "name": "0003"}]}',   # entry without its fields
    'DJANGOOPS_PLAN {"plan": 3}',
    'DJANGOOPS_PLAN {"nothing": []}',
])
def test_an_unreadable_plan_is_bad(log: str) -> None:
    result = parse_plan_output(log)
    assert (result.migrations, result.reason) == ((), "BadPlan")
    assert result.error is not None and result.error.startswith("the plan Job printed a plan that cannot be read")


def test_status_round_trip() -> None:
    planned = PlannedMigration("blog", "0002_populate_categories", atomic=False, reversible=False, backwards=True,
                               operations=("RunPython", "AddField"))
    entry = planned.to_status()
    assert entry == {"app": "blog", "name": "0002_populate_categories", "atomic": False, "reversible": False,
                     "backwards": True, "operations": ["RunPython", "AddField"]}
    assert PlannedMigration.from_status(entry) == planned


def test_a_status_entry_without_backwards_is_forwards() -> None:
    entry = {"app": "blog", "name": "0003", "atomic": True, "reversible": True, "operations": ["AddField"]}
    assert PlannedMigration.from_status(entry).backwards is False


def test_irreversible_steps_are_the_backwards_ones_without_reverse() -> None:
    stuck = migration("0002", reversible=False, backwards=True)
    plan = [migration("0003", backwards=True), stuck, migration("0004", reversible=False)]
    assert irreversible_steps(plan) == [stuck]


# --- the script, for real -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blog_at_0002() -> Iterator[str]:
    """The URL of a database where the demo blog is migrated to 0002, as release 1 leaves it."""
    if not (BLOG / "manage.py").exists():
        pytest.skip(f"the demo project is missing: {BLOG}")
    with throwaway_postgres() as (server_url, _):
        url = create_database(server_url, "blog")
        manage("migrate", "blog", "0002", url=url)
        yield url


def manage(*arguments: str, url: str, drills: str = "", extra_env: dict[str, str] | None = None,
           command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `python manage.py ...` (or `command`, whose "python" is this interpreter) in the demo project."""
    command = command or ["python", "manage.py", *arguments]
    env = {**os.environ, "DATABASE_URL": url, "BLOG_DRILLS": drills, **(extra_env or {})}
    return subprocess.run([sys.executable, *command[1:]], cwd=BLOG, env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def run_plan(url: str, app: str = "", target: str = "", drills: str = "") -> tuple[int, PlanResult]:
    env = {"DJANGOOPS_DATABASE": "default", "DJANGOOPS_APP": app, "DJANGOOPS_TARGET": target}
    done = manage(url=url, drills=drills, extra_env=env, command=plan_command())
    return done.returncode, parse_plan_output(done.stdout + done.stderr)


def djangos_own_plan(url: str, *arguments: str, drills: str = "") -> list[str]:
    """The migrations `manage.py migrate ARGS --plan` lists, as app.name."""
    done = manage("migrate", *arguments, "--plan", url=url, drills=drills)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines()[1:] if line and not line.startswith(" ")]


FORWARD = ["blog.0003_add_post_status", "blog.0004_rollback", "blog.0005_ensure_data_integrity"]


@pytest.mark.parametrize(("app", "target", "drills", "expected"), [
    ("", "", "", FORWARD),
    ("", "", "fail_atomic", [*FORWARD, "drill_fail_atomic.0001_initial"]),
    ("blog", "", "fail_atomic", FORWARD),
    ("blog", "0004", "", FORWARD[:2]),
    ("blog", "0002", "", []),
])
def test_forward_plans_are_the_ones_migrate_runs(blog_at_0002: str, app: str, target: str, drills: str,
                                                  expected: list[str]) -> None:
    code, result = run_plan(blog_at_0002, app, target, drills)
    assert (code, result.error) == (0, None)
    assert [f"{m.app}.{m.name}" for m in result.migrations] == expected
    assert not any(m.backwards for m in result.migrations)
    arguments = [argument for argument in (app, target) if argument]
    assert expected == djangos_own_plan(blog_at_0002, *arguments, drills=drills)
    if expected:
        assert result.migrations[0].operations == ("AddField",)


def test_the_plan_describes_each_operation_for_the_classifier(blog_at_0002: str) -> None:
    """The facts come from the demo's real migrations, read by Django in the app's environment."""
    code, result = run_plan(blog_at_0002)
    assert code == 0
    first = result.migrations[0]
    assert first.declared is None
    (status_field,) = first.details
    assert status_field["type"] == "AddField" and status_field["describe"] == "Add field status to post"
    assert {key: status_field["field"][key] for key in ("column", "null", "dbDefault", "default")} == {
        "column": "status", "null": False, "dbDefault": True, "default": True}
    assert status_field["field"]["dbType"].startswith("varchar(")
    assert [m.migration_class for m in classify_plan(result.migrations, {})] == ["expand", "unknown", "unknown"]


def test_zero_unapplies_backwards_and_finds_the_irreversible_migration(blog_at_0002: str) -> None:
    code, result = run_plan(blog_at_0002, "blog", "zero")
    assert code == 0
    assert [(m.name, m.backwards, m.reversible) for m in result.migrations] == [
        ("0002_populate_categories", True, False), ("0001_initial", True, True)]
    assert result.migrations[1].operations == ("CreateModel", "CreateModel")
    assert [m.name for m in irreversible_steps(result.migrations)] == ["0002_populate_categories"]
    assert [f"blog.{m.name}" for m in result.migrations] == djangos_own_plan(blog_at_0002, "blog", "zero")


def test_drills_are_planned_with_their_atomic_flag(blog_at_0002: str) -> None:
    code, result = run_plan(blog_at_0002, drills="fail_nonatomic")
    assert code == 0
    drill = result.migrations[-1]
    assert (drill.app, drill.name, drill.atomic) == ("drill_fail_nonatomic", "0001_initial", False)


def test_a_conflict_is_djangos_message(blog_at_0002: str) -> None:
    assert run_plan(blog_at_0002, drills="conflict") == (1, PlanResult((), error=CONFLICT_MESSAGE, reason="Conflict"))


@pytest.mark.parametrize(("app", "target", "reason", "says"), [
    ("blog", "0009", "UnknownTarget", "Cannot find a migration matching '0009' from app 'blog'. "
                                      "Set migrate.target to a migration of blog"),
    ("blog", "000", "UnknownTarget", "More than one migration matches '000' in app 'blog'."),
    ("", "0003", "UnknownTarget", "migrate.target '0003' needs migrate.app"),
    ("shop", "", "UnknownApp", "No installed app with label 'shop'. Set migrate.app to an app with migrations: blog."),
])
def test_bad_input_names_the_field(blog_at_0002: str, app: str, target: str, reason: str, says: str) -> None:
    code, result = run_plan(blog_at_0002, app, target)
    assert (code, result.reason, result.migrations) == (1, reason, ())
    assert result.error is not None and says in result.error


def test_a_database_that_cannot_be_reached_prints_no_plan() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    code, result = run_plan(f"postgres://postgres@127.0.0.1:{closed}/blog")
    assert code != 0 and result.reason == "NoPlan"
    assert result.error is not None and "OperationalError" in result.error


# --- the online migrate script, for real ------------------------------------------------------------------


@pytest.fixture
def blog_at_0005() -> Iterator[str]:
    """The URL of a database where release 2 left the blog (0005): release 3's expand migrations are pending."""
    with throwaway_postgres() as (server_url, _):
        url = create_database(server_url, "blog")
        manage("migrate", "blog", "0005", url=url)
        yield url


def run_online(url: str, migrations: str, attempts: int, lock_timeout_ms: int,
               drills: str = "") -> subprocess.CompletedProcess[str]:
    env = {"DJANGOOPS_DATABASE": "default", "DJANGOOPS_MIGRATIONS": migrations,
           "DJANGOOPS_LOCK_ATTEMPTS": str(attempts), "PGOPTIONS": f"-c lock_timeout={lock_timeout_ms}",
           "BLOG_RELEASE": "3"}
    return manage(url=url, drills=drills, extra_env=env, command=online_migrate_command())


def test_an_online_step_gives_up_on_a_lock_and_tries_again_until_it_is_free(blog_at_0005: str) -> None:
    with psycopg.connect(blog_at_0005) as holder:
        holder.execute("SELECT count(*) FROM blog_post")  # holds ACCESS SHARE until the transaction ends
        released = threading.Thread(target=release_after_a_wait, args=(blog_at_0005, holder))
        released.start()
        done = run_online(blog_at_0005, "blog.0006_post_subtitle blog.0007_post_created_index", attempts=5,
                          lock_timeout_ms=500)
        released.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "blog.0006_post_subtitle gave up waiting for a lock (attempt 1 of 5); trying again" in done.stdout
    assert "Applying blog.0006_post_subtitle... OK" in done.stdout
    assert "Applying blog.0007_post_created_index... OK" in done.stdout
    assert "0008" not in done.stdout, "only the named migrations"


def release_after_a_wait(url: str, holder: psycopg.Connection[tuple[object, ...]]) -> None:
    """Ends the holder's transaction 1.5 s (three lock timeouts) after the migration first waited for its lock, not
    after a fixed time: Django's start on a loaded machine may take longer than any fixed time."""
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 60
        while watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() != (1,):
            assert time.monotonic() < deadline, "the migration never waited for the lock"
            time.sleep(0.02)
    time.sleep(1.5)
    holder.rollback()


def test_an_online_step_out_of_attempts_fails_with_the_lock_error(blog_at_0005: str) -> None:
    with psycopg.connect(blog_at_0005) as holder:
        holder.execute("SELECT count(*) FROM blog_post")
        done = run_online(blog_at_0005, "blog.0006_post_subtitle", attempts=2, lock_timeout_ms=300)
    assert done.returncode != 0
    assert "attempt 1 of 2" in done.stdout and "lock timeout" in done.stdout + done.stderr


def test_a_concurrent_index_whose_build_failed_is_dropped_and_built_again(blog_at_0005: str) -> None:
    """AddIndexConcurrently outside a transaction: a build that gave up leaves an INVALID index behind."""
    drill = "concurrent_index"
    assert manage("migrate", "drill_concurrent_index", "0001", url=blog_at_0005, drills=drill).returncode == 0
    with psycopg.connect(blog_at_0005) as holder:
        # An uncommitted write: CREATE INDEX CONCURRENTLY waits for the transactions that write the table.
        holder.execute("INSERT INTO drill_concurrent_index_entry (name) VALUES ('in flight')")
        released = threading.Thread(target=release_after_a_wait, args=(blog_at_0005, holder))
        released.start()
        done = run_online(blog_at_0005, "drill_concurrent_index.0002_entry_name_index", attempts=5,
                          lock_timeout_ms=500, drills=drill)
        released.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dropped the INVALID index drill_entry_name_idx its failed build left" in done.stdout
    assert "gave up waiting for a lock (attempt 1 of 5); trying again" in done.stdout
    with psycopg.connect(blog_at_0005) as connection:
        valid = connection.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                   "WHERE c.relname = 'drill_entry_name_idx'").fetchall()
    assert valid == [(True,)]


# --- migrate.timeoutSeconds, inside the pod ---------------------------------------------------------------


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started_with_sigint_ignored", [False, True], ids=["foreground", "background-job"])
def test_a_migration_past_its_timeout_is_interrupted_and_its_output_kept(started_with_sigint_ignored: bool) -> None:
    slow = ["python", "-c", "import time; print('  Applying blog.0004_rollback...', flush=True); time.sleep(60)"]
    started = time.monotonic()
    done = subprocess.run([sys.executable, *timed_command(slow, 1)[1:]], capture_output=True, text=True, timeout=30,
                          preexec_fn=_ignore_sigint if started_with_sigint_ignored else None)
    assert done.returncode == 124 and time.monotonic() - started < 15
    assert "Applying blog.0004_rollback..." in done.stdout, "the migration's own output is kept"
    assert f"{TIMEOUT_MARKER}1" in done.stdout
    assert "KeyboardInterrupt" in done.stderr, "SIGINT first: Python says where it was"


def test_a_migration_within_its_timeout_keeps_its_exit_code() -> None:
    failing = ["python", "-c", "import sys; print('done'); sys.exit(3)"]
    done = subprocess.run([sys.executable, *timed_command(failing, 30)[1:]], capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stdout.strip()) == (3, "done")
