"""The Helm chart on devcluster: `helm install` runs the operator as a pod under its own ServiceAccount and RBAC.

The operator runs from its real image, django-migration-operator:oci: the Dockerfile built by `make image`, which
devcluster's kubelet runs with runc under the chart's restricted securityContext (tests/e2e/test_oci_containers.py).
Each scenario installs the chart into a namespace of its own, deploys the demo blog app (demo/stack.py) into another
and runs the demo DjangoMigration through the chart's operator; then `helm uninstall` must leave no operator object
behind and keep the CRD and the runs.

The health check of Argo CD (charts/.../argocd/health.lua) is evaluated on the live objects at each step. With
DJM_RECORD_ARGOCD_FIXTURES=1 the objects are also saved into tests/packaging/argocd/, the statuses the cluster-free
tests of the health check run against.

Only one operator may drive a run: before installing, each scenario checks that no other operator process (the
local one of test_operator.py, the demo's, a bench's, another chart's) watches every namespace or one of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from demo.stack import BlogStack
from devcluster.cluster import Cluster
from devcluster.config import REPO_ROOT
from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import TERMINAL, Phase, phase_of
from tests.e2e.kit import Kubectl, applied_migrations, events, jobs_ran_once, make_stack, reach, run_status, wait_for
from tests.e2e.test_oci_containers import runc
from tests.packaging.argocd.health import FIXTURES, evaluate, strip

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "django-migration-operator"
CRD_NAME = "djangomigrations.djangoops.dev"
RECORD = os.environ.get("DJM_RECORD_ARGOCD_FIXTURES") == "1"
# The phases in which the run goes on by itself: all but the end states and the wait for approval.
RUNNING = set(Phase) - TERMINAL - {Phase.AWAITING_APPROVAL}


@dataclass
class Release:
    """One `helm install` of the chart; its operator's pod, ServiceAccount and log."""

    cluster: Cluster
    kubectl: Kubectl
    name: str
    namespace: str
    watch: tuple[str, ...]

    @property
    def fullname(self) -> str:
        return f"{self.name}-django-migration-operator"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["helm", *args], env=self.cluster.tool_env(), capture_output=True, text=True,
                                timeout=300, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def install(self) -> subprocess.CompletedProcess[str]:
        assert_alone(self.watch)
        values = ["image.repository=django-migration-operator", "image.tag=oci"]
        if self.watch:
            values.append(f"watchNamespaces={{{','.join(self.watch)}}}")
        args = [arg for value in values for arg in ("--set", value)]
        return self.helm("install", self.name, str(CHART), "--namespace", self.namespace, *args,
                         "--wait", "--timeout", "120s")

    def installed(self) -> bool:
        return self.helm("status", self.name, "--namespace", self.namespace, check=False).returncode == 0

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", "120s")

    def pod(self) -> dict[str, Any]:
        pods = json.loads(self.kubectl("get", "pods", "-n", self.namespace, "-l", self.selector, "-o",
                                       "json").stdout)["items"]
        assert len(pods) == 1, f"one operator pod, found {[p['metadata']['name'] for p in pods]}"
        pod: dict[str, Any] = pods[0]
        return pod

    def log(self) -> str:
        return self.kubectl("logs", "-n", self.namespace, f"deployment/{self.fullname}").stdout

    def can(self, verb: str, resource: str, namespace: str | None) -> bool:
        """What the apiserver's RBAC authorizer allows the release's ServiceAccount."""
        scope = ["-n", namespace] if namespace else ["--all-namespaces"]
        resource, _, subresource = resource.partition("/")
        if subresource:
            scope.append(f"--subresource={subresource}")
        result = self.kubectl("auth", "can-i", verb, resource, *scope,
                              f"--as=system:serviceaccount:{self.namespace}:{self.fullname}", check=False)
        return result.stdout.strip() == "yes"


def other_operators() -> dict[str, set[str]]:
    """Operator processes on this machine (devcluster's pods are local processes too): command line -> the
    namespaces it watches, empty for every namespace."""
    found: dict[str, set[str]] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = [w.decode(errors="replace") for w in cmdline.read_bytes().split(b"\0") if w]
        except OSError:  # the process ended meanwhile
            continue
        if "django_migration_operator" not in words or "-m" not in words:
            continue
        watched = {w.split("=", 1)[1] for w in words if w.startswith("--namespace=")}
        watched |= {value for flag, value in itertools.pairwise(words) if flag in ("--namespace", "-n")}
        found[" ".join(words)] = watched
    return found


