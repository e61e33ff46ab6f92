"""The classifier, for every operation of Django's migration operations reference and django.contrib.postgres.

Each case is a real Django operation applied to a real project state: the plan script's describe function (the
code the plan Job runs in the app's image) reads its facts, and the classifier judges them. No database is
connected: PostgreSQL's backend gives the column types from its type table alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django
import pytest
from django.conf import settings

from django_migration_operator.classify import MigrationClass, choose_strategy, classify_migration, classify_plan
from django_migration_operator.plan import DESCRIBE_FUNCTION, PlannedMigration

if not settings.configured:
    settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "never_used"}},
                       INSTALLED_APPS=["django.contrib.postgres"], USE_TZ=True)
    django.setup()

# Imported once Django is configured: the postgres operations need the app registry.
from django.contrib.postgres import operations as postgres
from django.db import connections, migrations, models
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from django_safemigrate import Safe
from syzygy import Stage

EXPAND, CONTRACT, BREAKING, UNKNOWN = "expand", "contract", "breaking", "unknown"

_describe_namespace: dict[str, Any] = {}
exec(DESCRIBE_FUNCTION, _describe_namespace)  # the function as the plan Job defines it
describe: Callable[..., tuple[str | None, list[dict[str, Any]], ProjectState]] = \
    _describe_namespace["djangoops_describe"]


def base_state() -> ProjectState:
    """shop.Author and shop.Book, as a release that already ran would have them."""
    state = ProjectState()
    for operation in (
        migrations.CreateModel("Author", [
            ("id", models.BigAutoField(primary_key=True)),
            ("name", models.CharField(max_length=100)),
        ]),
        migrations.CreateModel("Book", [
            ("id", models.BigAutoField(primary_key=True)),
            ("title", models.CharField(max_length=100)),
            ("pages", models.IntegerField(null=True)),
            ("author", models.ForeignKey("shop.Author", on_delete=models.CASCADE)),
            ("fans", models.ManyToManyField("shop.Author", related_name="favourites")),
        ], options={"unique_together": {("title", "author")},
                    "indexes": [models.Index(fields=["title"], name="book_title_idx")],
                    "constraints": [models.CheckConstraint(condition=models.Q(pages__gte=0),
                                                           name="book_pages_positive")]}),
    ):
        operation.state_forwards("shop", state)
    return state


def migration(*operations: Operation, **attributes: Any) -> migrations.Migration:
    instance = migrations.Migration("0002_change", "shop")
    # What a migration file declares on its class, Migration.__init__ copies to the instance: set here alike.
    for name, value in {"operations": list(operations), **attributes}.items():
        setattr(instance, name, value)
    return instance


def planned(instance: migrations.Migration) -> PlannedMigration:
    """The plan entry the plan script prints for `instance`, parsed as the operator parses it."""
    declared, details, _ = describe(instance, base_state(), connections["default"])
    return PlannedMigration(app="shop", name=instance.name, atomic=True, reversible=True, backwards=False,
                            operations=tuple(type(o).__name__ for o in instance.operations), declared=declared,
                            details=tuple(details))


def class_of(*operations: Operation, reviewed: dict[str, str] | None = None, **attributes: Any) -> tuple[str, str]:
    verdict = classify_migration(planned(migration(*operations, **attributes)), reviewed or {})
    return verdict.migration_class.value, verdict.reason


def forwards(apps: Any, schema_editor: Any) -> None:
    """A data migration's code: the operator cannot know what it does."""


class VendorOperation(Operation):
    """An operation from a third-party package."""

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def describe(self) -> str:
        return "Vendor operation"


def name_index(name: str) -> models.Index:
    return models.Index(fields=["pages"], name=name)


