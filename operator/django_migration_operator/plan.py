"""The plan: which migrations a run applies or unapplies, computed by Django itself in the app's image.

The plan Job runs `manage.py shell -c PLAN_SCRIPT`, so nothing has to be installed in the app image. The script
prints one line `DJANGOOPS_PLAN {json}`; `parse_plan_output` reads it back from the Job's log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PLAN_MARKER = "DJANGOOPS_PLAN "

# How many log lines a "no plan" error quotes: enough for a traceback's last frame and its exception.
_LOG_TAIL_LINES = 8

# Run by Django's shell, possibly an old Django on an old Python: plain syntax, standard library only.
# Everything lives inside one function because older Django versions exec the command with separate
# globals and locals, where a top-level helper would not be visible from another function.
# Exit codes: 0 with {"plan": [...]} (possibly empty), 1 with {"error": ..., "reason": ...};
# any other failure is an exception, a traceback and a non-zero exit, with no marker line.
_PLAN_SCRIPT_FUNCTION = '''
def djangoops_plan(marker):
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

    plan = [
        {
            "app": migration.app_label,
            "name": migration.name,
            "atomic": bool(migration.atomic),
            "reversible": all(operation.reversible for operation in migration.operations),
            "backwards": bool(backwards),
            "operations": [type(operation).__name__ for operation in migration.operations],
        }
        for migration, backwards in executor.migration_plan(targets)
    ]
    print(marker + json.dumps({"plan": plan}), flush=True)
'''

PLAN_SCRIPT = f"{_PLAN_SCRIPT_FUNCTION}\ndjangoops_plan({PLAN_MARKER!r})\n"


def plan_command() -> list[str]:
    """The plan Job's command. Parameters come from DJANGOOPS_DATABASE, DJANGOOPS_APP and DJANGOOPS_TARGET."""
    return ["python", "manage.py", "shell", "-c", PLAN_SCRIPT]


def migrate_command(alias: str, app: str | None, target: str | None) -> list[str]:
    """`manage.py migrate [app] [target]`: the plan Job has refused a target without an app already."""
    return ["python", "manage.py", "migrate", *([app] if app else []), *([target] if target else []),
            "--database", alias, "--noinput"]


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

    def to_status(self) -> dict[str, Any]:
        """The status.plan entry; the plan script prints the same shape."""
        return {"app": self.app, "name": self.name, "atomic": self.atomic, "reversible": self.reversible,
                "backwards": self.backwards, "operations": list(self.operations)}

    @classmethod
    def from_status(cls, entry: dict[str, Any]) -> PlannedMigration:
        """Reads a status.plan entry or a plan script entry; KeyError or TypeError when one is malformed."""
        return cls(app=str(entry["app"]), name=str(entry["name"]), atomic=bool(entry["atomic"]),
                   reversible=bool(entry["reversible"]), backwards=bool(entry.get("backwards", False)),
                   operations=tuple(str(operation) for operation in entry["operations"]))


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
            return PlanResult((), error=f"the plan Job printed no plan; last lines:\n{_tail(log)}", reason="NoPlan")
        if "error" in payload:
            return PlanResult((), error=str(payload["error"]), reason=str(payload.get("reason") or "PlanError"))
        return PlanResult(tuple(PlannedMigration.from_status(entry) for entry in payload["plan"]))
    except (ValueError, KeyError, TypeError) as error:
        return PlanResult((), error=f"the plan Job printed a plan that cannot be read ({error!r}); last lines:\n"
                                    f"{_tail(log)}", reason="BadPlan")


def irreversible_steps(plan: Iterable[PlannedMigration]) -> list[PlannedMigration]:
    """The migrations the plan must unapply but cannot: `migrate` would stop at the first one."""
    return [migration for migration in plan if migration.backwards and not migration.reversible]


def _tail(log: str) -> str:
    lines = [line for line in log.splitlines() if line.strip()]
    return "\n".join(lines[-_LOG_TAIL_LINES:])
