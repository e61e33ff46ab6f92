"""The plan: which migrations a run applies or unapplies, computed by Django itself in the app's image.

The plan Job runs `manage.py shell -c PLAN_SCRIPT`, so nothing has to be installed in the app image. The script
prints one line `DJANGOOPS_PLAN {json}`; `parse_plan_output` reads it back from the Job's log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django_migration_operator import messages
from django_migration_operator.status import Reason

PLAN_MARKER = "DJANGOOPS_PLAN "

# Run by Django's shell, possibly an old Django on an old Python: plain syntax, standard library only.
# Everything lives inside one function because older Django versions exec the command with separate
# globals and locals, where a top-level helper would not be visible from another function; the one other
# function, djangoops_describe, is passed in as an argument for that reason.
# Exit codes: 0 with {"plan": [...]} (possibly empty), 1 with {"error": ..., "reason": ...};
# any other failure is an exception, a traceback and a non-zero exit, with no marker line.
_PLAN_SCRIPT_FUNCTION = '''
def djangoops_plan(marker, describe):
    import json
    import os
    import sys

    from django.apps import apps
    from django.db import connections
    from django.db.migrations.exceptions import AmbiguityError, InconsistentMigrationHistory
    from django.db.migrations.executor import MigrationExecutor

    alias = os.environ.get("DJANGOOPS_DATABASE") or "default"
    app = os.environ.get("DJANGOOPS_APP") or None
    target = os.environ.get("DJANGOOPS_TARGET") or None

    def fail(reason, message):
        print(marker + json.dumps({"error": message, "reason": reason}), flush=True)
        sys.exit(1)

    executor = MigrationExecutor(connections[alias])
    loader = executor.loader

    # The same checks, in the same order and with the same messages, as `manage.py migrate`:
    # whatever would stop the migrate Job is found here, before the app is stopped.
    try:
        loader.check_consistent_history(connections[alias])
    except InconsistentMigrationHistory as error:
        fail("InconsistentHistory", str(error))
    conflicts = loader.detect_conflicts()
    if conflicts:
        name_str = "; ".join(
            "%s in %s" % (", ".join(names), label) for label, names in conflicts.items()
        )
        fail(
            "Conflict",
            "Conflicting migrations detected; multiple leaf nodes in the migration graph: (%s).\\n"
            "To fix them run 'python manage.py makemigrations --merge'" % name_str,
        )

    migrated_apps = ", ".join(sorted(loader.migrated_apps))
    if target and not app:
        fail("UnknownTarget", "migrate.target %r needs migrate.app: a target is a migration of one app" % target)
    if app:
        try:
            apps.get_app_config(app)
        except LookupError as error:
            fail("UnknownApp", "%s Set migrate.app to an app with migrations: %s." % (error, migrated_apps))
        if app not in loader.migrated_apps:
            fail(
                "UnknownApp",
                "App '%s' does not have migrations. Set migrate.app to an app with migrations: %s."
                % (app, migrated_apps),
            )

    if app and target == "zero":
        targets = [(app, None)]
    elif app and target:
        names = ", ".join(sorted(name for label, name in loader.disk_migrations if label == app))
        hint = 'Set migrate.target to a migration of %s (a name or a unique prefix: %s) or to "zero".' % (app, names)
        try:
            migration = loader.get_migration_by_prefix(app, target)
        except AmbiguityError:
            fail("UnknownTarget", "More than one migration matches '%s' in app '%s'. Please be more specific. %s"
                 % (target, app, hint))
        except KeyError:
            fail("UnknownTarget", "Cannot find a migration matching '%s' from app '%s'. %s" % (target, app, hint))
        key = (app, migration.name)
        # As migrate does: a partially applied squashed migration is not in the graph, its last
        # replaced migration is.
        if key not in loader.graph.nodes and key in loader.replacements:
            key = loader.replacements[key].replaces[-1]
        targets = [key]
    elif app:
        targets = [key for key in loader.graph.leaf_nodes() if key[0] == app]
    else:
        targets = loader.graph.leaf_nodes()

    def unreadable(error):
        return "%s: %s" % (type(error).__name__, error)

    plan = []
    # The state before each migration, walked forward as `migrate` walks it: what each operation changes is
    # read off the states on either side of it. What cannot be read leaves the operations unknown to the
    # classifier; it never stops the plan.
    state, problem = None, None
    try:
        state = executor._create_project_state(with_applied_migrations=True)
    except Exception as error:
        problem = unreadable(error)
    for migration, backwards in executor.migration_plan(targets):
        entry = {
            "app": migration.app_label,
            "name": migration.name,
            "atomic": bool(migration.atomic),
            "reversible": all(operation.reversible for operation in migration.operations),
            "backwards": bool(backwards),
            "operations": [type(operation).__name__ for operation in migration.operations],
        }
        if not backwards and state is not None:
            try:
                entry["declared"], entry["details"], state = describe(migration, state, connections[alias])
            except Exception as error:
                state, problem = None, unreadable(error)
        if not backwards and state is None:
            entry["details"] = [{"type": kind, "error": problem} for kind in entry["operations"]]
        plan.append(entry)
    print(marker + json.dumps({"plan": plan}), flush=True)
'''

# What the classifier (classify.py) needs to know of each operation, read by Django in the app's image. Same rules
# as the plan function: plain syntax, standard library and Django only, every helper nested inside.
DESCRIBE_FUNCTION = '''
def djangoops_describe(migration, state, connection):
    """(the stage the migration declares, the facts of each operation, the project state after it)."""
    from django.db import migrations, models

    app_label = migration.app_label

    def declared():
        # django-safemigrate: `safe = Safe.before_deploy` (an Enum up to 4.x; a classmethod, often called,
        # whose result has .when, from 5.0) or True/False (1.x). django-syzygy: `stage = Stage.PRE_DEPLOY`.
        # Read by name, so the app needs neither package unless its migrations import one.
        safe = getattr(migration, "safe", None)
        if callable(safe):
            safe = safe()
        safe = getattr(safe, "when", safe)
        if isinstance(safe, bool):
            return "safemigrate:" + ("before_deploy" if safe else "after_deploy")
        if safe is not None:
            return "safemigrate:" + str(getattr(safe, "value", safe))
        stage = getattr(migration, "stage", None)
        if stage is not None:
            return "syzygy:" + str(getattr(stage, "name", stage)).lower()
        return None

    def column(at, model_name, name):
        field = at.apps.get_model(app_label, model_name)._meta.get_field(name)
        return {
            "column": getattr(field, "column", None),
            "dbType": None if field.many_to_many else field.db_parameters(connection=connection)["type"],
            "null": bool(field.null),
            "dbDefault": getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED,
            "default": bool(field.has_default()),
            "manyToMany": bool(field.many_to_many),
            "generated": bool(getattr(field, "generated", False)),
        }

    def table(at, model_name):
        return at.apps.get_model(app_label, model_name)._meta.db_table

    def together(at, operation):
        value = at.models[app_label, operation.name_lower].options.get(operation.option_name) or ()
        return set(tuple(fields) for fields in value)

    def facts(operation, before, after):
        kind = type(operation).__name__
        found = {"type": kind, "module": type(operation).__module__, "describe": operation.describe()}
        if kind in ("AddField", "RemoveField"):
            found["field"] = column(after if kind == "AddField" else before, operation.model_name, operation.name)
        elif kind == "AlterField":
            found["before"] = column(before, operation.model_name, operation.name)
            found["after"] = column(after, operation.model_name, operation.name)
        elif kind == "RenameField":
            found["before"] = column(before, operation.model_name, operation.old_name)
            found["after"] = column(after, operation.model_name, operation.new_name)
        elif kind == "RenameModel":
            found["tables"] = [table(before, operation.old_name), table(after, operation.new_name)]
        elif kind == "AlterModelTable":
            found["tables"] = [table(before, operation.name), table(after, operation.name)]
        elif kind == "AlterOrderWithRespectTo":
            found["ordered"] = bool(operation.order_with_respect_to)
        elif kind in ("AlterUniqueTogether", "AlterIndexTogether"):
            old, new = together(before, operation), together(after, operation)
            found["adds"], found["removes"] = bool(new - old), bool(old - new)
        elif kind == "RunPython":
            found["noop"] = operation.code is migrations.RunPython.noop
        elif kind == "RunSQL":
            found["noop"] = operation.sql in ("", [], ())
        elif kind == "SeparateDatabaseAndState":
            found["database"] = walk(operation.database_operations, before)[0]
        return found

    def walk(operations, state):
        described = []
        for operation in operations:
            after = state.clone()
            operation.state_forwards(app_label, after)
            try:
                described.append(facts(operation, state, after))
            except Exception as error:  # what cannot be read is classified unknown, never guessed
                described.append({"type": type(operation).__name__, "module": type(operation).__module__,
                                  "error": "%s: %s" % (type(error).__name__, error)})
            state = after
        return described, state

    described, state = walk(migration.operations, state)
    return declared(), described, state
'''

PLAN_SCRIPT = (f"{_PLAN_SCRIPT_FUNCTION}\n{DESCRIBE_FUNCTION}\n"
               f"djangoops_plan({PLAN_MARKER!r}, djangoops_describe)\n")


def plan_command() -> list[str]:
    """The plan Job's command. Parameters come from DJANGOOPS_DATABASE, DJANGOOPS_APP and DJANGOOPS_TARGET."""
    return ["python", "manage.py", "shell", "-c", PLAN_SCRIPT]