POSITIVE = models.CheckConstraint(condition=models.Q(pages__gte=1), name="book_pages_one")
CASES: list[tuple[Operation, str, str]] = [
    # Models
    (migrations.CreateModel("Shelf", [("id", models.BigAutoField(primary_key=True))]), EXPAND, "a new table"),
    (migrations.DeleteModel("Book"), CONTRACT, "drops a table"),
    (migrations.RenameModel("Book", "Volume"), BREAKING, "renames table shop_book to shop_volume"),
    (migrations.AlterModelTable("Book", "library_book"), BREAKING, "renames table shop_book to library_book"),
    (migrations.AlterModelTable("Book", "shop_book"), EXPAND, "not its table"),
    (migrations.AlterModelTableComment("Book", "every book"), EXPAND, "comment"),
    (migrations.AlterUniqueTogether("Book", {("title", "author"), ("title", "pages")}), EXPAND, "a new unique"),
    (migrations.AlterUniqueTogether("Book", set()), CONTRACT, "drops a unique"),
    (migrations.AlterIndexTogether("Book", {("title", "pages")}), EXPAND, "a new unique or index set"),
    (migrations.AlterOrderWithRespectTo("Book", "author"), BREAKING, "_order"),
    (migrations.AlterModelOptions("Book", {"verbose_name": "volume"}), EXPAND, "model state only"),
    (migrations.AlterModelManagers("Book", [("shelved", models.Manager())]), EXPAND, "model state only"),
    # Fields
    (migrations.AddField("Book", "subtitle", models.CharField(max_length=80, null=True)), EXPAND, "nullable"),
    (migrations.AddField("Book", "status", models.CharField(max_length=20, db_default="draft")), EXPAND,
     "database default"),
    (migrations.AddField("Book", "isbn", models.CharField(max_length=13, default="")), BREAKING,
     "NOT NULL column isbn with only a Python default"),
    (migrations.AddField("Book", "editor", models.ForeignKey("shop.Author", models.CASCADE, default=1,
                                                            related_name="edited"), preserve_default=False),
     BREAKING, "NOT NULL column editor_id with no default"),
    (migrations.AddField("Book", "readers", models.ManyToManyField("shop.Author", related_name="read")), EXPAND,
     "join table"),
    (migrations.AddField("Book", "double", models.GeneratedField(expression=models.F("pages") * 2,
                                                                 output_field=models.IntegerField(),
                                                                 db_persist=True)), EXPAND, "generated"),
    (migrations.RemoveField("Book", "pages"), CONTRACT, "drops column pages"),
    (migrations.RemoveField("Book", "fans"), CONTRACT, "join table"),
    (migrations.RemoveField("Book", "title"), BREAKING, "drops NOT NULL column title"),
    (migrations.AlterField("Book", "pages", models.BigIntegerField(null=True)), BREAKING,
     "changes the type of column pages from integer to bigint"),
    (migrations.AlterField("Book", "title", models.CharField(max_length=200)), EXPAND,
     "widens column title from varchar(100) to varchar(200)"),
    (migrations.AlterField("Book", "title", models.TextField()), EXPAND, "widens"),
    (migrations.AlterField("Book", "title", models.CharField(max_length=50)), BREAKING, "changes the type"),
    (migrations.AlterField("Book", "pages", models.IntegerField()), BREAKING, "makes column pages NOT NULL"),
    (migrations.AlterField("Book", "title", models.CharField(max_length=100, null=True)), EXPAND, "keeps its type"),
    (migrations.AlterField("Book", "title", models.CharField(max_length=100, db_index=True)), EXPAND, "keeps"),
    (migrations.AlterField("Book", "title", models.CharField(max_length=100, db_column="heading")), BREAKING,
     "renames column title to heading"),
    (migrations.RenameField("Book", "title", "heading"), BREAKING, "renames column title to heading"),
    # Indexes and constraints
    (migrations.AddIndex("Book", name_index("book_pages_idx")), EXPAND, "writes to the table wait"),
    (migrations.RemoveIndex("Book", "book_title_idx"), CONTRACT, "drops an index"),
    (migrations.RenameIndex("Book", new_name="book_heading_idx", old_name="book_title_idx"), EXPAND, "renames"),
    (migrations.AddConstraint("Book", POSITIVE), EXPAND, "a new constraint"),
    (migrations.RemoveConstraint("Book", "book_pages_positive"), CONTRACT, "drops a constraint"),
    (migrations.AlterConstraint("Book", "book_pages_positive", models.CheckConstraint(
        condition=models.Q(pages__gte=0), name="book_pages_positive", violation_error_message="no")), EXPAND,
     "model state only"),
    # Special operations
    (migrations.RunSQL("UPDATE shop_book SET pages = 0"), UNKNOWN, "runs SQL"),
    (migrations.RunSQL(migrations.RunSQL.noop), EXPAND, "does nothing"),
    (migrations.RunPython(forwards), UNKNOWN, "runs Python code"),
    (migrations.RunPython(migrations.RunPython.noop), EXPAND, "does nothing"),
    (migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField("Book", "pages")]), EXPAND,
     "model state only"),
    (migrations.SeparateDatabaseAndState(database_operations=[migrations.RenameField("Book", "title", "name")]),
     BREAKING, "in the database: Rename field title on Book to name: renames column title to name"),
    # django.contrib.postgres
    (postgres.CreateExtension("pg_stat_statements"), EXPAND, "extension"),
    (postgres.BloomExtension(), EXPAND, "extension"),
    (postgres.BtreeGinExtension(), EXPAND, "extension"),
    (postgres.BtreeGistExtension(), EXPAND, "extension"),
    (postgres.CITextExtension(), EXPAND, "extension"),
    (postgres.CryptoExtension(), EXPAND, "extension"),
    (postgres.HStoreExtension(), EXPAND, "extension"),
    (postgres.TrigramExtension(), EXPAND, "extension"),
    (postgres.UnaccentExtension(), EXPAND, "extension"),
    (postgres.CreateCollation("case_insensitive", provider="icu", locale="und-u-ks-level2"), EXPAND, "collation"),
    (postgres.RemoveCollation("case_insensitive", locale="und-u-ks-level2"), CONTRACT, "collation"),
    (postgres.AddIndexConcurrently("Book", name_index("book_pages_cidx")), EXPAND, "without blocking writes"),
    (postgres.RemoveIndexConcurrently("Book", "book_title_idx"), CONTRACT, "drops an index"),
    (postgres.AddConstraintNotValid("Book", POSITIVE), EXPAND, "not checked against existing rows"),
    (postgres.ValidateConstraint("Book", "book_pages_positive"), EXPAND, "without blocking writes"),
    # Anything else
    (VendorOperation(), UNKNOWN, "is not an operation this operator knows"),
]


