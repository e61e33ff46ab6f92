"""The DjangoMigration CustomResourceDefinition (crds/djangomigrations.djangoops.dev.yaml), checked statically.

No cluster here: the schema is loaded with PyYAML and its contract, the API users write their runs against, is
asserted: names, descriptions at every depth, defaults, enums, patterns, CEL rules and printer columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from django_migration_operator.workflow import PHASES

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "djangomigrations.djangoops.dev.yaml"

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    with CRD_PATH.open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> Schema:
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def node(root: Schema, path: str) -> Schema:
    """The schema at a dotted path: `spec.app.stop[]` is the items schema, `status.replicas{}` the values."""
    current = root
    for part in path.split("."):
        name = part.rstrip("[]{}")
        current = current["properties"][name]
        suffix = part[len(name) :]
        for marker in suffix[::2]:
            current = current["items"] if marker == "[" else current["additionalProperties"]
    return current


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema below `schema` with its path: properties, array items and map values, at every depth."""
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        yield child_path, child
        yield from walk(child, child_path)
    if isinstance(schema.get("items"), dict):
        yield f"{path}[]", schema["items"]
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{path}{{}}", schema["additionalProperties"]
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def rules(schema: Schema) -> dict[str, dict[str, str]]:
    return {r["rule"]: r for r in schema.get("x-kubernetes-validations", [])}


# --- names ---------------------------------------------------------------------------------------------------


def test_names_group_version_scope(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "djangomigrations.djangoops.dev"
    spec = crd["spec"]
    assert spec["group"] == "djangoops.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DjangoMigration",
        "listKind": "DjangoMigrationList",
        "plural": "djangomigrations",
        "singular": "djangomigration",
        "shortNames": ["djm", "djmig"],
        "categories": ["djangoops"],
    }
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


# --- descriptions --------------------------------------------------------------------------------------------


def test_root_has_a_description(root: Schema) -> None:
    assert len(root["description"]) > 80


def test_every_field_at_every_depth_has_a_description(root: Schema) -> None:
    paths = [path for path, _ in walk(root)]
    # The walk really reaches the deep fields (guards against a walk that silently stops early).
    for deep in (
        "spec.database.urlSecret.key",
        "spec.verify.checks[].expect",
        "spec.jobTemplate.resources.limits{}",
        "status.conditions[].lastTransitionTime",
        "status.rowCounts{}.after",
        "status.plan[].operations[]",
    ):
        assert deep in paths
    # metadata is the one exception: the apiserver refuses anything but its type there, and kubectl explain
    # documents it with the standard ObjectMeta.
    missing = [path for path, schema in walk(root) if not str(schema.get("description", "")).strip()]
    assert missing == ["metadata"]
    assert node(root, "metadata") == {"type": "object"}


def test_spec_fields_describe_their_default(root: Schema) -> None:
    for path, schema in walk(node(root, "spec")):
        if "default" in schema and schema["default"] != {}:
            assert "Default:" in schema["description"], path


def test_spec_leaf_fields_give_an_example_or_the_allowed_values(root: Schema) -> None:
    for path, schema in walk(node(root, "spec")):
        if schema.get("type") in ("string", "integer", "array") and "enum" not in schema:
            text = schema["description"]
            assert "Example" in text or "e.g." in text or "Default:" in text, path


# --- structure -----------------------------------------------------------------------------------------------