# An online step applies named migrations one by one, in plan order, each under the short lock timeout PGOPTIONS
# sets: an atomic migration that gave up waiting for a lock was rolled back whole by PostgreSQL, so it is tried
# again a bounded number of times; the app's queries never queue behind it for longer than the timeout. The one
# kind of non-atomic migration an online run takes, AddIndexConcurrently only, leaves an INVALID index when its
# build fails: that index is dropped before the migration is tried again or the failure reported.
_ONLINE_MIGRATE_FUNCTION = '''
def djangoops_migrate():
    import os
    import time

    from django.core.management import call_command
    from django.db import connections
    from django.db.migrations.loader import MigrationLoader

    alias = os.environ.get("DJANGOOPS_DATABASE") or "default"
    attempts = int(os.environ.get("DJANGOOPS_LOCK_ATTEMPTS") or "1")
    connection = connections[alias]
    loader = MigrationLoader(connection)

    def gave_up_on_a_lock(error):
        while error is not None:
            if "55P03" in (getattr(error, "sqlstate", None), getattr(error, "pgcode", None)):
                return True
            error = error.__cause__ or error.__context__
        return False

    def drop_invalid_indexes(migration):
        names = [operation.index.name for operation in migration.operations
                 if type(operation).__name__ == "AddIndexConcurrently"]
        with connection.cursor() as cursor:
            # Waiting here blocks no query of the app (DROP INDEX CONCURRENTLY): no lock timeout.
            cursor.execute("SET lock_timeout = 0")
            for name in names:
                cursor.execute("SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                               "WHERE c.relname = %s AND NOT i.indisvalid", [name])
                if cursor.fetchone():
                    cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS %s" % connection.ops.quote_name(name))
                    print("  dropped the INVALID index %s its failed build left" % name, flush=True)
            cursor.execute("RESET lock_timeout")

    for key in os.environ["DJANGOOPS_MIGRATIONS"].split():
        app, name = key.split(".", 1)
        migration = loader.get_migration(app, name)
        for attempt in range(1, attempts + 1):
            try:
                call_command("migrate", app, name, database=alias, interactive=False, verbosity=1)
                break
            except Exception as error:
                connection.close()
                if not migration.atomic:
                    drop_invalid_indexes(migration)
                if attempt == attempts or not gave_up_on_a_lock(error):
                    raise
                print("  %s gave up waiting for a lock (attempt %d of %d); trying again"
                      % (key, attempt, attempts), flush=True)
                time.sleep(min(0.5 * 2 ** attempt, 5))
'''