@pytest.mark.parametrize(("operation", "expected", "says"), CASES, ids=[
    f"{type(operation).__name__}-{number}" for number, (operation, _, _) in enumerate(CASES)])
def test_each_operation_gets_its_class_and_a_reason(operation: Operation, expected: str, says: str) -> None:
    migration_class, reason = class_of(operation)
    assert migration_class == expected, reason
    assert says in reason
    assert reason.startswith(operation.describe()), "the reason names the operation it judged"


def test_every_operation_of_django_and_contrib_postgres_has_a_case() -> None:
    documented = set(migrations.operations.__all__)
    documented |= {name for name, value in vars(postgres).items() if isinstance(value, type)
                   and issubclass(value, Operation) and value.__module__ == postgres.__name__
                   and name not in ("CollationOperation",)}  # a base class, not an operation one writes
    assert documented - {type(operation).__name__ for operation, _, _ in CASES} == set()


# --- a migration: its least safe operation decides -------------------------------------------------------------


def test_an_expand_beside_a_contract_is_breaking_and_says_to_split() -> None:
    migration_class, reason = class_of(migrations.AddField("Book", "subtitle", models.TextField(null=True)),
                                       migrations.RemoveField("Book", "pages"))
    assert migration_class == BREAKING
    assert "split it into an expand and a contract migration" in reason


def test_the_least_safe_operation_decides_and_is_named() -> None:
    migration_class, reason = class_of(migrations.CreateModel("Shelf", [("id", models.BigAutoField(primary_key=True))]),
                                       migrations.RunPython(forwards))
    assert (migration_class, reason.split(":")[0]) == (UNKNOWN, "Raw Python operation")


def test_operations_are_judged_on_the_state_their_predecessors_left() -> None:
    """A column added nullable, then made NOT NULL, in one migration: the second sees the first's field."""
    migration_class, reason = class_of(migrations.AddField("Book", "isbn", models.TextField(null=True)),
                                       migrations.AlterField("Book", "isbn", models.TextField()))
    assert migration_class == BREAKING and "makes column isbn NOT NULL" in reason


# --- declared stages and a reviewer's class ------------------------------------------------------------------


@pytest.mark.parametrize(("attributes", "expected", "says"), [
    ({"safe": Safe.before_deploy()}, EXPAND, "declared Safe.before_deploy (django-safemigrate)"),
    ({"safe": Safe.before_deploy}, EXPAND, "declared Safe.before_deploy"),  # uncalled, as 5.x still accepts
    ({"safe": Safe.always()}, EXPAND, "declared Safe.always"),
    ({"safe": Safe.after_deploy()}, CONTRACT, "declared Safe.after_deploy"),
    ({"safe": True}, EXPAND, "declared Safe.before_deploy"),  # django-safemigrate 1.x
    ({"safe": False}, CONTRACT, "declared Safe.after_deploy"),
    ({"stage": Stage.PRE_DEPLOY}, EXPAND, "declared Stage.PRE_DEPLOY (django-syzygy)"),
    ({"stage": Stage.POST_DEPLOY}, CONTRACT, "declared Stage.POST_DEPLOY (django-syzygy)"),
])
def test_a_declared_stage_is_kept_whatever_the_operations(attributes: dict[str, Any], expected: str,
                                                          says: str) -> None:
    migration_class, reason = class_of(migrations.RunPython(forwards), **attributes)
    assert migration_class == expected and reason.startswith(says)
    assert "by its operations it would be unknown" in reason, "the reviewer still sees what the operations say"


