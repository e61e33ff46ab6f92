"""The operator on devcluster: a DjangoMigration from apply to Succeeded, and bad input refused or failed early."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.baseline import archive_bytes
from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster, postgres_major
from tests.e2e.kit import (
    applied_migrations,
        images,
    make_stack,
    query,
    replicas,
    run_to_end,
    running_images,
    wait_for,
)


@pytest.fixture
def stack(cluster: Cluster, operator: LocalOperator) -> Iterator[BlogStack]:
    stack = make_stack(cluster, f"op-{uuid.uuid4().hex[:6]}")
    yield stack
    stack.drop()


@pytest.fixture(scope="module")
def shared_stack(cluster: Cluster, operator: LocalOperator) -> Iterator[BlogStack]:
    """One app for the bad-input cases: none of them may change it."""
    stack = make_stack(cluster, f"bad-{uuid.uuid4().hex[:6]}")
    yield stack
    stack.drop()


def scrape(operator: LocalOperator) -> dict[str, float]:
    """The operator's Prometheus metrics: sample name with labels -> value."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_demo_migration_succeeds_end_to_end(stack: BlogStack, cluster: Cluster, operator: LocalOperator) -> None:
    metrics_before = scrape(operator)
    before = replicas(stack)
    posts_before = query(stack, "SELECT count(*) FROM blog_post")[0][0]

    status = run_to_end(stack, stack.migration())

    assert status["phase"] == "Succeeded", status.get("message")
    assert [m["name"] for m in status["plan"]] == ["0003_add_post_status", "0004_rollback",
                                                    "0005_ensure_data_integrity"]
    assert status["planCount"] == 3
    # Classified from the facts the plan Job read in the release image: 0003 adds a column with a db_default.
    assert [m["class"] for m in status["plan"]] == ["expand", "unknown", "unknown"]
    assert "a new column with a database default" in status["plan"][0]["reason"]
    assert "runs Python code" in status["plan"][1]["reason"]
    assert status["strategy"] == "Offline" and "blog.0004_rollback is unknown" in status["strategyReason"]
    # No backup.image: the tools of the server's own major version, which devcluster maps to its client tools.
    assert status["toolsImage"] == f"postgres:{postgres_major()}"
    assert "Offline" in stack.kubectl("get", "djm", "blog-release-2", "-n", stack.namespace).stdout
    assert applied_migrations(stack)[-3:] == ["0003_add_post_status", "0004_rollback", "0005_ensure_data_integrity"]
    assert query(stack, "SELECT count(*) FROM information_schema.columns "
                        "WHERE table_name = 'blog_post' AND column_name = 'status'") == [(1,)]
    assert status["rowCounts"]["blog_post"] == {"before": posts_before, "after": posts_before}
    assert query(stack, "SELECT count(*) FROM blog_post WHERE category_id IS NULL") == [(0,)]
    assert status["replicas"] == {"web": 2, "worker": 1}
    assert {name: spec_replicas for name, (spec_replicas, _) in replicas(stack).items()} == \
        {name: spec_replicas for name, (spec_replicas, _) in before.items()}
    assert status["downtimeSeconds"] > 0
    # The run owns the release: the app and the worker, which ran the app's image, end on the release image.
    assert status["images"] == {"web": {"django": "blog:1.0"}, "worker": {"worker": "blog:1.0"}}
    assert images(stack) == {"web": "blog:2.0", "worker": "blog:2.0"}
    assert running_images(stack) == {"web": {"blog:2.0"}, "worker": {"blog:2.0"}}
    assert "on blog:2.0" in status["message"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Succeeded"] == conditions["BackupTaken"] == conditions["Migrated"] == "True"
    assert conditions["Verified"] == "True"

    backup = status["backup"]
    assert backup["verified"] is True and backup["sizeBytes"] > 0
    dump = cluster.layout.volume_claims / stack.namespace / "blog-backups" / backup["path"].removeprefix("/backups/")
    listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA public blog_post" in listing
    assert backup["format"] == "directory"
    assert dump.is_dir() and archive_bytes(dump) == backup["sizeBytes"]

    waited = stack.kubectl("wait", "-n", stack.namespace, "--for=condition=Succeeded", "djm/blog-release-2",
                           "--timeout=10s")
    assert "condition met" in waited.stdout
    # A finished run holds no finalizer: deleting it, or its namespace, never waits on the operator.
    wait_for(lambda: not json.loads(stack.kubectl("get", "djm", "blog-release-2", "-n", stack.namespace, "-o",
                                                  "json").stdout)["metadata"].get("finalizers"),
             "the finished run's finalizer to go", timeout=15)
    # kubectl describe lists the run's events in the run's order, even those posted within one second.
    described = stack.kubectl("describe", "djm", "blog-release-2", "-n", stack.namespace).stdout
    table = described.split("\nEvents:", 1)[1].splitlines()[3:]  # after the header and its underline
    reasons = [line.split()[1] for line in table if line.strip()]
    assert reasons == ["Planning", "StrategyChosen", "ScalingDown", "BackingUp", "Migrating", "Verifying",
                       "ScalingUp", "PlanApplied"], described

    metrics = scrape(operator)
    succeeded = 'djangoops_runs_finished_total{phase="Succeeded",reason="PlanApplied"}'
    assert metrics[succeeded] == metrics_before.get(succeeded, 0) + 1
    assert metrics['djangoops_step_duration_seconds_count{phase="Migrating"}'] >= 1
    assert metrics["djangoops_downtime_seconds_count"] >= 1 and metrics["djangoops_downtime_seconds_sum"] > 0
    assert "djangoops_runs_in_progress" in metrics

    # The same migration again, under a new name: nothing left to apply, nothing stopped.
    generations = replicas(stack)
    again = run_to_end(stack, stack.migration(name="blog-release-2-again"))
    assert again["phase"] == "Succeeded" and again["planCount"] == 0
    assert "replicas" not in again
    assert replicas(stack) == generations, "an empty plan must not scale anything"


def test_migrate_app_and_target_forward_are_honoured_and_a_reviewed_class_is_kept(stack: BlogStack) -> None:
    # The demo's check (every post has a category) holds only after 0005: not part of this run.
    forward = stack.migration(name="to-0004", migrate={"app": "blog", "target": "0004_rollback",
                                                       "classes": {"blog.0004_rollback": "contract"}},
                              verify={"checks": []})
    status = run_to_end(stack, forward)
    assert status["phase"] == "Succeeded", status.get("message")
    assert [m["name"] for m in status["plan"]] == ["0003_add_post_status", "0004_rollback"]
    assert applied_migrations(stack)[-1] == "0004_rollback"
    assert [m["class"] for m in status["plan"]] == ["expand", "contract"]
    assert "classified contract in spec.migrate.classes" in status["plan"][1]["reason"]


# --- bad input: refused by the schema at apply time --------------------------------------------------------


@pytest.mark.parametrize(("change", "expected"), [
    ({"app": {"deployment": None}}, "spec.app.deployment: Required value"),
    ({"migrate": {"app": "blog", "target": "three"}}, "spec.migrate.target"),
    ({"migrate": {"timeoutSeconds": -5}}, "spec.migrate.timeoutSeconds"),
    ({"strategy": "Yolo"}, 'spec.strategy: Unsupported value: "Yolo"'),
    ({"migrate": {"target": "0003_add_post_status"}}, "migrate.target needs migrate.app"),
    ({"migrate": {"classes": {"0004_rollback": "expand"}}}, "each key is app_label.migration_name"),
    ({"migrate": {"classes": {"blog.0004_rollback": "breaking"}}}, 'Unsupported value: "breaking"'),
])
def test_bad_input_is_refused_at_apply_time(shared_stack: BlogStack, change: dict[str, Any], expected: str) -> None:
    manifest = shared_stack.migration(name="refused")
    for key, value in change.items():
        section = manifest["spec"].setdefault(key, {}) if isinstance(value, dict) else None
        if section is None:
            manifest["spec"][key] = value
        else:
            for field, field_value in value.items():
                if field_value is None:
                    section.pop(field, None)
                else:
                    section[field] = field_value
    result = shared_stack.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert expected in result.stderr


def test_spec_edit_during_a_run_is_refused(shared_stack: BlogStack) -> None:
    manifest = shared_stack.migration(name="edited", approval="Manual")
    shared_stack.apply(manifest)
    wait_for(lambda: json.loads(shared_stack.kubectl("get", "djm", "edited", "-n", shared_stack.namespace, "-o",
                                                     "json").stdout).get("status", {}).get("phase") not in
             (None, "Pending"), "the run to start")
    patch = json.dumps({"spec": {"migrate": {"timeoutSeconds": 60}}})
    result = shared_stack.kubectl("patch", "djm", "edited", "-n", shared_stack.namespace, "--type=merge", "-p", patch,
                                  check=False)
    assert result.returncode != 0 and "immutable" in result.stderr
    shared_stack.kubectl("delete", "djm", "edited", "-n", shared_stack.namespace, "--wait=true")


# --- bad input: the run fails before anything is touched, naming the field and the fix ------------------------


def _secret(stack: BlogStack, name: str, data: dict[str, str]) -> None:
    stack.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})