def assert_alone(watch: tuple[str, ...]) -> None:
    """Fails if another operator would drive the runs of the release about to be installed (or the other way)."""
    clashes = [command for command, watched in other_operators().items()
               if not watch or not watched or watched & set(watch)]
    if clashes:
        pytest.fail("another operator runs on this cluster and would drive the same runs; stop it first: "
                    + "; ".join(clashes))


@pytest.fixture
def release(cluster: Cluster, kubectl: Kubectl, namespace: str) -> Iterator[Release]:
    """A release name of its own (its ClusterRoles are cluster-wide), in the test's namespace; uninstalled after."""
    made = Release(cluster, kubectl, f"djm-{uuid.uuid4().hex[:5]}", namespace, ())
    yield made
    if made.installed():
        made.uninstall()


@pytest.fixture
def stacks(cluster: Cluster, kubectl: Kubectl) -> Iterator[list[BlogStack]]:
    """Demo blog apps the test deploys; dropped after it, also when a run was left unfinished."""
    made: list[BlogStack] = []
    yield made
    for stack in made:
        release_runs(kubectl, stack.namespace)
        stack.drop()


def deploy(cluster: Cluster, stacks: list[BlogStack], **options: Any) -> BlogStack:
    stack = make_stack(cluster, f"chart-{uuid.uuid4().hex[:6]}", **options)
    stacks.append(stack)
    return stack


