"""The Helm chart charts/django-migration-operator, checked with the real helm binary and no cluster.

`helm lint` (also --strict) must be clean; `helm template` renders both modes (cluster-wide and a list of
namespaces), and the rendered objects are asserted: the RBAC rules against what the operator's code calls
(kube.py and the kopf handlers, read from the source so that a new API call without its rule fails here), the
restricted securityContext, the Recreate strategy, the liveness probe, the metrics Service and ServiceMonitor,
the PrometheusRule's alerts (against the metrics metrics.py defines), the values schema, NOTES.txt; and the CRD
the chart installs is byte for byte crds/djangomigrations.djangoops.dev.yaml.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from devcluster.build import binaries
from devcluster.config import KUBERNETES_VERSION
from django_migration_operator import kube, metrics, resource
from django_migration_operator.resource import GROUP, PLURAL, RunRef

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "django-migration-operator"
CRD = REPO / "crds" / "djangomigrations.djangoops.dev.yaml"
PACKAGE = REPO / "operator" / "django_migration_operator"
RELEASE, NAMESPACE = "djm", "ops"
FULLNAME = f"{RELEASE}-django-migration-operator"

Manifest = dict[str, Any]
Rule = tuple[str, str, str]  # (apiGroup, resource, verb)


@pytest.fixture(scope="module")
def helm() -> Path:
    path = binaries().helm
    if not path.exists():
        pytest.fail(f"helm is missing at {path}: run `make bootstrap` (it builds helm into the cache)")
    return path


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def render(helm: Path, *values: str, crds: bool = False) -> list[Manifest]:
    """`helm template` with --set values; the documents it renders (an empty document dropped)."""
    # devcluster's helm is built without the Kubernetes version stamp and would assume v1.20, below the chart's
    # kubeVersion: render for the version the e2e tests run against.
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION]
    args += [arg for value in values for arg in ("--set", value)]
    if crds:
        args.append("--include-crds")
    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args).stdout) if doc]


def only(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def expand(rules: Iterable[dict[str, Any]]) -> set[Rule]:
    return {(group, res, verb) for rule in rules for group in rule["apiGroups"] for res in rule["resources"]
            for verb in rule["verbs"]}


# --- what the operator calls, read from its source ------------------------------------------------------------

RBAC_VERBS = {"get", "list", "create", "patch", "update", "delete"}


def client_calls() -> set[Rule]:
    """Every request of kube.py, as the rule it needs: each is a `self._call(verb, api_version, resource, ...)`, called
    or passed with its arguments to a wrapper (`_unless_absent(self._call, "get", ...)`), its first three arguments
    evaluated over kube.py's own names (RUNS_API, PLURAL, ...)."""
    source = (PACKAGE / "kube.py").read_text()
    # The helper is the only way out: one request built, and every mention of it a call this parser reads.
    assert source.count("param_serialize(") == 1, "kube.py must build every request in Kube._call"
    rules: set[Rule] = set()
    found = 0
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if ast.unparse(node.func) == "self._call":
            arguments = node.args
        elif node.args and ast.unparse(node.args[0]) == "self._call":
            arguments = node.args[1:]
        else:
            continue
        found += 1
        verb, api_version, resource_name = (eval(compile(ast.Expression(argument), "kube.py", "eval"), vars(kube))
                                            for argument in arguments[:3])
        assert verb in RBAC_VERBS, f"kube.py calls {ast.unparse(node)}: {verb!r} is no RBAC verb this test knows"
        group = api_version.rpartition("/")[0]  # "v1" is the core group, ""
        rules.add((group, resource_name, verb))
    assert found == source.count("self._call"), "a mention of self._call this parser does not read"
    return rules


