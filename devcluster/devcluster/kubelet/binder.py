"""Stands in for kube-scheduler: binds every unscheduled pod of the default scheduler to this node."""

from __future__ import annotations

import logging
from typing import Any

from devcluster.kubelet.api import ApiError, KubeApi, path_of
from devcluster.kubelet.events import EventRecorder

log = logging.getLogger("devcluster.kubelet")


class Binder:
    def __init__(self, api: KubeApi, node_name: str, events: EventRecorder) -> None:
        self.api = api
        self.node_name = node_name
        self.events = events

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """Informer handler for pods with an empty spec.nodeName."""
        spec, metadata = pod.get("spec") or {}, pod["metadata"]
        if kind == "DELETED" or spec.get("nodeName") or metadata.get("deletionTimestamp"):
            return
        if (spec.get("schedulerName") or "default-scheduler") != "default-scheduler" or spec.get("schedulingGates"):
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        namespace, name = metadata["namespace"], metadata["name"]
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": name, "namespace": namespace, "uid": metadata["uid"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            self.api.request("POST", path_of("api", "v1", "namespaces", namespace, "pods", name, "binding"),
                             body=binding)
        except ApiError as error:
            if error.status in (404, 409):  # gone, or bound meanwhile
                return
            raise
        log.info("bound pod %s/%s to node %s", namespace, name, self.node_name)
        self.events.pod_event(pod, "Normal", "Scheduled",
                              f"Successfully assigned {namespace}/{name} to {self.node_name}",
                              component="default-scheduler")
