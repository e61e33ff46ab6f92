"""The class of each pending migration: beside which release it is safe to apply.

- expand: the running release keeps working while it is applied and after (a new table, a nullable column).
- contract: safe only once the running release is gone (a dropped column the old code still reads).
- breaking: safe at neither time (a renamed column: the old code needs the old name, the new code the new one).
- unknown: code the operator cannot judge (RunPython, RunSQL), until a reviewer classifies it.

Pure: it reads the facts the plan script collected in the app's image (plan.py, djangoops_describe), so every
rule is unit-tested without Django. A migration that declares its stage (django-safemigrate's `safe`,
django-syzygy's `stage`) keeps it; a reviewer may classify an unknown one in spec.migrate.classes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from django_migration_operator.plan import PlannedMigration


class MigrationClass(StrEnum):
    EXPAND = "expand"
    CONTRACT = "contract"
    BREAKING = "breaking"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    migration_class: MigrationClass
    reason: str


Facts = Mapping[str, Any]

EXPAND, CONTRACT, BREAKING, UNKNOWN = (MigrationClass.EXPAND, MigrationClass.CONTRACT, MigrationClass.BREAKING,
                                       MigrationClass.UNKNOWN)

# What the two annotation packages' values mean, as the plan script reports them ("package:value").
DECLARED = {
    "safemigrate:before_deploy": (EXPAND, "Safe.before_deploy (django-safemigrate)"),
    "safemigrate:always": (EXPAND, "Safe.always (django-safemigrate)"),
    "safemigrate:after_deploy": (CONTRACT, "Safe.after_deploy (django-safemigrate)"),
    "syzygy:pre_deploy": (EXPAND, "Stage.PRE_DEPLOY (django-syzygy)"),
    "syzygy:post_deploy": (CONTRACT, "Stage.POST_DEPLOY (django-syzygy)"),
}

# Operations that change Django's model state and nothing in the database.
STATE_ONLY = frozenset({"AlterModelOptions", "AlterModelManagers", "AlterConstraint"})
# Operations whose class never depends on their arguments.
FIXED: dict[str, tuple[MigrationClass, str]] = {
    "CreateModel": (EXPAND, "a new table, which the running release does not use"),
    "DeleteModel": (CONTRACT, "drops a table the running release still uses"),
    "AlterModelTableComment": (EXPAND, "a table comment only"),
    "AddIndex": (EXPAND, "a new index; writes to the table wait while it is built (AddIndexConcurrently avoids "
                         "that)"),
    "AddIndexConcurrently": (EXPAND, "a new index, built without blocking writes"),
    "RemoveIndex": (CONTRACT, "drops an index the running release's queries may rely on"),
    "RemoveIndexConcurrently": (CONTRACT, "drops an index the running release's queries may rely on"),
    "RenameIndex": (EXPAND, "renames an index, which queries do not name"),
    "AddConstraint": (EXPAND, "a new constraint; the table is locked while existing rows are checked"),
    "AddConstraintNotValid": (EXPAND, "a new constraint, not checked against existing rows"),
    "ValidateConstraint": (EXPAND, "validates a constraint without blocking writes"),
    "RemoveConstraint": (CONTRACT, "drops a constraint the running release may rely on"),
    "CreateCollation": (EXPAND, "a new collation"),
    "RemoveCollation": (CONTRACT, "drops a collation the running release may use"),
}
# Operations a non-atomic migration may hold online: a failure leaves only an INVALID index, which the online
# migrate script drops before it tries again or reports.
CLEANABLE = frozenset({"AddIndexConcurrently"})
_VARCHAR = re.compile(r"^varchar\((\d+)\)$")


def classify_plan(plan: Iterable[PlannedMigration], reviewed: Mapping[str, str]) -> tuple[PlannedMigration, ...]:
    """The plan with each migration's class and reason; `reviewed` is spec.migrate.classes."""
    return tuple(replace(migration, migration_class=verdict.migration_class.value, reason=verdict.reason)
                 for migration in plan for verdict in [classify_migration(migration, reviewed)])