ONLINE_MIGRATE_SCRIPT = f"{_ONLINE_MIGRATE_FUNCTION}\ndjangoops_migrate()\n"


def online_migrate_command() -> list[str]:
    """The online migrate Job's command: DJANGOOPS_MIGRATIONS names the migrations (app.name, in plan order)."""
    return ["python", "manage.py", "shell", "-c", ONLINE_MIGRATE_SCRIPT]


TIMEOUT_MARKER = "DJANGOOPS_TIMEOUT "

# migrate.timeoutSeconds, enforced inside the pod: at the deadline the migration gets SIGINT (Django prints where it
# was), then SIGKILL after a grace, and the pod ends by itself with its log intact. When the Job controller's
# deadline ends a pod instead, it deletes the pod first, and the log with it. Python is in every Django image.
# A process started with SIGINT ignored (a shell's background job) passes that on, and an ignored SIGINT would do
# nothing until the SIGKILL: the wrapper handles SIGINT itself, so its child starts with the default.
_TIMEOUT_WRAPPER = '''
import signal, subprocess, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
seconds, command = float(sys.argv[1]), sys.argv[2:]
child = subprocess.Popen([sys.executable if command[0] == "python" else command[0]] + command[1:])
try:
    sys.exit(child.wait(timeout=seconds))
except subprocess.TimeoutExpired:
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=%d)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    print("%s%%g" %% seconds, flush=True)
    sys.exit(124)
'''
TIMEOUT_GRACE_SECONDS = 10


