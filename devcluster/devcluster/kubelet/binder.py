"""Stands in for kube-scheduler: binds every unscheduled pod of the default scheduler to this node."""

from __future__ import annotations

import logging
import threading
from typing import Any

from devcluster.kubelet.api import ApiError, KubeApi, path_of
from devcluster.kubelet.events import EventRecorder

log = logging.getLogger("devcluster.kubelet")

# A failed bind is tried again, as kube-scheduler's backoff queue does (1 s, doubling, at most 10 s): nothing else
# would, since an unbound pod sees no further event. A kube-apiserver that has just restarted lists and watches
# before it takes writes, so the relist's bind can fail; the CI run that missed this left a backup pod Pending 300 s.
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0


class Binder:
    def __init__(self, api: KubeApi, node_name: str, events: EventRecorder, stop: threading.Event) -> None:
        self.api = api
        self.node_name = node_name
        self.events = events
        self.stop = stop

    def handle(self, kind: str, pod: dict[str, Any]) -> None:
        """Informer handler for pods with an empty spec.nodeName."""
        spec, metadata = pod.get("spec") or {}, pod["metadata"]
        if kind == "DELETED" or spec.get("nodeName") or metadata.get("deletionTimestamp"):
            return
        if (spec.get("schedulerName") or "default-scheduler") != "default-scheduler" or spec.get("schedulingGates"):
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if not self._bind(pod):
            threading.Thread(target=self._retry, args=(pod,), name=f"bind {metadata['name']}", daemon=True).start()

    def _bind(self, pod: dict[str, Any]) -> bool:
        """False when the API failed the bind; True once the pod is bound, or gone, or bound meanwhile."""
        metadata = pod["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": name, "namespace": namespace, "uid": metadata["uid"]},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name}}
        try:
            self.api.request("POST", path_of("api", "v1", "namespaces", namespace, "pods", name, "binding"),
                             body=binding)
        except ApiError as error:
            if error.status in (404, 409):  # gone, or bound meanwhile
                return True
            log.warning("binding pod %s/%s failed: %s; trying again", namespace, name, error)
            return False
        log.info("bound pod %s/%s to node %s", namespace, name, self.node_name)
        self.events.pod_event(pod, "Normal", "Scheduled",
                              f"Successfully assigned {namespace}/{name} to {self.node_name}",
                              component="default-scheduler")
        return True

    def _retry(self, pod: dict[str, Any]) -> None:
        delay = RETRY_SECONDS
        while not self.stop.wait(delay) and not self._bind(pod):
            delay = min(delay * 2, MAX_RETRY_SECONDS)