def classify_migration(migration: PlannedMigration, reviewed: Mapping[str, str]) -> Verdict:
    if migration.backwards:
        return Verdict(BREAKING, "unapplies the migration: the running release was written for what it takes away")
    # A plan entry without facts (a plan printed by an older operator's script) is judged on nothing: unknown.
    details = migration.details or tuple({"type": kind, "error": "the plan script did not describe it"}
                                         for kind in migration.operations)
    by_operations = combine(classify_operation(operation) for operation in details)
    declared = DECLARED.get(str(migration.declared))
    if declared:
        cls, name = declared
        note = "" if by_operations.migration_class == cls else \
            f"; by its operations it would be {by_operations.migration_class}: {by_operations.reason}"
        return Verdict(cls, f"declared {name}{note}")
    review = reviewed.get(migration.key)
    if review and by_operations.migration_class == UNKNOWN:
        return Verdict(MigrationClass(review), f"classified {review} in spec.migrate.classes after review; "
                                               f"by its operations: {by_operations.reason}")
    return by_operations


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """A migration is as safe as its least safe operation; expand and contract together are neither."""
    by_class: dict[MigrationClass, list[str]] = {}
    for verdict in verdicts:
        by_class.setdefault(verdict.migration_class, []).append(verdict.reason)
    for cls in (BREAKING, UNKNOWN):
        if cls in by_class:
            return Verdict(cls, "; ".join(by_class[cls]))
    if EXPAND in by_class and CONTRACT in by_class:
        return Verdict(BREAKING, f"it both expands ({'; '.join(by_class[EXPAND])}) and contracts "
                                 f"({'; '.join(by_class[CONTRACT])}): no release can run beside all of it; split "
                                 "it into an expand and a contract migration")
    for cls in (CONTRACT, EXPAND):
        if cls in by_class:
            return Verdict(cls, "; ".join(by_class[cls]))
    return Verdict(EXPAND, "it has no operations")


def classify_operation(facts: Facts) -> Verdict:
    cls, why = _rule(facts)
    return Verdict(cls, f"{facts.get('describe') or facts.get('type')}: {why}")


def _rule(facts: Facts) -> tuple[MigrationClass, str]:
    kind = str(facts.get("type"))
    if facts.get("error"):
        return UNKNOWN, f"could not be examined ({facts['error']})"
    if not str(facts.get("module", "django.")).startswith("django."):
        return UNKNOWN, f"{kind} from {facts['module']} is not an operation this operator knows"
    if kind in FIXED:
        return FIXED[kind]
    if kind in STATE_ONLY:
        return EXPAND, "changes Django's model state only, not the database"
    if kind.endswith("Extension"):  # CreateExtension and django.contrib.postgres's named ones
        return EXPAND, "a new database extension"
    if kind == "AddField":
        return _add_field(facts["field"])
    if kind == "RemoveField":
        return _remove_field(facts["field"])
    if kind == "AlterField":
        return _alter_field(facts["before"], facts["after"])
    if kind == "RenameField":
        before, after = facts["before"]["column"], facts["after"]["column"]
        if before == after:
            return EXPAND, "renames the field, not its column"
        return BREAKING, f"renames column {before} to {after}: the running release uses the old name, the next " \
                         "the new one; add the new field, copy, then remove the old one in a later release"
    if kind in ("RenameModel", "AlterModelTable"):
        before, after = facts["tables"]
        if before == after:
            return EXPAND, "renames the model, not its table"
        return BREAKING, f"renames table {before} to {after}: the running release uses the old name"
    if kind in ("AlterUniqueTogether", "AlterIndexTogether"):
        if facts.get("removes"):
            return CONTRACT, "drops a unique or index set the running release may rely on"
        return EXPAND, "a new unique or index set" if facts.get("adds") else "no change in the database"
    if kind == "AlterOrderWithRespectTo":
        if facts.get("ordered"):
            return BREAKING, "adds the NOT NULL _order column, which the running release does not fill"
        return CONTRACT, "drops the _order column, which the running release still fills"
    if kind in ("RunPython", "RunSQL"):
        if facts.get("noop"):
            return EXPAND, "does nothing"
        what = "Python code" if kind == "RunPython" else "SQL"
        return UNKNOWN, f"runs {what} the operator cannot judge; once reviewed, classify the migration in " \
                        "spec.migrate.classes"
    if kind == "SeparateDatabaseAndState":
        database = [classify_operation(operation) for operation in facts.get("database", [])]
        if not database:
            return EXPAND, "changes Django's model state only, not the database"
        inner = combine(database)
        return inner.migration_class, f"in the database: {inner.reason}"
    return UNKNOWN, f"{kind} is not an operation this operator classifies yet"