def kopf_watches() -> set[Rule]:
    """The resources handlers.py registers kopf handlers for: kopf lists and watches each."""
    tree = ast.parse((PACKAGE / "handlers.py").read_text())
    rules: set[Rule] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call):
                continue
            name = ast.unparse(decorator.func)
            if name not in ("kopf.daemon", "kopf.on.event"):
                assert not name.startswith("kopf.on.") or name == "kopf.on.startup", \
                    f"handlers.py uses {name}: teach this test which rules it needs"
                continue
            group, _, plural = (getattr(resource, arg.id) if isinstance(arg, ast.Name) else ast.literal_eval(arg)
                                for arg in decorator.args[:3])
            rules |= {(group, plural, "list"), (group, plural, "watch")}
            if name == "kopf.daemon":
                # kopf keeps its finalizer and progress annotations on the objects it runs daemons for.
                rules.add((group, plural, "patch"))
    return rules


def lease_rules() -> set[Rule]:
    """The Lease calls: granted in the operator's own namespace, where every run's Lease lives."""
    return {rule for rule in client_calls() if rule[1] == "leases"}


def run_rules() -> set[Rule]:
    """What the operator does in a namespace where it runs DjangoMigrations."""
    rules = (client_calls() - lease_rules()) | kopf_watches()
    if RunRef("ns", "run", "uid").owner_reference().get("blockOwnerDeletion"):
        # Setting blockOwnerDeletion needs update on the owner's finalizers where OwnerReferencesPermission-
        # Enforcement is on.
        rules.add((GROUP, f"{PLURAL}/finalizers", "update"))
    return rules


def test_rules_derived_from_the_source_cover_what_the_operator_does() -> None:
    """A guard on the derivation itself: it must see the calls this chart was written against."""
    derived = run_rules()
    for rule in [(GROUP, PLURAL, "get"), (GROUP, f"{PLURAL}/status", "patch"), ("apps", "deployments/scale", "patch"),
                 ("", "pods/log", "get"), ("batch", "jobs", "create"), ("", "secrets", "get"),
                 ("", "events", "create"), ("batch", "jobs", "watch"),
                 ("", "pods", "watch"), ("apps", "deployments", "watch"), (GROUP, PLURAL, "patch")]:
        assert rule in derived, rule
    assert ("", "secrets", "list") not in derived
    assert lease_rules() == {("coordination.k8s.io", "leases", verb)
                             for verb in ("get", "list", "create", "update", "delete")}


def assert_lease_role_in_the_release_namespace(manifests: list[Manifest]) -> None:
    role = only(manifests, "Role", f"{FULLNAME}-leases")
    assert role["metadata"]["namespace"] == NAMESPACE and expand(role["rules"]) == lease_rules()
    binding = only(manifests, "RoleBinding", f"{FULLNAME}-leases")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{FULLNAME}-leases"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    args = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--lease-namespace={NAMESPACE}" in args


# --- lint ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_is_clean(helm: Path, strict: bool) -> None:
    result = run_helm(helm, "lint", str(CHART), *(["--strict"] if strict else []))
    assert "0 chart(s) failed" in result.stdout
    findings = [line for line in result.stdout.splitlines() if line.startswith(("[WARNING]", "[ERROR]"))]
    assert not findings, findings


@pytest.mark.parametrize("values", [["watchNamespaces={shop}"], ["metrics.serviceMonitor.enabled=true"],
                                    ["metrics.prometheusRule.enabled=true"]])
def test_helm_lint_is_clean_in_the_other_modes(helm: Path, values: list[str]) -> None:
    args = [arg for value in values for arg in ("--set", value)]
    result = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout


# --- the CRD: one source ------------------------------------------------------------------------------------


def test_the_charts_crd_is_a_link_to_the_one_source() -> None:
    link = CHART / "crds" / CRD.name
    assert link.is_symlink(), f"{link} must be a symlink to {CRD}, the one source of the schema"
    assert link.resolve() == CRD.resolve()
    assert [p.name for p in (CHART / "crds").iterdir()] == [CRD.name]


def test_rendered_and_packaged_crd_equal_the_crds_file(helm: Path, tmp_path: Path) -> None:
    rendered = [m for m in render(helm, crds=True) if m["kind"] == "CustomResourceDefinition"]
    assert rendered == [yaml.safe_load(CRD.read_text())]
    # A packaged chart (what a chart repository serves) carries the file's content, not a dangling link.
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("django-migration-operator-*.tgz")
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"django-migration-operator/crds/{CRD.name}")
        assert member.isfile()
        packaged = tar.extractfile(member)
        assert packaged is not None
        assert packaged.read() == CRD.read_bytes()