def timed_command(command: list[str], seconds: int) -> list[str]:
    """`command`, stopped after `seconds` by a wrapper that prints TIMEOUT_MARKER and exits 124."""
    return ["python", "-c", _TIMEOUT_WRAPPER % (TIMEOUT_GRACE_SECONDS, TIMEOUT_MARKER), str(seconds), *command]


def migrate_command(alias: str, app: str | None, target: str | None) -> list[str]:
    """`manage.py migrate [app] [target]`: the plan Job has refused a target without an app already."""
    return ["python", "manage.py", "migrate", *([app] if app else []), *([target] if target else []),
            "--database", alias, "--noinput"]


REHEARSAL_MARKER = "DJANGOOPS_REHEARSAL "

# The rehearsal's migrate container: before Django starts, the variable the app reads its database URL from is set
# to the scratch copy's URL (the operator's URL with the scratch database's name), then the timed migrate runs.
_POINT_AT_SCRATCH = """
import os, sys, time
from urllib.parse import urlsplit, urlunsplit
os.environ["DJANGOOPS_STARTED"] = repr(time.time())  # the migration's time includes Django's start, as migrate's
source = urlsplit(os.environ["DJANGOOPS_SOURCE_URL"])
os.environ[os.environ["DJANGOOPS_URL_ENV"]] = urlunsplit(source._replace(path="/" + os.environ["DJANGOOPS_SCRATCH"]))
os.execvp(sys.argv[1], sys.argv[1:])
"""

# And inside Django, the check that makes it safe: the database Django connects to is the scratch copy, or nothing
# is migrated (an app whose settings do not read that variable would migrate production).
_REHEARSE_FUNCTION = """
def djangoops_rehearse():
    import json
    import os
    import time

    from django.core.management import call_command
    from django.db import connections

    alias = os.environ.get("DJANGOOPS_DATABASE") or "default"
    scratch = os.environ["DJANGOOPS_SCRATCH"]
    name = connections[alias].settings_dict.get("NAME")
    if name != scratch:
        raise SystemExit(
            f"the rehearsal refused to migrate: database {alias!r} of the app is {name!r}, not the scratch copy "
            f"{scratch!r}, so its settings do not read {os.environ['DJANGOOPS_URL_ENV']}; nothing was migrated. "
            "Set rehearsal.urlEnv to the variable the app's settings read its database URL from")
    arguments = [a for a in (os.environ.get("DJANGOOPS_APP"), os.environ.get("DJANGOOPS_TARGET")) if a]
    call_command("migrate", *arguments, database=alias, interactive=False)
    seconds = time.time() - float(os.environ["DJANGOOPS_STARTED"])
    print(""" + repr(REHEARSAL_MARKER) + """ + json.dumps({"migrateSeconds": round(seconds, 2)}), flush=True)
"""
REHEARSE_SCRIPT = _REHEARSE_FUNCTION + "\ndjangoops_rehearse()\n"


