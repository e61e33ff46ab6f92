"""OCI containers on devcluster: the operator's image, built from the Dockerfile (`make image`), run by runc under the
pod's securityContext, with logs, exit codes, termination messages and graceful termination as for any container.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from kubernetes import client

from devcluster.cluster import Cluster
from devcluster.kubelet.oci import RUNC
from tests.e2e.kit import Kubectl, wait_for
from tests.e2e.test_devcluster import job, job_finished, job_pod

IMAGE = "django-migration-operator:oci"
# The chart's own (charts/django-migration-operator/values.yaml).
RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}}
TMP = {"volumes": [{"name": "tmp", "emptyDir": {}}]}
TMP_MOUNT = {"volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}

# What the process can see of itself and do, printed one fact a line; then a message for the kubelet, and exit 3.
INSPECT = """
import errno, os, kopf
print("ids", os.getuid(), os.getgid())
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print("CapEff", status["CapEff"].strip(), "NoNewPrivs", status["NoNewPrivs"].strip(), "pid", os.getpid())
for path in ("/app/written", "/tmp/written"):
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as error:
        print("refused", path, errno.errorcode[error.errno])
open("/dev/termination-log", "w").write("inspected")
raise SystemExit(3)
"""


def runc(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """runc on the kubelet's containers."""
    return subprocess.run([RUNC, "--root", str(cluster.layout.root / "kubelet" / "runc"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def runc_containers(cluster: Cluster) -> list[str]:
    return runc(cluster, "list", "--quiet").stdout.split()


def test_the_operator_image_runs_as_its_user_with_a_read_only_root_and_no_capabilities(
        namespace: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api,
        kubectl: Kubectl) -> None:
    cluster.apply(namespace, job("inspect", IMAGE, ["python", "-c", INSPECT],
                                 container={"securityContext": RESTRICTED, **TMP_MOUNT}, **TMP))
    assert wait_for(lambda: job_finished(batch, namespace, "inspect"), "the Job", timeout=60) == "Failed"
    pod = job_pod(core, namespace, "inspect")
    (status,) = pod.status.container_statuses
    assert status.state.terminated.exit_code == 3 and status.state.terminated.reason == "Error"
    assert status.state.terminated.message == "inspected"
    assert status.container_id.startswith("runc://")
    lines = kubectl("logs", "-n", namespace, pod.metadata.name).stdout.splitlines()
    assert "ids 10001 10001" in lines, "the image's USER"
    assert "CapEff 0000000000000000 NoNewPrivs 1 pid 1" in lines, "no capability, no escalation, a pid namespace"
    assert "refused /app/written EROFS" in lines, "the root filesystem is read-only"
    assert "wrote /tmp/written" in lines, "the emptyDir is writable by the image's user"
    assert status.container_id.removeprefix("runc://") not in runc_containers(cluster), "runc's state is removed"


def test_a_root_image_user_is_refused_under_run_as_non_root_and_a_missing_command_is_a_start_error(
        namespace: str, cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api) -> None:
    as_root = {"runAsNonRoot": True, "runAsUser": 0}
    cluster.apply(namespace, job("as-root", IMAGE, ["python", "-c", "pass"], container={"securityContext": as_root}),
                  job("no-such", IMAGE, ["no-such-command"]))

    def waiting_reason() -> Any:
        statuses = job_pod(core, namespace, "as-root").status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None

    waiting = wait_for(waiting_reason, "the refusal", timeout=60)
    assert "runAsNonRoot and image will run as root" in waiting.message
    assert wait_for(lambda: job_finished(batch, namespace, "no-such"), "the Job", timeout=60) == "Failed"
    terminated = job_pod(core, namespace, "no-such").status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError" and terminated.exit_code == 128
    assert 'exec: "no-such-command": executable file not found in $PATH' in terminated.message


def test_a_deleted_pod_gets_sigterm_in_its_container_and_leaves_nothing_behind(
        namespace: str, cluster: Cluster, core: client.CoreV1Api, kubectl: Kubectl) -> None:
    # pid 1 of a pid namespace has no default signal actions: the handler is what ends it.
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
              "print('serving', flush=True)\n"
              "time.sleep(300)\n")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "graceful"},
           "spec": {"terminationGracePeriodSeconds": 60, "containers": [{
               "name": "main", "image": IMAGE, "command": ["python", "-c", script],
               "securityContext": RESTRICTED}]}}
    cluster.apply(namespace, pod)
    wait_for(lambda: "serving" in kubectl("logs", "-n", namespace, "graceful", check=False).stdout,
             "the container to run", timeout=60)
    container = core.read_namespaced_pod("graceful", namespace).status.container_statuses[0].container_id
    assert container.removeprefix("runc://") in runc_containers(cluster)
    started = time.monotonic()
    kubectl("delete", "pod", "-n", namespace, "graceful", "--wait=true", "--timeout=60s")
    assert time.monotonic() - started < 20, "ended by its SIGTERM handler, not killed at the 60 s deadline"
    assert container.removeprefix("runc://") not in runc_containers(cluster)
