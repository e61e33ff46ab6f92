"""Kubernetes Events about pods (Scheduled, Started, Killing, BackOff, ...), as `kubectl describe` shows them.

Sent from a queue by one background thread: recording an event never delays a pod's status write.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from devcluster.kubelet.api import KubeApi, path_of

log = logging.getLogger("devcluster.kubelet")


class EventRecorder(threading.Thread):
    def __init__(self, api: KubeApi, node_name: str, component: str = "kubelet") -> None:
        super().__init__(name="events", daemon=True)
        self.api = api
        self.node_name = node_name
        self.component = component
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=2000)

    def pod_event(
        self, pod: Mapping[str, Any], kind: str, reason: str, message: str, container: str | None = None,
        component: str | None = None,
    ) -> None:
        metadata = pod["metadata"]
        moment = datetime.now(UTC)
        involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "namespace": metadata["namespace"],
                                    "name": metadata["name"], "uid": metadata["uid"]}
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{metadata['name']}.{time.time_ns():x}", "namespace": metadata["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message, "type": kind,
            "source": {"component": component or self.component, "host": self.node_name},
            "firstTimestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1, "reportingComponent": component or self.component, "reportingInstance": self.node_name,
        }
        with suppress(queue.Full):  # events are best effort, as in the real kubelet
            self.queue.put_nowait(event)

    def run(self) -> None:
        while True:
            event = self.queue.get()
            try:
                self.api.request("POST", path_of("api", "v1", "namespaces", event["metadata"]["namespace"],
                                                 "events"), body=event)
            except Exception as error:
                log.debug("event %s not recorded: %s", event["reason"], error)