# --- RBAC ---------------------------------------------------------------------------------------------------


def test_cluster_wide_mode_grants_exactly_what_the_operator_calls(helm: Path) -> None:
    manifests = render(helm)
    assert [m["metadata"]["name"] for m in manifests if m["kind"] in ("Role", "RoleBinding")] == [
        f"{FULLNAME}-leases", f"{FULLNAME}-leases"]
    assert_lease_role_in_the_release_namespace(manifests)
    run_role = only(manifests, "ClusterRole", FULLNAME)
    assert expand(run_role["rules"]) == run_rules()
    kopf_role = only(manifests, "ClusterRole", f"{FULLNAME}-kopf")
    # Cluster-wide, kopf watches across namespaces and never lists the namespaces themselves.
    assert expand(kopf_role["rules"]) == {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
                                          ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
    for role in (FULLNAME, f"{FULLNAME}-kopf"):
        binding = only(manifests, "ClusterRoleBinding", role)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_namespaced_mode_grants_the_run_rules_in_each_listed_namespace_only(helm: Path) -> None:
    manifests = render(helm, "watchNamespaces={shop,blog}")
    assert not [m for m in manifests if m["kind"] == "ClusterRole" and m["metadata"]["name"] == FULLNAME]
    assert_lease_role_in_the_release_namespace(manifests)
    roles = [m for m in manifests if m["kind"] == "Role" and m["metadata"]["name"] == FULLNAME]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["blog", "shop"]
    for role in roles:
        assert expand(role["rules"]) == run_rules()
    bindings = [m for m in manifests if m["kind"] == "RoleBinding" and m["metadata"]["name"] == FULLNAME]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["blog", "shop"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == FULLNAME
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    kopf_role = only(manifests, "ClusterRole", f"{FULLNAME}-kopf")
    assert expand(kopf_role["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"), ("", "namespaces", "watch")}
    args = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=shop", "--namespace=blog"]


def test_no_rbac_and_an_existing_service_account_when_asked(helm: Path) -> None:
    manifests = render(helm, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=mine")
    assert {m["kind"] for m in manifests} == {"Deployment", "Service"}
    assert only(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    missing = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION,
                       "--set", "serviceAccount.create=false", check=False)
    assert missing.returncode != 0 and "serviceAccount.name is required" in missing.stderr


# --- the Deployment ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(helm: Path) -> Manifest:
    return only(render(helm), "Deployment")


def test_one_replica_recreated_never_rolled(deployment: Manifest) -> None:
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["metadata"]["namespace"] == NAMESPACE


def test_runs_under_its_own_service_account(helm: Path, deployment: Manifest) -> None:
    account = only(render(helm), "ServiceAccount")
    assert account["metadata"] == {**account["metadata"], "name": FULLNAME, "namespace": NAMESPACE}
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME


def test_restricted_security_context(deployment: Manifest) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the Dockerfile's USER"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    # The one writable place of a read-only root: /tmp, an emptyDir.
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]


def test_liveness_probe_reaches_kopfs_liveness_endpoint(deployment: Manifest) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "liveness"}
    assert f"--liveness=http://$(POD_IP):{ports['liveness']}/healthz" in container["args"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    # Cluster-wide: no --namespace, so the operator watches every namespace.
    assert not [a for a in container["args"] if a.startswith("--namespace")]
    assert "command" not in container, "the image's entrypoint starts the operator"


def test_image_and_resources(helm: Path, deployment: Manifest) -> None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container["image"] == f"django-migration-operator:{chart['appVersion']}"
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    custom = only(render(helm, "image.repository=registry.example/djm", "image.tag=dev", "extraArgs={--verbose}"),
                  "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert custom["image"] == "registry.example/djm:dev"
    assert custom["args"][-1] == "--verbose"


def test_chart_app_version_is_the_packages_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', project, re.MULTILINE)
    assert version and chart["appVersion"] == version.group(1)


# --- metrics --------------------------------------------------------------------------------------------------


def test_metrics_service_selects_the_operator_pod(helm: Path, deployment: Manifest) -> None:
    service = only(render(helm), "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert "--metrics=$(POD_IP):9090" in container["args"], "the operator serves metrics on the Service's port"
    moved = only(render(helm, "metrics.port=9191"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics=$(POD_IP):9191" in moved["args"]
    assert {"name": "metrics", "containerPort": 9191, "protocol": "TCP"} in moved["ports"]


def test_service_monitor_is_off_by_default_and_selects_the_metrics_service(helm: Path) -> None:
    assert not [m for m in render(helm) if m["kind"] == "ServiceMonitor"]
    manifests = render(helm, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = only(manifests, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    orphan = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION, "--set",
                      "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false", check=False)
    assert orphan.returncode != 0 and "needs metrics.service.enabled" in orphan.stderr


def exposed_series() -> dict[str, set[str]]:
    """Each series name the operator exposes (metrics.py), with its labels: what an alert may refer to."""
    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (family,) = metric.describe()
        labels = set(metric._labelnames)
        # prometheus_client appends _total to a counter's samples, and a histogram is three series.
        suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}[family.type]
        for suffix in suffixes:
            series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def assert_promql_looks_valid(expr: str, series: dict[str, set[str]]) -> set[str]:
    """Balanced brackets and quotes, known series with their own labels, Prometheus durations; the series used."""
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in ")]}":
            assert stack and stack.pop() + char in ("()", "[]", "{}"), f"unbalanced {char!r} in {expr}"
    assert not stack and expr.count('"') % 2 == 0, expr
    used = set(re.findall(r"\bdjangoops_\w+", expr))
    assert used, f"no operator metric in {expr}"
    for name, matchers in re.findall(r"\b(djangoops_\w+)(?:\{([^}]*)\})?", expr):
        assert name in series, f"{name} is not a metric of metrics.py: {sorted(series)}"
        for label, value in re.findall(r'(\w+)\s*(?:=|!=|=~|!~)\s*"([^"]*)"', matchers):
            assert label in series[name], f"{name} has no label {label}"
            assert value, f"{name}{{{label}}} matches an empty value"
    for duration in re.findall(r"\[([^\]]*)\]|offset\s+(\w+)", expr):
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", "".join(duration)), f"{duration} is no duration"
    return used


def test_prometheus_rule_is_off_by_default(helm: Path) -> None:
    assert not [m for m in render(helm) if m["kind"] == "PrometheusRule"]
    assert not [m for m in render(helm, "metrics.serviceMonitor.enabled=true") if m["kind"] == "PrometheusRule"]


def test_prometheus_rule_alerts_on_the_operators_metrics(helm: Path) -> None:
    rule = only(render(helm, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=prom"),
                "PrometheusRule", FULLNAME)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "django-migration-operator"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert list(alerts) == ["DjangoMigrationFailed", "DjangoMigrationRestoreFailed", "DjangoMigrationOverdue"]
    series = exposed_series()
    for alert in alerts.values():
        assert alert.keys() <= {"alert", "expr", "for", "labels", "annotations"}
        assert assert_promql_looks_valid(alert["expr"], series)
        assert alert["annotations"].keys() == {"summary", "description"}
        assert "docs/runbook.md" in alert["annotations"]["description"]
        # Prometheus expands $labels in annotations: each one an alert refers to must be on its series.
        labels = {label for name in re.findall(r"\bdjangoops_\w+", alert["expr"]) for label in series[name]}
        for text in alert["annotations"].values():
            assert "{{" not in text.replace("{{ $labels.", "").replace("{{ or $labels.", ""), text
            for label in re.findall(r"\$labels\.(\w+)", text):
                # exported_namespace: the metric's own namespace once a ServiceMonitor's target label took it.
                assert label in labels or (label == "exported_namespace" and "namespace" in labels), label

    failed, restore, overdue = alerts.values()
    assert failed["labels"] == {"severity": "warning"} and "for" not in failed
    assert 'increase(djangoops_runs_finished_total{phase="Failed"' in failed["expr"]
    assert "[10m]) > 0" in failed["expr"]
    assert 'reason!="RestoreFailed"' in failed["expr"], "a failed restore pages once, as the critical alert"
    assert '"End states"' in failed["annotations"]["description"]
    assert restore["labels"] == {"severity": "critical"}
    assert 'increase(djangoops_runs_finished_total{phase="Failed", reason="RestoreFailed"}[10m]) > 0' in restore["expr"]
    assert '"Restore by hand"' in restore["annotations"]["description"]
    assert "stopped" in restore["annotations"]["summary"]
    assert overdue["labels"] == {"severity": "warning"}
    assert overdue["expr"].strip() == "djangoops_run_overdue == 1" and overdue["for"] == "5m"
    assert '"A run that waits"' in overdue["annotations"]["description"]
    assert ("kubectl -n {{ or $labels.exported_namespace $labels.namespace }} describe djm {{ $labels.name }}"
            in overdue["annotations"]["description"])

    slower = only(render(helm, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.overdueFor=15m"),
                  "PrometheusRule")
    assert slower["spec"]["groups"][0]["rules"][2]["for"] == "15m"


def test_the_counter_alerts_see_a_counters_first_increment(helm: Path) -> None:
    """prometheus_client creates a labelled counter at its first inc(), at 1: increase() alone never sees it."""
    rule = only(render(helm, "metrics.prometheusRule.enabled=true"), "PrometheusRule")
    for alert in rule["spec"]["groups"][0]["rules"][:2]:
        selector = re.search(r"increase\((djangoops_\w+\{[^}]*\})\[10m\]\)", alert["expr"])
        assert selector, alert["expr"]
        assert re.search(rf"or \(\s*{re.escape(selector.group(1))}\s+unless\s+{re.escape(selector.group(1))}"
                         r" offset 10m\)", alert["expr"]), alert["expr"]


# --- values schema and NOTES ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "complaint"), [
    ("imagee.tag=x", "additional properties 'imagee' not allowed"),
    ("watchNamespaces={Not_A_Namespace}", "does not match pattern"),
    ("image.pullPolicy=Sometimes", "value must be one of"),
    ("liveness.port=70000", "maximum"),
    ("metrics.prometheusRule.overdueFor=5min", "does not match pattern"),
    ("metrics.prometheusRule.enable=true", "additional properties 'enable' not allowed"),
])
def test_values_schema_refuses_bad_values(helm: Path, value: str, complaint: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION, "--set", value,
                      check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def notes(helm: Path, tmp_path: Path, *values: str) -> str:
    """NOTES.txt rendered as `helm install` would print it.

    `helm install --dry-run` has no --kube-version, and devcluster's helm assumes v1.20 (below kubeVersion), so
    the notes are rendered by `helm template` from a copy of the chart, through `tpl` in a ConfigMap.
    """
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    shutil.move(copy / "templates" / "NOTES.txt", copy / "notes.txt")
    (copy / "templates" / "notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
        'data: {notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}}\n')
    args = ["template", RELEASE, str(copy), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION,
            "--show-only", "templates/notes.yaml"]
    args += [arg for value in values for arg in ("--set", value)]
    text: str = yaml.safe_load(run_helm(helm, *args).stdout)["data"]["notes"]
    return text


def test_notes_say_what_to_do_next(helm: Path, tmp_path: Path) -> None:
    text = notes(helm, tmp_path)
    assert "in every namespace" in text
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in text
    assert "kubectl wait --for=condition=Succeeded" in text
    assert f"kubectl apply --server-side -f crds/{CRD.name}" in text
    assert "argocd/health.lua" in text
    namespaced = notes(helm, tmp_path / "namespaced", "watchNamespaces={shop,blog}")
    assert "only in: shop, blog" in namespaced
    assert "namespace: shop}" in namespaced


def test_the_argocd_health_check_is_packaged_with_the_chart(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("*.tgz")
    with tarfile.open(archive) as tar:
        packaged = tar.extractfile("django-migration-operator/argocd/health.lua")
        assert packaged is not None
        text = io.TextIOWrapper(packaged).read()
    assert text == (CHART / "argocd" / "health.lua").read_text()