def test_schema_is_structural(root: Schema) -> None:
    assert root["type"] == "object"
    for path, schema in walk(root):
        if schema.get("x-kubernetes-int-or-string"):
            assert schema["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert schema.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        if schema["type"] == "array":
            assert isinstance(schema.get("items"), dict), path
        assert not ("properties" in schema and "additionalProperties" in schema), path


def test_spec_fields_in_spec_order(root: Schema) -> None:
    assert list(root["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert list(node(root, "spec")["properties"]) == [
        "app",
        "database",
        "migrate",
        "backup",
        "verify",
        "strategy",
        "rehearsal",
        "window",
        "notify",
        "onFailure",
        "approval",
        "jobTemplate",
    ]
    assert list(node(root, "spec.app")["properties"]) == ["deployment", "container", "image", "stop"]
    assert list(node(root, "spec.database")["properties"]) == ["urlSecret", "alias"]
    assert list(node(root, "spec.migrate")["properties"]) == ["app", "target", "timeoutSeconds", "classes"]
    assert list(node(root, "spec.backup")["properties"]) == ["enabled", "volumeClaim", "keep", "timeoutSeconds",
                                                             "image"]
    assert list(node(root, "spec.verify")["properties"]) == ["rowCounts", "checks"]


def test_required_fields(root: Schema) -> None:
    assert node(root, "spec")["required"] == ["app", "database"]
    assert node(root, "spec.app")["required"] == ["deployment"]
    assert node(root, "spec.database")["required"] == ["urlSecret"]
    assert node(root, "spec.database.urlSecret")["required"] == ["name", "key"]
    assert node(root, "spec.verify.checks[]")["required"] == ["name", "sql", "expect"]


# --- defaults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "default"),
    [
        ("spec.database.alias", "default"),
        ("spec.migrate", {}),
        ("spec.migrate.timeoutSeconds", 3600),
        ("spec.backup", {}),
        ("spec.backup.enabled", True),
        ("spec.backup.keep", 5),
        ("spec.backup.timeoutSeconds", 7200),
        ("spec.strategy", "Auto"),
        ("spec.onFailure", "Restore"),
        ("spec.approval", "Automatic"),
        ("spec.jobTemplate", {}),
    ],
)
def test_defaults(root: Schema, path: str, default: object) -> None:
    assert node(root, path)["default"] == default


@pytest.mark.parametrize(
    "path",
    [
        "spec.app.container",
        "spec.app.image",
        "spec.migrate.app",
        "spec.migrate.target",
        "spec.backup.volumeClaim",
        "spec.backup.image",
        "spec.verify",
        "spec.verify.checks[].expect",
    ],
)
def test_no_default(root: Schema, path: str) -> None:
    assert "default" not in node(root, path)


def test_backup_image_documents_production_image(root: Schema) -> None:
    text = node(root, "spec.backup.image")["description"]
    assert "devcluster" in text
    assert "postgres:17" in text


# --- enums and bounds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("spec.strategy", ["Auto", "Offline", "Online"]),
        ("spec.onFailure", ["Restore", "Keep"]),
        ("spec.approval", ["Automatic", "Manual"]),
        ("status.conditions[].status", ["True", "False", "Unknown"]),
        ("status.phase", [phase.value for phase in PHASES]),
    ],
)
def test_enums(root: Schema, path: str, values: list[str]) -> None:
    assert node(root, path)["enum"] == values