def release_runs(kubectl: Kubectl, namespace: str) -> None:
    """Removes the finalizer the operator keeps on unfinished runs (a test that failed half-way), which nobody
    would remove once the operator is uninstalled."""
    names = kubectl("get", "djm", "-n", namespace, "-o", "name", check=False).stdout.split()
    for name in names:
        kubectl("patch", name, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def live(stack: BlogStack, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(stack.kubectl("get", "djm", name, "-n", stack.namespace, "-o", "json").stdout)
    return body


def in_phase(stack: BlogStack, name: str, phase: str) -> dict[str, Any] | None:
    obj = live(stack, name)
    return obj if (obj.get("status") or {}).get("phase") == phase else None


def record(fixture: str, obj: dict[str, Any]) -> None:
    if RECORD:
        (FIXTURES / f"{fixture}.json").write_text(json.dumps(strip(obj), indent=2, sort_keys=True) + "\n")


def follow(stack: BlogStack, name: str, timeout: float = 240) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Follows the run until it ends: (its final object, the first object seen in a running phase, if any)."""
    running: dict[str, Any] | None = None
    for obj in stack.watch_run(name, timeout):
        phase = (obj.get("status") or {}).get("phase")
        if phase in TERMINAL:
            return obj, running
        if phase in RUNNING and running is None:
            running = obj
    raise AssertionError(f"DjangoMigration {name} did not end within {timeout:.0f}s: {run_status(stack, name)}")


def assert_operator_pod(release: Release) -> None:
    pod = release.pod()
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["serviceAccountName"] == release.fullname, "the chart's ServiceAccount, not default"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "django-migration-operator:oci"
    expected = [f"--namespace={namespace}" for namespace in release.watch]
    assert [arg for arg in container["args"] if arg.startswith("--namespace")] == expected
    assert_restricted(release.cluster, pod["status"]["containerStatuses"][0]["containerID"])


def assert_restricted(cluster: Cluster, container_id: str) -> None:
    """The chart's securityContext holds in the operator's container: it runs as the image's user 10001, and only
    /tmp (an emptyDir) can be written."""
    container = container_id.removeprefix("runc://")
    assert container != container_id, f"an OCI container, not {container_id}"
    assert json.loads(runc(cluster, "state", container).stdout)["status"] == "running"
    check = ("import os\n"
             "print(os.getuid(), os.getgid())\n"
             "for path in ('/app/written', '/tmp/written'):\n"
             "    try:\n"
             "        open(path, 'w').close(); print('wrote', path)\n"
             "    except OSError as error:\n"
             "        print('refused', path, error.strerror)\n")
    facts = runc(cluster, "exec", container, "python", "-c", check).stdout.splitlines()
    assert facts == ["10001 10001", "refused /app/written Read-only file system", "wrote /tmp/written"], facts


def assert_log_clean(release: Release) -> None:
    """No request of the operator was refused: the chart's RBAC covers everything it (and kopf) does."""
    log = release.log()
    # An API refusal reads "Forbidden" (the client's ApiException) or "forbidden" (the API's message); kopf says
    # "Not enough permissions" when it falls back for lack of a rule.
    for refusal in ("Forbidden", "forbidden", "Not enough permissions"):
        assert refusal not in log, f"{refusal!r} in the operator's log:\n{log[-4000:]}"

    def probed() -> bool:
        text = release.log()
        return '"GET /healthz HTTP/1.1" 200' in text and "kube-probe" in text

    # The kubelet's liveness probe reaches kopf's endpoint and is answered (the first one 10 s after the start).
    wait_for(probed, "the kubelet's first liveness probe", timeout=40)
    assert release.pod()["status"]["containerStatuses"][0]["restartCount"] == 0


def assert_uninstalled(release: Release, kubectl: Kubectl, stacks: list[BlogStack]) -> None:
    """No operator object left, in its namespace, the watched ones and cluster-wide; the CRD and the runs stay."""
    release.uninstall()
    kinds = "deployments,replicasets,pods,serviceaccounts,services,roles,rolebindings,configmaps,secrets"
    namespaces = [release.namespace, *release.watch]

    def leftovers() -> list[str]:
        names = kubectl("get", "clusterroles,clusterrolebindings", "-l", release.selector, "-o", "name").stdout.split()
        for namespace in namespaces:
            names += kubectl("get", kinds, "-n", namespace, "-l", release.selector, "-o", "name").stdout.split()
        return names

    wait_for(lambda: not leftovers(), "the release's objects to be gone", timeout=60)
    history = kubectl("get", "secrets", "-n", release.namespace, "-l", f"owner=helm,name={release.name}", "-o", "name")
    assert not history.stdout.split(), "helm's release record is gone too"
    assert kubectl("get", "crd", CRD_NAME, check=False).returncode == 0, "helm uninstall must keep the CRD"
    for stack in stacks:
        runs = json.loads(kubectl("get", "djm", "-n", stack.namespace, "-o", "json").stdout)["items"]
        assert runs and all(run["status"]["phase"] in TERMINAL for run in runs), "the runs and their status stay"
        # A finished run holds no finalizer: with the operator gone, it can still be deleted.
        assert not [run["metadata"]["name"] for run in runs if run["metadata"].get("finalizers")]


def test_namespaced_mode_runs_migrations_in_the_listed_namespaces_under_its_own_service_account(
        cluster: Cluster, kubectl: Kubectl, release: Release, stacks: list[BlogStack]) -> None:
    # Deployed before the install: the chart makes a Role in each watched namespace. The fail_atomic drill adds a
    # migration that fails, so that run restores the backup and ends Failed.
    good = deploy(cluster, stacks)
    failing = deploy(cluster, stacks, drills="fail_atomic")
    release.watch = (good.namespace, failing.namespace)
    notes = release.install().stdout
    assert f"It runs DjangoMigrations only in: {good.namespace}, {failing.namespace}." in notes
    assert_operator_pod(release)
    assert kubectl("get", "crd", CRD_NAME, check=False).returncode == 0

    # RBAC as the apiserver decides it: what a run needs in the watched namespaces, nothing elsewhere.
    for stack in (good, failing):
        assert release.can("create", "jobs", stack.namespace)
        assert release.can("patch", "deployments/scale", stack.namespace)
        assert release.can("get", "secrets", stack.namespace)
    assert not release.can("list", "secrets", good.namespace), "Secrets are read by name only"
    assert not release.can("update", "deployments", good.namespace), "the app is scaled, never edited"
    assert not release.can("create", "jobs", release.namespace)
    assert not release.can("create", "jobs", "default")
    assert not release.can("list", "djangomigrations.djangoops.dev", None)

    # The good run with manual approval: it waits in AwaitingApproval, which Argo CD shows as Suspended. The
    # failing one goes at once: the two databases differ, so neither waits for the other.
    name = "blog-release-2"
    good.apply(good.migration(name=name, approval="Manual"))
    failing.apply(failing.migration(name=name))
    awaiting = wait_for(lambda: in_phase(good, name, "AwaitingApproval"), "the run to wait for approval",
                        timeout=120)
    assert [m["name"] for m in awaiting["status"]["plan"]] == ["0003_add_post_status", "0004_rollback",
                                                               "0005_ensure_data_integrity"]
    assert evaluate(awaiting)["status"] == "Suspended"
    record("awaiting-approval", awaiting)

    good.kubectl("patch", "djm", name, "-n", good.namespace, "--type=merge",
                 "-p", '{"spec":{"approval":"Automatic"}}')
    done, running = follow(good, name)
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    assert applied_migrations(good)[-3:] == ["0003_add_post_status", "0004_rollback", "0005_ensure_data_integrity"]
    assert done["status"]["replicas"] == {"web": 2, "worker": 1}
    assert {c["type"]: c["status"] for c in done["status"]["conditions"]}["Succeeded"] == "True"
    assert evaluate(done) == {"status": "Healthy", "message": done["status"]["message"]}
    record("succeeded", done)
    assert running is not None, "no running phase was seen between the approval and the end"
    assert evaluate(running)["status"] == "Progressing"
    record("running", running)

    failed, _ = follow(failing, name)
    assert failed["status"]["phase"] == "Failed"
    conditions = {c["type"]: c["status"] for c in failed["status"]["conditions"]}
    assert conditions["Succeeded"] == "False" and conditions["RolledBack"] == "True"
    assert applied_migrations(failing)[-1] == "0002_populate_categories", "the backup was restored"
    health = evaluate(failed)
    assert health["status"] == "Degraded"
    assert health["message"] == failed["status"]["message"] and health["message"]
    record("failed", failed)

    assert_log_clean(release)
    assert_uninstalled(release, kubectl, stacks)


def test_cluster_wide_mode_runs_the_demo_migration_in_any_namespace(
        cluster: Cluster, kubectl: Kubectl, release: Release, stacks: list[BlogStack]) -> None:
    stack = deploy(cluster, stacks)
    notes = release.install().stdout
    assert "It runs DjangoMigrations in every namespace" in notes
    assert_operator_pod(release)
    assert release.can("create", "jobs", stack.namespace) and release.can("create", "jobs", "default")
    assert release.can("watch", "djangomigrations.djangoops.dev", None)
    assert not release.can("list", "secrets", None)
    assert not release.can("list", "namespaces", None), "cluster-wide, kopf does not read namespaces"

    stack.apply(stack.migration())
    done, running = follow(stack, "blog-release-2")
    assert done["status"]["phase"] == "Succeeded", done["status"].get("message")
    assert applied_migrations(stack)[-1] == "0005_ensure_data_integrity"
    assert done["status"]["replicas"] == {"web": 2, "worker": 1}
    assert evaluate(done)["status"] == "Healthy"
    assert running is None or evaluate(running)["status"] == "Progressing"

    assert_log_clean(release)
    assert_uninstalled(release, kubectl, stacks)


def test_the_lease_rights_taken_away_mid_run_are_said_and_the_runs_go_on_once_they_are_back(
        cluster: Cluster, kubectl: Kubectl, release: Release, stacks: list[BlogStack]) -> None:
    stack = deploy(cluster, stacks)
    release.install()
    binding = f"{release.fullname}-leases"
    granted = json.loads(kubectl("get", "rolebinding", binding, "-n", release.namespace, "-o", "json").stdout)
    granted["metadata"] = {key: granted["metadata"][key] for key in ("name", "namespace", "labels", "annotations")
                           if key in granted["metadata"]}

    # The first run holds the database's Lease when the rights go; the second needs them to take its turn.
    stack.apply(stack.migration(name="first"))
    reach(stack, "first", "BackingUp")
    kubectl("delete", "rolebinding", binding, "-n", release.namespace)
    wait_for(lambda: not release.can("get", "leases", release.namespace), "the Lease rights to be gone")
    stack.apply(stack.migration(name="second", image="blog:2.1",
                                migrate={"app": "blog", "target": "0002_populate_categories"},
                                verify={"checks": []}))

    def refused() -> list[dict[str, Any]]:
        return [e for e in events(stack, "second") if e["reason"] == "Forbidden"]

    said = wait_for(refused, "the second run to say it was refused", timeout=90)
    assert said[0]["type"] == "Warning"
    assert "leases" in said[0]["message"] and f'namespace "{release.namespace}"' in said[0]["message"]
    first, _ = follow(stack, "first")
    assert first["status"]["phase"] == "Succeeded", first["status"].get("message")
    assert phase_of(cast(RunStatus, run_status(stack, "second"))) == Phase.PENDING, "no turn without the rights"
    assert "Forbidden: the operator was refused" in release.log()

    kubectl("create", "-f", "-", input=json.dumps(granted))
    second, _ = follow(stack, "second")
    assert second["status"]["phase"] == "Succeeded", second["status"].get("message")
    assert applied_migrations(stack)[-1] == "0002_populate_categories"
    assert "going on after" in release.log()
    for name in ("first", "second"):
        assert all(count == 1 for count in jobs_ran_once(stack, name).values()), jobs_ran_once(stack, name)
    # The first run could not release its Lease; the second took that stale one over and released it.
    leases = json.loads(kubectl("get", "leases", "-n", release.namespace, "-o", "json").stdout)["items"]
    assert not [lease["metadata"]["name"] for lease in leases if lease["metadata"]["name"].startswith("djangoops-")]
