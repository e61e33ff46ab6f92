"""devcluster is a real cluster: Deployments, Jobs, volumes, Secrets, logs and RBAC behave as Kubernetes says."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client

from devcluster.cluster import Cluster, postgres_major
from tests.e2e.kit import Kubectl, wait_for

GRACE_SECONDS = 5


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def job(name: str, image: str, command: list[str], **pod_spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": image, "command": command,
                 "terminationMessagePolicy": "FallbackToLogsOnError", **pod_spec.pop("container", {})}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "containers": [container], **pod_spec}}}}


def job_pod(core: client.CoreV1Api, namespace: str, job_name: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items
    assert len(pods) == 1, f"expected one pod of job {job_name}, found {len(pods)}"
    return pods[0]


def job_finished(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """'Complete' or 'Failed' once the Job controller says so."""
    conditions = batch.read_namespaced_job_status(name, namespace).status.conditions or []
    for condition in conditions:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def container_pid(pod: client.V1Pod) -> int:
    container_id = pod.status.container_statuses[0].container_id
    return int(container_id.rsplit("/", 1)[-1])


def test_deployment_runs_replicas_as_processes_with_own_ips(
    namespace: str, database: str, cluster: Cluster, core: client.CoreV1Api, apps: client.AppsV1Api,
    kubectl: Kubectl,
) -> None:
    web = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": GRACE_SECONDS, "containers": [{
                "name": "django", "image": "blog:2.0",
                "command": ["gunicorn", "blogsite.wsgi", "--bind", "$(POD_IP):8000", "--workers", "1"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 1},
            }]}}},
    }
    cluster.apply(namespace, secret("db", {"url": database}), web)
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=90s")

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert all(p.status.phase == "Running" for p in pods)
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2, f"pods share an IP: {ips}"
    for ip in ips:
        assert ip.startswith("127.") and ip != "127.0.0.1"
        with urllib.request.urlopen(f"http://{ip}:8000/healthz", timeout=5) as response:
            assert response.status == 200
    pids = [container_pid(p) for p in pods]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)

    started = time.monotonic()
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items,
             "the web pods to be gone", timeout=GRACE_SECONDS + 15)
    assert time.monotonic() - started < GRACE_SECONDS + 10
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "a pod's process outlived its pod"


def test_pg_dump_job_writes_into_a_volume_claim(
    namespace: str, database: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api,
    kubectl: Kubectl,
) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "backups"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    dump = job("dump", f"postgres:{postgres_major()}",
               ["pg_dump", "--format=custom", "--file=/backups/db.dump", "$(DATABASE_URL)"],
               container={"env": [{"name": "DATABASE_URL",
                                   "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}],
                          "volumeMounts": [{"name": "backups", "mountPath": "/backups"}]},
               volumes=[{"name": "backups", "persistentVolumeClaim": {"claimName": "backups"}}])
    subprocess.run(["psql", database, "-qc", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)"],
                   check=True)
    cluster.apply(namespace, secret("db", {"url": database}), claim, dump)

    assert wait_for(lambda: job_finished(batch, namespace, "dump"), "the dump Job", timeout=60) == "Complete"
    dump_file = cluster.layout.volume_claims / namespace / "backups" / "db.dump"
    assert dump_file.stat().st_size > 0
    listing = subprocess.run(["pg_restore", "--list", str(dump_file)], capture_output=True, text=True, check=True)
    assert "TABLE DATA public t" in listing.stdout
    assert wait_for(lambda: core.read_namespaced_persistent_volume_claim("backups", namespace).status.phase
                    == "Bound", "the claim to be Bound")


def test_failing_job_reports_exit_code_message_and_logs(
    namespace: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api, kubectl: Kubectl
) -> None:
    script = "echo step one; echo step two; echo 'fatal: the thing broke' >&2; exit 3"
    cluster.apply(namespace, job("broken", "busybox", ["sh", "-c", script]))

    assert wait_for(lambda: job_finished(batch, namespace, "broken"), "the broken Job", timeout=60) == "Failed"
    pod = job_pod(core, namespace, "broken")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert "fatal: the thing broke" in terminated.message
    logs = kubectl("logs", "-n", namespace, pod.metadata.name).stdout
    assert logs.splitlines()[:2] == ["step one", "step two"]
    assert "fatal: the thing broke" in kubectl("logs", "-n", namespace, "job/broken").stdout


# Lists pods with the mounted ServiceAccount token, as any in-cluster client does.
IN_CLUSTER_LIST = """
from kubernetes import client, config
config.load_incluster_config()
try:
    pods = client.CoreV1Api().list_namespaced_pod(open(
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace").read())
    print("allowed", len(pods.items))
except client.ApiException as error:
    print("denied", error.status)
"""


def test_rbac_is_enforced_for_service_account_tokens(
    namespace: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api, kubectl: Kubectl
) -> None:
    reader_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]}
    accounts = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n}} for n in ("nobody", "reader")]
    jobs = [job(f"as-{n}", "django-migration-operator:dev", ["python", "-c", IN_CLUSTER_LIST], serviceAccountName=n)
            for n in ("nobody", "reader")]
    cluster.apply(namespace, *accounts, reader_role, binding, *jobs)

    for name in ("as-nobody", "as-reader"):
        assert wait_for(partial(job_finished, batch, namespace, name), name, timeout=60) == "Complete"
    nobody = kubectl("logs", "-n", namespace, "job/as-nobody").stdout.split()
    reader = kubectl("logs", "-n", namespace, "job/as-reader").stdout.split()
    assert nobody == ["denied", "403"]
    assert reader[0] == "allowed" and int(reader[1]) >= 1


def test_secret_reaches_a_pod_through_env_and_a_mounted_file(
    namespace: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api, kubectl: Kubectl
) -> None:
    value = os.urandom(8).hex()
    reader = job("read-secret", "busybox", ["sh", "-c", 'echo "env=$TOKEN"; echo "file=$(cat /etc/app/token)"'],
                 container={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}],
                            "volumeMounts": [{"name": "app", "mountPath": "/etc/app", "readOnly": True}]},
                 volumes=[{"name": "app", "secret": {"secretName": "app"}}])
    cluster.apply(namespace, secret("app", {"token": value}), reader)

    assert wait_for(lambda: job_finished(batch, namespace, "read-secret"), "the reader Job", timeout=60) == "Complete"
    assert kubectl("logs", "-n", namespace, "job/read-secret").stdout.split() == [f"env={value}", f"file={value}"]


def test_server_reports_its_real_version(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    assert version["clientVersion"]["gitVersion"] == "v1.36.3"