def rehearse_command(seconds: int) -> list[str]:
    """The rehearsal's migrate command: pointed at the scratch copy, checked, migrated, timed, under the timeout."""
    return ["python", "-c", _POINT_AT_SCRATCH,
            *timed_command(["python", "manage.py", "shell", "-c", REHEARSE_SCRIPT], seconds)]


def parse_marker(log: str, marker: str) -> dict[str, Any] | None:
    """The JSON object on the last line of `log` that starts with `marker`, None when no line does.

    Raises ValueError when that line does not carry a JSON object (a truncated log, for example).
    """
    for line in reversed(log.splitlines()):
        if line.startswith(marker):
            payload = json.loads(line[len(marker):])
            if not isinstance(payload, dict):
                raise ValueError(f"{marker.strip()} line carries {type(payload).__name__}, not a JSON object")
            return payload
    return None


@dataclass(frozen=True)
class PlannedMigration:
    app: str
    name: str
    atomic: bool
    reversible: bool
    backwards: bool
    operations: tuple[str, ...]
    # From the plan script only: the stage the migration declares and the facts of each operation (classify.py).
    declared: str | None = None
    details: tuple[dict[str, Any], ...] = ()
    # Set by the classifier at Planning and kept in status.
    migration_class: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.app}.{self.name}"

    def to_status(self) -> dict[str, Any]:
        """The status.plan entry: the plan script's shape, with the class and its reason instead of the facts."""
        entry = {"app": self.app, "name": self.name, "atomic": self.atomic, "reversible": self.reversible,
                 "backwards": self.backwards, "operations": list(self.operations)}
        if self.migration_class:
            entry.update({"class": self.migration_class, "reason": self.reason})
        return entry

    @classmethod
    def from_status(cls, entry: dict[str, Any]) -> PlannedMigration:
        """Reads a status.plan entry or a plan script entry; KeyError or TypeError when one is malformed."""
        return cls(app=str(entry["app"]), name=str(entry["name"]), atomic=bool(entry["atomic"]),
                   reversible=bool(entry["reversible"]), backwards=bool(entry.get("backwards", False)),
                   operations=tuple(str(operation) for operation in entry["operations"]),
                   declared=entry.get("declared"), details=tuple(dict(d) for d in entry.get("details", [])),
                   migration_class=entry.get("class"), reason=entry.get("reason"))


@dataclass(frozen=True)
class PlanResult:
    """Either the migrations to run (possibly none) or why there is no plan (error and reason set)."""

    migrations: tuple[PlannedMigration, ...]
    error: str | None = None
    reason: str | None = None


def parse_plan_output(log: str) -> PlanResult:
    """Reads the plan Job's log: Django's own output (warnings, logging) may surround the marker line."""
    try:
        payload = parse_marker(log, PLAN_MARKER)
        if payload is None:
            return PlanResult((), error=messages.no_plan(log), reason=Reason.NO_PLAN)
        if "error" in payload:
            return PlanResult((), error=str(payload["error"]), reason=str(payload.get("reason") or Reason.PLAN_ERROR))
        return PlanResult(tuple(PlannedMigration.from_status(entry) for entry in payload["plan"]))
    except (ValueError, KeyError, TypeError) as error:
        return PlanResult((), error=messages.unreadable_plan(error, log), reason=Reason.BAD_PLAN)


def irreversible_steps(plan: Iterable[PlannedMigration]) -> list[PlannedMigration]:
    """The migrations the plan must unapply but cannot: `migrate` would stop at the first one."""
    return [migration for migration in plan if migration.backwards and not migration.reversible]
