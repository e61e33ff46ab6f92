"""The Helm hook on devcluster: an app chart runs its release's migrations before its Deployments are upgraded.

The demo chart examples/blog/chart (web and worker Deployments of the demo blog) includes the library chart
charts/django-migration-hook, which renders the release's DjangoMigration and a Job that waits for it
(`python -m django_migration_operator.wait`) as hooks. `helm upgrade` to a release with new migrations runs them,
waits and rolls out; with a failing migration the upgrade fails, the database is restored and the Deployments stay
as they were.

Each scenario prepares a namespace like demo/stack.py's BlogStack.deploy (database at 0002 with sample posts, the
Secret blog-db, the claim blog-backups) but lets the chart own web and worker. The operator runs as a local process
watching only this module's namespaces. The charts are copied to a temporary folder for `helm dependency update`,
so the tree gets no packed dependency.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from demo.stack import CRD_FILE, BlogStack, LocalOperator
from devcluster.cluster import Cluster
from devcluster.config import REPO_ROOT
from tests.e2e.kit import applied_migrations, checksum, query, run_status

pytestmark = pytest.mark.e2e

SUFFIX = uuid.uuid4().hex[:5]
UPGRADE_NAMESPACE = f"hook-upgrade-{SUFFIX}"
FAILURE_NAMESPACE = f"hook-failure-{SUFFIX}"
RELEASE = "blog"
HELM_TIMEOUT = "180s"
RELEASE_1 = ["0001_initial", "0002_populate_categories"]
PHASES = ["Planning", "ScalingDown", "BackingUp", "Migrating", "Verifying", "ScalingUp", "Succeeded"]
# Another operator watching every namespace would drive this module's runs too; wait for it to end first.
ALONE_TIMEOUT = 300


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["helm", *args], env=cluster.tool_env(), capture_output=True, text=True, timeout=300,
                          check=False)


def output(result: subprocess.CompletedProcess[str]) -> str:
    """What the user sees: Helm prints the hook Job's log (the waiter's lines) on stderr."""
    return result.stdout + result.stderr


def cluster_wide_operators() -> list[str]:
    """Command lines of operator processes on this machine (devcluster's pods are processes) watching everything."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = [w.decode(errors="replace") for w in cmdline.read_bytes().split(b"\0") if w]
        except OSError:
            continue
        if "-m" in words and "django_migration_operator" in words and not any(
                w in ("--namespace", "-n") or w.startswith("--namespace=") for w in words):
            found.append(" ".join(words))
    return found


@pytest.fixture(scope="module")
def chart(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo chart with its library dependency packed, in a copy that keeps the file:// path valid."""
    root = tmp_path_factory.mktemp("helm-hook")
    shutil.copytree(REPO_ROOT / "charts" / "django-migration-hook", root / "charts" / "django-migration-hook")
    demo = root / "examples" / "blog" / "chart"
    shutil.copytree(REPO_ROOT / "examples" / "blog" / "chart", demo, ignore=shutil.ignore_patterns("charts",
                                                                                                "Chart.lock"))
    result = helm(cluster, "dependency", "update", str(demo))
    assert result.returncode == 0, output(result)
    lint = helm(cluster, "lint", str(demo))
    assert lint.returncode == 0 and "0 chart(s) failed" in lint.stdout, output(lint)
    return demo


@pytest.fixture(scope="module")
def hook_operator(cluster: Cluster) -> Iterator[LocalOperator]:
    started = time.monotonic()
    while cluster_wide_operators() and time.monotonic() - started < ALONE_TIMEOUT:
        time.sleep(2)
    if cluster_wide_operators():
        pytest.fail(f"an operator watching every namespace still runs after {ALONE_TIMEOUT}s and would drive this "
                    f"module's runs too: {cluster_wide_operators()}")
    if time.monotonic() - started > 1:
        print(f"\nwaited {time.monotonic() - started:.0f}s for a cluster-wide operator to end")
    subprocess.run(["kubectl", "apply", "-f", str(REPO_ROOT / CRD_FILE)], env=cluster.tool_env(), check=True,
                   capture_output=True)
    process = LocalOperator(cluster, f"operator-hook-{SUFFIX}", namespaces=(UPGRADE_NAMESPACE, FAILURE_NAMESPACE))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def stacks(cluster: Cluster) -> Iterator[list[BlogStack]]:
    """The namespaces the test prepared: release uninstalled, namespace and database dropped after it."""
    made: list[BlogStack] = []
    yield made
    for stack in made:
        helm(cluster, "uninstall", RELEASE, "--namespace", stack.namespace, "--wait", "--timeout", "60s")
        # A run left unfinished by a failed test keeps the operator's finalizer, which would hold the namespace.
        names = stack.kubectl("get", "djm", "-n", stack.namespace, "-o", "name", check=False).stdout.split()
        for name in names:
            stack.kubectl("patch", name, "-n", stack.namespace, "--type=merge", "-p",
                          '{"metadata":{"finalizers":null}}', check=False)
        stack.drop()


def prepare(cluster: Cluster, stacks: list[BlogStack], namespace: str) -> BlogStack:
    """BlogStack.prepare, without web and worker, which the chart owns: the database at 0002 with 120 posts, the
    Secret blog-db and the claim blog-backups."""
    stack = BlogStack(cluster, namespace=namespace, database=namespace.replace("-", "_"))
    stacks.append(stack)
    stack.prepare(posts=120, say=lambda _: None)
    return stack


def deployments(stack: BlogStack) -> dict[str, tuple[str, int, int]]:
    """Each Deployment: (image, spec.replicas, available replicas)."""
    items = json.loads(stack.kubectl("get", "deployments", "-n", stack.namespace, "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: (d["spec"]["template"]["spec"]["containers"][0]["image"], d["spec"]["replicas"],
                                    d["status"].get("availableReplicas", 0)) for d in items}


def replica_sets(stack: BlogStack, component: str) -> dict[str, tuple[str, str]]:
    """The Deployment's ReplicaSets: name -> (image, creationTimestamp)."""
    text = stack.kubectl("get", "replicasets", "-n", stack.namespace, "-l", f"app.kubernetes.io/component={component}",
                         "-o", "json").stdout
    return {r["metadata"]["name"]: (r["spec"]["template"]["spec"]["containers"][0]["image"],
                                    r["metadata"]["creationTimestamp"]) for r in json.loads(text)["items"]}


def env_of(stack: BlogStack, deployment: str) -> dict[str, Any]:
    body = json.loads(stack.kubectl("get", "deployment", deployment, "-n", stack.namespace, "-o", "json").stdout)
    return {e["name"]: e.get("value") for e in body["spec"]["template"]["spec"]["containers"][0]["env"]}


def runs(stack: BlogStack) -> list[str]:
    text = stack.kubectl("get", "djm", "-n", stack.namespace, "-o", "json").stdout
    return sorted(item["metadata"]["name"] for item in json.loads(text)["items"])


def exists(stack: BlogStack, kind: str, name: str) -> bool:
    return stack.kubectl("get", kind, name, "-n", stack.namespace, check=False).returncode == 0


def history(cluster: Cluster, namespace: str) -> list[tuple[int, str]]:
    result = helm(cluster, "history", RELEASE, "--namespace", namespace, "-o", "json")
    return [(entry["revision"], entry["status"]) for entry in json.loads(result.stdout)]


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_upgrade_runs_the_migration_waits_and_rolls_out(cluster: Cluster, chart: Path, hook_operator: LocalOperator,
                                                       stacks: list[BlogStack]) -> None:
    stack = prepare(cluster, stacks, UPGRADE_NAMESPACE)
    namespace = stack.namespace
    common = [RELEASE, str(chart), "--namespace", namespace, "--wait", "--timeout", HELM_TIMEOUT]

    # Install at release 1.0: the post-install run finds nothing to migrate and stops nothing.
    started = time.monotonic()
    install = helm(cluster, "install", *common)
    install_seconds = time.monotonic() - started
    assert install.returncode == 0, output(install)
    assert f"DjangoMigration {namespace}/blog-1: Succeeded: no migration to apply" in output(install)
    assert run_status(stack, "blog-1")["conditions"][-1]["reason"] == "NothingToMigrate"
    assert applied_migrations(stack) == RELEASE_1
    assert deployments(stack) == {"web": ("blog:1.0", 2, 2), "worker": ("blog:1.0", 1, 1)}
    posts = query(stack, "SELECT count(*) FROM blog_post")[0][0]

    # Upgrade to release 2.0: the run migrates 0002 -> 0005 with the 2.0 image, then Helm rolls out.
    started = time.monotonic()
    upgrade = helm(cluster, "upgrade", *common, "--set", "image.tag=2.0")
    upgrade_seconds = time.monotonic() - started
    assert upgrade.returncode == 0, output(upgrade)
    text = output(upgrade)
    positions = [text.find(f"DjangoMigration {namespace}/blog-2: {phase}:") for phase in PHASES]
    assert -1 not in positions and positions == sorted(positions), text
    status = run_status(stack, "blog-2")
    assert status["phase"] == "Succeeded" and status["planCount"] == 3, status.get("message")
    assert applied_migrations(stack) == [*RELEASE_1, "0003_add_post_status", "0004_rollback",
                                         "0005_ensure_data_integrity"]
    assert status["rowCounts"]["blog_post"] == {"before": posts, "after": posts}
    migrate_job = json.loads(stack.kubectl("get", "job", "blog-2-migrate", "-n", namespace, "-o", "json").stdout)
    assert migrate_job["spec"]["template"]["spec"]["containers"][0]["image"] == "blog:2.0"
    assert deployments(stack) == {"web": ("blog:2.0", 2, 2), "worker": ("blog:2.0", 1, 1)}
    # The run started the app on the 2.0 image itself (so release 1.0 never served the new schema), and Helm's
    # upgrade that followed found the image already set: a no-op for the pod template, no second rollout.
    assert status["images"] == {"web": {"django": "blog:1.0"}, "worker": {"worker": "blog:1.0"}}
    web_sets = replica_sets(stack, "web")
    assert sorted(image for image, _ in web_sets.values()) == ["blog:1.0", "blog:2.0"], web_sets
    (created,) = [created for image, created in web_sets.values() if image == "blog:2.0"]
    assert timestamp(created) <= timestamp(status["completedAt"]), "the 2.0 ReplicaSet is the run's, not Helm's"
    # The waiter and its RBAC are gone after a success; the runs stay, one per revision.
    for kind in ("job", "serviceaccount", "role", "rolebinding"):
        assert not exists(stack, kind, "blog-migration-wait"), kind
    assert runs(stack) == ["blog-1", "blog-2"]
    assert history(cluster, namespace) == [(1, "superseded"), (2, "deployed")]

    # A run copies the pod template of the Deployment running now: a setting the new release adds (here the drill
    # that adds a failing migration) is not seen by that upgrade's migration, only by the next one
    # (docs/helm-hook.md, "Which settings the migration sees").
    settings = helm(cluster, "upgrade", *common, "--set", "image.tag=2.0", "--set", "drills=fail_atomic")
    assert settings.returncode == 0, output(settings)
    assert run_status(stack, "blog-3")["planCount"] == 0
    assert env_of(stack, "web")["BLOG_DRILLS"] == "fail_atomic"

    # helm uninstall removes the Deployments and leaves the runs (hooks are not part of the release).
    uninstall = helm(cluster, "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
    assert uninstall.returncode == 0, output(uninstall)
    assert deployments(stack) == {}
    assert runs(stack) == ["blog-1", "blog-2", "blog-3"]
    print(f"\nhelm install (post-install run, empty plan) {install_seconds:.1f}s; helm upgrade to 2.0 (3 migrations, "
          f"rollout) {upgrade_seconds:.1f}s, downtime {status['downtimeSeconds']}s")


def test_failing_migration_fails_the_upgrade_and_the_database_is_restored(
        cluster: Cluster, chart: Path, hook_operator: LocalOperator, stacks: list[BlogStack]) -> None:
    stack = prepare(cluster, stacks, FAILURE_NAMESPACE)
    namespace = stack.namespace
    common = [RELEASE, str(chart), "--namespace", namespace, "--wait", "--timeout", HELM_TIMEOUT,
              "--set", "drills=fail_atomic"]
    # Release 1.0 with the drill installed (its migration pending) and no run at install: the database is ready.
    install = helm(cluster, "install", *common, "--set", "migration.onInstall=none")
    assert install.returncode == 0, output(install)
    assert runs(stack) == []
    before = checksum(stack)
    web_before = replica_sets(stack, "web")
    assert deployments(stack) == {"web": ("blog:1.0", 2, 2), "worker": ("blog:1.0", 1, 1)}

    # Release 2.0: 0003-0005 apply, then the drill's migration fails; the run restores the backup.
    started = time.monotonic()
    upgrade = helm(cluster, "upgrade", *common, "--set", "image.tag=2.0")
    upgrade_seconds = time.monotonic() - started
    text = output(upgrade)
    assert upgrade.returncode != 0, text
    assert "UPGRADE FAILED: pre-upgrade hooks failed" in text
    assert f"DjangoMigration {namespace}/blog-2 failed (reason MigrationFailed, RolledBack=True): the migration " \
           "did not succeed, so the release must not roll out" in text
    assert "RuntimeError: drill: atomic migration fails" in text
    assert "the database was restored from the backup taken before the migration" in text

    status = run_status(stack, "blog-2")
    assert status["phase"] == "Failed" and status["failure"]["reason"] == "MigrationFailed"
    assert [f"{m['app']}.{m['name']}" for m in status["plan"]] == [
        "blog.0003_add_post_status", "blog.0004_rollback", "blog.0005_ensure_data_integrity",
        "drill_fail_atomic.0001_initial"]
    assert checksum(stack) == before, "the database differs from the one before the upgrade"
    assert applied_migrations(stack) == RELEASE_1
    # The Deployments are the previous release's: never touched (same ReplicaSets), running again.
    assert replica_sets(stack, "web") == web_before
    assert deployments(stack) == {"web": ("blog:1.0", 2, 2), "worker": ("blog:1.0", 1, 1)}
    assert history(cluster, namespace) == [(1, "deployed"), (2, "failed")]
    # The failed waiter is kept for `kubectl logs`; its RBAC is gone.
    log = stack.kubectl("logs", "job/blog-migration-wait", "-n", namespace).stdout
    assert f"DjangoMigration {namespace}/blog-2: Failed: the migration failed" in log
    assert not exists(stack, "role", "blog-migration-wait")
    print(f"\nhelm upgrade with a failing migration: exit {upgrade.returncode} after {upgrade_seconds:.1f}s, "
          f"database restored, web still blog:1.0")


def test_the_library_refuses_values_that_cannot_work(cluster: Cluster, chart: Path) -> None:
    def template(*values: str) -> subprocess.CompletedProcess[str]:
        sets = [arg for value in values for arg in ("--set", value)]
        return helm(cluster, "template", RELEASE, str(chart), "--namespace", "shop", *sets)

    rendered = template()
    assert rendered.returncode == 0, output(rendered)
    hooks = [doc for doc in rendered.stdout.split("\n---\n") if "helm.sh/hook:" in doc]
    assert len(hooks) == 5 and all("helm.sh/hook: post-install,pre-upgrade" in doc for doc in hooks)
    pre_only = template("migration.onInstall=none").stdout
    assert "helm.sh/hook: pre-upgrade\n" in pre_only and "post-install" not in pre_only
    assert "kind: DjangoMigration" not in template("migration.enabled=false").stdout
    no_image = template("migration.spec.app.image=")
    assert no_image.returncode != 0 and "migration.spec.app.image is required" in no_image.stderr
    wrong = template("migration.onInstall=later")
    assert wrong.returncode != 0 and "migration.onInstall must be post-install, pre-install or none" in wrong.stderr