@pytest.mark.parametrize(
    ("path", "bounds"),
    [
        ("spec.migrate.timeoutSeconds", {"type": "integer", "minimum": 1, "maximum": 86400}),
        ("spec.backup.keep", {"type": "integer", "minimum": 1, "maximum": 100}),
        ("spec.backup.timeoutSeconds", {"type": "integer", "minimum": 1, "maximum": 86400}),
        ("spec.app.deployment", {"maxLength": 253}),
        ("spec.app.container", {"maxLength": 63}),
        ("spec.app.stop", {"maxItems": 20, "x-kubernetes-list-type": "set"}),
        ("spec.verify.rowCounts", {"maxItems": 50}),
        ("spec.verify.checks", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
        ("spec.verify.checks[].name", {"maxLength": 100}),
        ("spec.verify.checks[].sql", {"maxLength": 4000}),
        ("spec.verify.checks[].expect", {"type": "string"}),
        ("status.conditions", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    ],
)
def test_bounds(root: Schema, path: str, bounds: dict[str, object]) -> None:
    schema = node(root, path)
    assert {key: schema.get(key) for key in bounds} == bounds


def test_every_spec_string_and_list_is_bounded(root: Schema) -> None:
    """Bounds keep the CEL cost estimate of the immutability rule (which compares the whole spec) low."""
    for path, schema in walk(node(root, "spec")):
        if schema.get("type") == "string" and "enum" not in schema:
            assert "maxLength" in schema, path
        if schema.get("type") == "array":
            assert "maxItems" in schema, path
        if isinstance(schema.get("additionalProperties"), dict):
            assert "maxProperties" in schema, path


# --- patterns ------------------------------------------------------------------------------------------------

PATTERN_CASES = [
    ("spec.app.deployment", ["web", "shop-web", "web.v2", "a"], ["Web", "-web", "web-", "web_1", ""]),
    ("spec.app.stop[]", ["worker", "beat"], ["Worker", "beat_1"]),
    ("spec.app.container", ["django", "app-1"], ["Django", "app.1", "-x"]),
    ("spec.database.urlSecret.name", ["shop-db"], ["Shop_DB"]),
    ("spec.database.urlSecret.key", ["DATABASE_URL", "db.url", "a-b"], ["DATABASE URL", "url/1", ""]),
    ("spec.database.alias", ["default", "replica_1", "_x"], ["1db", "my-db", ""]),
    ("spec.migrate.app", ["blog", "Blog_2", "_x"], ["2blog", "blog-app", "blog.app"]),
    (
        "spec.migrate.target",
        ["zero", "0003_add_post_status", "0003", "0001_initial", "0001_squashed_0004_auto"],
        ["latest", "3_add", "003_add", "0003-add", "Zero", ""],
    ),
    ("spec.backup.volumeClaim", ["shop-migration-backups"], ["Backups", "backups_1"]),
    (
        "spec.verify.rowCounts[]",
        ["blog_post", "public.blog_post", "_t"],
        ["blog-post", "a.b.c", "1table", "blog_post;", "blog post", ""],
    ),
    ("spec.jobTemplate.resources.limits{}", ["1Gi", "500m", "2", "1.5", "1e3"], ["1 Gi", "lots", "1GB"]),
]


@pytest.mark.parametrize(("path", "good", "bad"), PATTERN_CASES)
def test_patterns(root: Schema, path: str, good: list[str], bad: list[str]) -> None:
    pattern = re.compile(node(root, path)["pattern"])
    assert [value for value in good if not pattern.search(value)] == []
    assert [value for value in bad if pattern.search(value)] == []


def test_exact_patterns_of_the_issue(root: Schema) -> None:
    assert node(root, "spec.database.urlSecret.key")["pattern"] == "^[-._a-zA-Z0-9]+$"
    assert node(root, "spec.migrate.app")["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    assert node(root, "spec.migrate.target")["pattern"] == "^(zero|[0-9]{4}[A-Za-z0-9_]*)$"
    assert node(root, "spec.verify.rowCounts[]")["pattern"] == r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"


def test_target_documents_that_it_needs_app(root: Schema) -> None:
    assert "migrate.app" in node(root, "spec.migrate.target")["description"]


# --- CEL rules -----------------------------------------------------------------------------------------------


def test_target_needs_app_rule(root: Schema) -> None:
    rule = rules(node(root, "spec.migrate"))["!has(self.target) || has(self.app)"]
    assert rule["message"] == "migrate.target needs migrate.app: name the app whose migration you target"


def test_volume_claim_required_while_backup_enabled(root: Schema) -> None:
    rule = rules(node(root, "spec.backup"))["!has(self.enabled) || !self.enabled || has(self.volumeClaim)"]
    assert rule["message"] == (
        "backup.volumeClaim is required while backup.enabled is true: name a PersistentVolumeClaim for the dumps, "
        "or set backup.enabled: false"
    )


def test_no_backup_needs_on_failure_keep(root: Schema) -> None:
    rule = rules(node(root, "spec"))["self.backup.enabled || self.onFailure == 'Keep'"]
    message = rule["message"]
    assert "backup.enabled" in message
    assert "onFailure" in message
    assert "Keep" in message  # the fix


def test_the_name_fits_a_label_value(root: Schema) -> None:
    [rule] = [r for r in root["x-kubernetes-validations"] if "metadata.name" in r["rule"]]
    assert rule["rule"] == "size(self.metadata.name) <= 63"
    assert "63 characters" in rule["message"]


def test_spec_immutable_once_started_except_approval(root: Schema) -> None:
    [rule] = [r for r in root["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    text = rule["rule"]
    assert rule["message"] == (
        "spec is immutable once the run started (status.phase is not Pending); only spec.approval may change. "
        "Create a new DjangoMigration to run again."
    )
    assert text.startswith("!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' ||")
    # Every spec field but approval is compared, so a field added later cannot slip past the rule.
    for field in node(root, "spec")["properties"]:
        compared = f"self.spec.{field} == oldSelf.spec.{field}" in text
        assert compared == (field != "approval"), field
    # Optional fields are compared with has() guards, so adding or removing one is a change too.
    required = set(node(root, "spec")["required"])
    for field in set(node(root, "spec")["properties"]) - required - {"approval"}:
        assert f"has(self.spec.{field}) == has(oldSelf.spec.{field})" in text, field


def test_all_rules_have_messages(root: Schema) -> None:
    for path, schema in [("", root), *walk(root)]:
        for rule in schema.get("x-kubernetes-validations", []):
            assert rule.get("message"), (path, rule["rule"])


# --- status --------------------------------------------------------------------------------------------------


def test_status_fields(root: Schema) -> None:
    status = node(root, "status")
    assert set(status["properties"]) == {
        "phase",
        "conditions",
        "observedGeneration",
        "planCount",
        "strategy",
        "strategyReason",
        "plan",
        "replicas",
        "images",
        "backup",
        "restore",
        "rowCounts",
        "jobs",
        "startedAt",
        "completedAt",
        "downtimeSeconds",
        "message",
        "toolsImage",
        "waitingFor",
        "migrateOutput",
        "contractOutput",
        "stoppedAt",
        "servingEndedAt",
        "window",
        "rehearsal",
        "notStarted",
        "podsNotEnding",
        "failure",
    }
    assert set(node(root, "status.conditions[]")["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert set(node(root, "status.plan[]")["properties"]) == {
        "app",
        "name",
        "atomic",
        "reversible",
        "backwards",
        "operations",
        "class",
        "reason",
    }
    assert set(node(root, "status.backup")["properties"]) == {
        "path",
        "sizeBytes",
        "format",
        "compression",
        "verified",
        "startedAt",
        "completedAt",
        "job",
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("status.planCount", {"type": "integer"}),
        ("status.observedGeneration", {"type": "integer", "format": "int64"}),
        ("status.downtimeSeconds", {"type": "number"}),
        ("status.replicas{}", {"type": "integer"}),
        ("status.jobs{}", {"type": "string"}),
        ("status.rowCounts{}.before", {"type": "integer", "format": "int64"}),
        ("status.rowCounts{}.after", {"type": "integer", "format": "int64"}),
        ("status.backup.sizeBytes", {"type": "integer", "format": "int64"}),
        ("status.backup.verified", {"type": "boolean"}),
        ("status.plan[].atomic", {"type": "boolean"}),
        ("status.plan[].operations[]", {"type": "string"}),
        ("status.conditions[].lastTransitionTime", {"type": "string", "format": "date-time"}),
        ("status.startedAt", {"type": "string", "format": "date-time"}),
        ("status.completedAt", {"type": "string", "format": "date-time"}),
    ],
)
def test_status_types(root: Schema, path: str, expected: dict[str, str]) -> None:
    schema = node(root, path)
    assert {key: schema.get(key) for key in expected} == expected


def test_no_field_preserves_unknown_fields(root: Schema) -> None:
    """Free maps use additionalProperties. In spec it matters for the immutability rule too: CEL compares
    preserved unknown fields loosely (on the apiserver {a: 1} == {b: 1} holds), so a changed toleration or
    securityContext would slip past it. They are declared field by field instead."""
    assert [path for path, schema in walk(root) if "x-kubernetes-preserve-unknown-fields" in schema] == []


def test_job_template_declares_core_fields(root: Schema) -> None:
    assert list(node(root, "spec.jobTemplate")["properties"]) == [
        "startTimeoutSeconds",
        "resources",
        "nodeSelector",
        "tolerations",
        "securityContext",
    ]
    assert set(node(root, "spec.jobTemplate.tolerations[]")["properties"]) == {
        "key",
        "operator",
        "value",
        "effect",
        "tolerationSeconds",
    }
    assert set(node(root, "spec.jobTemplate.securityContext")["properties"]) == {
        "capabilities",
        "privileged",
        "seLinuxOptions",
        "windowsOptions",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "procMount",
        "seccompProfile",
        "appArmorProfile",
    }


# --- printer columns -----------------------------------------------------------------------------------------


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Phase", "string", ".status.phase"),
        ("Strategy", "string", ".status.strategy"),
        ("Migrations", "integer", ".status.planCount"),
        ("Downtime", "number", ".status.downtimeSeconds"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    assert all(c.get("description") for c in version["additionalPrinterColumns"])


def test_printer_columns_point_at_schema_fields(root: Schema, version: dict[str, Any]) -> None:
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".")
        if not path.startswith("metadata."):
            assert node(root, path)["type"] == column["type"], column["name"]