def test_a_reviewer_classifies_an_unknown_migration() -> None:
    reviewed = {"shop.0002_change": "expand"}
    migration_class, reason = class_of(migrations.RunPython(forwards), reviewed=reviewed)
    assert migration_class == EXPAND and "classified expand in spec.migrate.classes" in reason


def test_a_review_does_not_make_a_breaking_migration_safe() -> None:
    reviewed = {"shop.0002_change": "expand"}
    migration_class, _ = class_of(migrations.RenameField("Book", "title", "heading"), reviewed=reviewed)
    assert migration_class == BREAKING


def test_a_migration_unapplied_is_breaking() -> None:
    backwards = PlannedMigration("shop", "0002_change", atomic=True, reversible=True, backwards=True,
                                 operations=("AddField",))
    assert classify_migration(backwards, {}).migration_class == MigrationClass.BREAKING


def test_facts_that_could_not_be_read_are_unknown() -> None:
    entry = PlannedMigration("shop", "0002_change", atomic=True, reversible=True, backwards=False,
                             operations=("AddField",), details=({"type": "AddField", "error": "LookupError: x"},))
    verdict = classify_migration(entry, {})
    assert verdict.migration_class == MigrationClass.UNKNOWN and "could not be examined (LookupError: x)" in \
        verdict.reason
    without = PlannedMigration("shop", "0002_change", atomic=True, reversible=True, backwards=False,
                               operations=("AddField",))
    assert classify_migration(without, {}).migration_class == MigrationClass.UNKNOWN


def test_the_plan_keeps_class_and_reason_in_status_not_the_facts() -> None:
    (entry,) = classify_plan([planned(migration(migrations.RemoveField("Book", "pages")))], {})
    status = entry.to_status()
    assert status["class"] == "contract" and "drops column pages" in status["reason"]
    assert "details" not in status and "declared" not in status
    assert PlannedMigration.from_status(status).migration_class == "contract"


# --- the strategy a plan allows ------------------------------------------------------------------------------


def classified(name: str, migration_class: str, atomic: bool = True) -> PlannedMigration:
    return PlannedMigration("shop", name, atomic=atomic, reversible=True, backwards=False, operations=("AddField",),
                            migration_class=migration_class, reason=f"because of {name}")


def test_auto_is_online_only_for_atomic_expand_then_contract_with_a_release_image() -> None:
    plan = [classified("0002_a", EXPAND), classified("0003_b", CONTRACT)]
    assert choose_strategy("Auto", plan, "shop:2").strategy == "Online"
    assert choose_strategy("Offline", plan, "shop:2").strategy == "Offline"
    without_image = choose_strategy("Auto", plan, None)
    assert without_image.strategy == "Offline" and "app.image is not set" in without_image.reason


@pytest.mark.parametrize(("plan", "says"), [
    ([classified("0002_a", BREAKING)], "shop.0002_a is breaking (because of 0002_a)"),
    ([classified("0002_a", UNKNOWN)], "shop.0002_a is unknown"),
    ([classified("0002_a", EXPAND, atomic=False)], "shop.0002_a is not atomic"),
    ([classified("0002_a", CONTRACT), classified("0003_b", EXPAND)],
     "shop.0003_b (expand) depends on running after shop.0002_a (contract)"),
])
def test_what_keeps_a_plan_offline_is_named(plan: list[PlannedMigration], says: str) -> None:
    auto = choose_strategy("Auto", plan, "shop:2")
    assert auto.strategy == "Offline" and says in auto.reason
    online = choose_strategy("Online", plan, "shop:2")
    assert online.strategy == "Online" and any(says in refusal for refusal in online.refused)


def test_a_non_atomic_migration_of_concurrent_index_builds_only_may_run_online() -> None:
    index = {"type": "AddIndexConcurrently", "module": "django.contrib.postgres.operations"}
    concurrent = PlannedMigration("shop", "0002_index", atomic=False, reversible=True, backwards=False,
                                  operations=("AddIndexConcurrently",), details=(index,),
                                  migration_class=EXPAND, reason="a new index")
    assert choose_strategy("Auto", [concurrent], "shop:2").strategy == "Online"
    mixed = PlannedMigration("shop", "0002_index", atomic=False, reversible=True, backwards=False,
                             operations=("AddIndexConcurrently", "AddField"),
                             details=(index, {"type": "AddField", "module": "django.db.migrations.operations"}),
                             migration_class=EXPAND, reason="a new index and a column")
    auto = choose_strategy("Auto", [mixed], "shop:2")
    assert auto.strategy == "Offline" and "shop.0002_index is not atomic" in auto.reason