@pytest.mark.parametrize(("case", "expected"), [
    ("deployment-missing", "app.deployment: Deployment 'nope' not found"),
    ("container-unknown", "app.container"),
    ("stop-missing", "app.stop: Deployment 'beat' not found"),
    ("secret-missing", "database.urlSecret: Secret 'absent'"),
    ("key-missing", "its key 'NOPE' not found"),
    ("url-unreachable", "cannot connect to database"),
    ("table-missing", "verify.rowCounts: table 'blog_comment' does not exist"),
    ("strategy-online", "strategy: Online cannot apply this plan while the app serves: blog.0004_rollback is "
                        "unknown"),
    ("tools-too-old", "backup.image: postgres:9 carries pg_dump 9, older than the server"),
    ("tools-too-new", "backup.image: postgres:99 carries pg_restore 99, newer than the server"),
    ("claim-missing", "backup.volumeClaim: PersistentVolumeClaim 'nowhere' not found"),
    ("claim-too-small", "backup.volumeClaim: PersistentVolumeClaim 'tiny-backups' holds 65536 bytes, too small for "
                        "a dump of database"),
])
def test_bad_input_fails_early_and_leaves_the_app_alone(shared_stack: BlogStack, case: str, expected: str) -> None:
    stack = shared_stack
    before = replicas(stack)
    manifest = stack.migration(name=f"bad-{case}")
    spec = manifest["spec"]
    if case == "deployment-missing":
        spec["app"]["deployment"] = "nope"
    elif case == "container-unknown":
        spec["app"]["container"] = "sidecar"
    elif case == "stop-missing":
        spec["app"]["stop"] = ["worker", "beat"]
    elif case == "secret-missing":
        spec["database"]["urlSecret"]["name"] = "absent"
    elif case == "key-missing":
        spec["database"]["urlSecret"]["key"] = "NOPE"
    elif case == "url-unreachable":
        password = stack.cluster.postgres_password()
        _secret(stack, "unreachable-db", {"DATABASE_URL": f"postgres://postgres:{password}@127.0.0.1:1/nowhere"})
        spec["database"]["urlSecret"]["name"] = "unreachable-db"
    elif case == "table-missing":
        spec["verify"]["rowCounts"] = ["blog_post", "blog_comment"]
    elif case == "strategy-online":
        spec["strategy"] = "Online"
    elif case == "tools-too-old":
        spec["backup"]["image"] = "postgres:9"
    elif case == "tools-too-new":
        spec["backup"]["image"] = "postgres:99"
    elif case == "claim-missing":
        spec["backup"]["volumeClaim"] = "nowhere"
    elif case == "claim-too-small":
        stack.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "tiny-backups"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Ki"}}}})
        spec["backup"]["volumeClaim"] = "tiny-backups"

    status = run_to_end(stack, manifest, timeout=60)

    assert status["phase"] == "Failed"
    assert expected in status["message"]
    assert "Nothing was changed" in status["message"]
    assert replicas(stack) == before, "bad input must not touch the app"
    if case == "url-unreachable":
        assert stack.cluster.postgres_password() not in json.dumps(status), "the password leaked into status"