def _add_field(field: Facts) -> tuple[MigrationClass, str]:
    if field["manyToMany"]:
        return EXPAND, "a new join table, which the running release does not use"
    if field["generated"]:
        return EXPAND, "a new generated column, which inserts leave to the database"
    if field["null"]:
        return EXPAND, "a new nullable column, which the running release leaves NULL"
    if field["dbDefault"]:
        return EXPAND, "a new column with a database default, which fills it for the running release"
    only = "only a Python default" if field["default"] else "no default"
    return BREAKING, f"a new NOT NULL column {field['column']} with {only}: the running release's inserts leave " \
                     "it out and fail; give the field null=True or a db_default"


def _remove_field(field: Facts) -> tuple[MigrationClass, str]:
    if field["manyToMany"]:
        return CONTRACT, "drops a join table the running release still uses"
    if field["null"] or field["dbDefault"] or field["generated"]:
        return CONTRACT, f"drops column {field['column']}, which the running release still reads"
    return BREAKING, f"drops NOT NULL column {field['column']}, which has no database default: until it is " \
                     "dropped, the next release's inserts leave it out and fail; make it nullable (or give it a " \
                     "db_default) in an earlier release"


def _alter_field(before: Facts, after: Facts) -> tuple[MigrationClass, str]:
    column = after["column"]
    if before["column"] != after["column"]:
        return BREAKING, f"renames column {before['column']} to {column}: the running release uses the old name"
    if before["dbType"] != after["dbType"]:
        if _widens(str(before["dbType"]), str(after["dbType"])):
            return EXPAND, f"widens column {column} from {before['dbType']} to {after['dbType']}"
        return BREAKING, f"changes the type of column {column} from {before['dbType']} to {after['dbType']}: the " \
                         "table is rewritten under an exclusive lock and the running release expects the old type"
    if before["null"] and not after["null"]:
        return BREAKING, f"makes column {column} NOT NULL: the running release may still write NULL, and the " \
                         "table is locked while existing rows are checked"
    return EXPAND, f"column {column} keeps its type and allows what it allowed before"


def _widens(before: str, after: str) -> bool:
    """varchar(n) to a longer varchar or to text: PostgreSQL changes the catalog only, and every value still fits."""
    old = _VARCHAR.match(before)
    if not old:
        return False
    new = _VARCHAR.match(after)
    return after == "text" or bool(new and int(new[1]) >= int(old[1]))


# --- the strategy a plan allows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyChoice:
    strategy: str  # Offline or Online: what the run does
    reason: str
    refused: tuple[str, ...] = ()  # strategy Online was asked for, and this is why the plan cannot run so


def choose_strategy(asked: str, plan: Sequence[PlannedMigration], release_image: str | None) -> StrategyChoice:
    """Offline, Online, or for Auto whichever the plan allows; `plan` is classified (classify_plan)."""
    if asked == "Offline":
        return StrategyChoice("Offline", "spec.strategy is Offline")
    obstacles = online_obstacles(plan, release_image)
    if asked == "Online":
        return StrategyChoice("Online", "spec.strategy is Online", refused=tuple(obstacles))
    if obstacles:
        return StrategyChoice("Offline", "Auto chose Offline: " + "; ".join(obstacles))
    return StrategyChoice("Online", "Auto chose Online: every pending migration is atomic and expand or contract, "
                                    "expand first")


def online_obstacles(plan: Sequence[PlannedMigration], release_image: str | None) -> list[str]:
    """Why the app could not keep serving through this plan: expand, roll out, contract, in that order."""
    obstacles = []
    if not release_image:
        obstacles.append("app.image is not set: an online run rolls the app out to the release image between its "
                         "expand and contract migrations")
    contract_seen: str | None = None
    for migration in plan:
        if migration.migration_class in (BREAKING, UNKNOWN):
            obstacles.append(f"{migration.key} is {migration.migration_class} ({migration.reason})")
        elif not migration.atomic and not all(kind in CLEANABLE for kind in migration.operations):
            obstacles.append(f"{migration.key} is not atomic: a failure half-way would leave part of it applied "
                             "under the serving app (only AddIndexConcurrently, whose failed build the operator "
                             "cleans up, runs online without a transaction)")
        elif migration.migration_class == CONTRACT:
            contract_seen = contract_seen or migration.key
        elif contract_seen:
            obstacles.append(f"{migration.key} (expand) depends on running after {contract_seen} (contract): the "
                             "contract must wait for the rollout, the expand must not")
    return obstacles
