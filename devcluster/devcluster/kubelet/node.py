"""The Node object of this kubelet: registration, Ready status, Lease heartbeat, no taints."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devcluster.kubelet.api import STRATEGIC_MERGE_PATCH, ApiError, KubeApi, path_of
from devcluster.kubelet.config import KubeletConfig
from devcluster.kubelet.status import rfc3339

log = logging.getLogger("devcluster.kubelet")

LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_EVERY_RENEWALS = 2  # the Ready heartbeat every 20 s, well inside the 40-50 s grace of node lifecycle
UNWANTED_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
MAX_PODS = "110"


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def node_resources(state_dir: Path) -> dict[str, str]:
    memory_kib = next((line.split()[1] for line in _read("/proc/meminfo").splitlines()
                       if line.startswith("MemTotal:")), "0")
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib}Ki",
        "pods": MAX_PODS,
        "ephemeral-storage": f"{shutil.disk_usage(state_dir).total // 1024}Ki",
    }


class NodeAgent:
    def __init__(self, api: KubeApi, config: KubeletConfig) -> None:
        self.api = api
        self.config = config
        self.name = config.node_name
        self.resources = node_resources(config.state_dir)
        self.kubelet_version = str(api.get("/version").get("gitVersion", "v0.0.0"))

    def conditions(self) -> list[dict[str, Any]]:
        moment = rfc3339(datetime.now(UTC))
        rows = (
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        )
        return [{"type": kind, "status": status, "reason": reason, "message": message,
                 "lastHeartbeatTime": moment, "lastTransitionTime": moment}
                for kind, status, reason, message in rows]

    def status(self, with_transition_times: bool) -> dict[str, Any]:
        conditions = self.conditions()
        if not with_transition_times:  # a heartbeat keeps the times at which the conditions became what they are
            for condition in conditions:
                del condition["lastTransitionTime"]
        return {
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.serving_port}},
            "capacity": self.resources,
            "allocatable": self.resources,
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid", _read("/etc/machine-id")),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": "devcluster://1.0",
                "kubeletVersion": self.kubelet_version,
                "operatingSystem": "linux",
                "architecture": _architecture(),
            },
        }

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": _architecture(), "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": _architecture()}
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels},
                "spec": {}, "status": self.status(with_transition_times=True)}
        try:
            self.api.request("POST", "/api/v1/nodes", body=node)
            log.info("node %s registered (kubelet version %s)", self.name, self.kubelet_version)
        except ApiError as error:
            if error.status != 409:
                raise
            self.api.request("PATCH", path_of("api", "v1", "nodes", self.name), body={"metadata": {"labels": labels}},
                             content_type=STRATEGIC_MERGE_PATCH)
            self.api.request("PATCH", path_of("api", "v1", "nodes", self.name, "status"),
                             body={"status": self.status(with_transition_times=True)},
                             content_type=STRATEGIC_MERGE_PATCH)
            log.info("node %s updated (kubelet version %s)", self.name, self.kubelet_version)
        self.remove_taints()
        self.renew_lease()

    def remove_taints(self) -> None:
        for _ in range(5):  # the node lifecycle controller may be writing the node at the same moment
            node = self.api.get(path_of("api", "v1", "nodes", self.name))
            taints = node.get("spec", {}).get("taints") or []
            kept = [t for t in taints if t.get("key") not in UNWANTED_TAINTS]
            if len(kept) == len(taints):
                return
            try:
                self.api.request("PATCH", path_of("api", "v1", "nodes", self.name),
                                 body={"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                                       "spec": {"taints": kept or None}},
                                 content_type="application/merge-patch+json")
            except ApiError as error:
                if error.status == 409:
                    continue
                raise
            removed = sorted({t["key"] for t in taints} - {t["key"] for t in kept})
            log.info("removed taints %s from node %s", removed, self.name)
            return

    def renew_lease(self) -> None:
        path = path_of("apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases", self.name)
        renew_time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = self.api.get_or_none(path)
        if lease is None:
            node = self.api.get(path_of("api", "v1", "nodes", self.name))
            self.api.request("POST", path_of("apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease",
                                             "leases"), body={
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease", "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}]},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": renew_time}})
            return
        lease["spec"].update({"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                              "renewTime": renew_time})
        self.api.request("PUT", path, body=lease)

    def heartbeat(self) -> None:
        self.api.request("PATCH", path_of("api", "v1", "nodes", self.name, "status"),
                         body={"status": self.status(with_transition_times=False)},
                         content_type=STRATEGIC_MERGE_PATCH)
        self.remove_taints()

    def run_heartbeats(self, stop: threading.Event) -> None:
        beat = 0
        while not stop.wait(LEASE_RENEW_SECONDS):
            beat += 1
            try:
                self.renew_lease()
                if beat % STATUS_EVERY_RENEWALS == 0:
                    self.heartbeat()
            except ApiError as error:
                if error.status == 404:  # someone deleted the Node: register again
                    self.register()
                else:
                    log.warning("node heartbeat failed: %s", error)
            except Exception as error:
                log.warning("node heartbeat failed: %s", error)


def hostname() -> str:
    return socket.gethostname()
