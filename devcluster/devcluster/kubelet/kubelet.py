"""The kubelet process: wires the node agent, the binder, the provisioner, the pod workers and the server."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from typing import Any

from devcluster.kubelet import oci
from devcluster.kubelet.api import ApiError, Informer, KubeApi
from devcluster.kubelet.binder import Binder
from devcluster.kubelet.config import KubeletConfig
from devcluster.kubelet.environment import kubernetes_service_env
from devcluster.kubelet.events import EventRecorder
from devcluster.kubelet.ipam import PodAddresses
from devcluster.kubelet.node import NodeAgent
from devcluster.kubelet.objects import ApiObjects
from devcluster.kubelet.pod_worker import PodContext, PodWorker
from devcluster.kubelet.provisioner import Provisioner
from devcluster.kubelet.runtime import kill_leftovers, kill_own_children
from devcluster.kubelet.server import KubeletServer

log = logging.getLogger("devcluster.kubelet")

SHUTDOWN_GRACE_SECONDS = 3.0
API_WAIT_SECONDS = 60.0


class Kubelet:
    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()

    def run(self) -> None:
        """Runs until `stop` is set, then stops every pod process and returns."""
        config = self.config
        killed = kill_leftovers(config.processes_dir) + oci.remove_leftovers(config.runc_dir)
        if killed:
            log.info("killed %d processes a previous kubelet left", killed)
        api = KubeApi(config.kubeconfig)
        node = self._register(api)
        events = EventRecorder(api, config.node_name)
        events.start()
        self.context = PodContext(
            api=api, config=config, events=events,
            addresses=PodAddresses(config.pod_network, config.state_dir / "pod-addresses.json"),
            objects=ApiObjects(api), node_allocatable=node.resources,
            service_env=kubernetes_service_env(config.apiserver_host, config.apiserver_port),
            stopping=self.stop, forget=self._forget,
        )
        server = KubeletServer(config, self._find_pod)
        server.start()
        log.info("serving logs on https://%s:%d", config.serving_address, config.serving_port)
        threading.Thread(target=node.run_heartbeats, args=(self.stop,), name="heartbeat", daemon=True).start()

        pods = Informer(api, "pods", "/api/v1/pods", {"fieldSelector": f"spec.nodeName={config.node_name}"},
                        self._handle_pod, self.stop)
        pods.start()
        if config.bind_unscheduled_pods:
            binder = Binder(api, config.node_name, events, self.stop)
            Informer(api, "binder", "/api/v1/pods", {"fieldSelector": "spec.nodeName="}, binder.handle,
                     self.stop).start()
        provisioner = Provisioner(api, config.volume_claim_root)
        Informer(api, "provisioner", "/api/v1/persistentvolumeclaims", {}, provisioner.handle, self.stop).start()

        while not pods.synced.wait(1):
            if self.stop.is_set():
                break
        self._forget_stale_state()
        log.info("kubelet of node %s is running", config.node_name)
        while not self.stop.wait(1):  # a timed wait lets the signal handlers run promptly
            pass
        server.stop()
        self._stop_all_pods()

    def _register(self, api: KubeApi) -> NodeAgent:
        deadline = time.monotonic() + API_WAIT_SECONDS
        while True:
            try:
                node = NodeAgent(api, self.config)
                node.register()
                return node
            except ApiError as error:
                if time.monotonic() > deadline or self.stop.is_set():
                    raise
                log.info("waiting for the apiserver: %s", error)
                time.sleep(1)

    def _handle_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.workers_lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.remove()
                return
            if worker is not None:
                worker.update(pod)
                return
            worker = PodWorker(self.context, pod)
            self.workers[uid] = worker
        worker.start()

    def _forget(self, uid: str) -> None:
        with self.workers_lock:
            self.workers.pop(uid, None)

    def _find_pod(self, namespace: str, name: str) -> PodWorker | None:
        with self.workers_lock:
            for worker in self.workers.values():
                metadata = worker.pod["metadata"]
                if metadata["namespace"] == namespace and metadata["name"] == name and not worker.removed:
                    return worker
        return None

    def _forget_stale_state(self) -> None:
        """After the first listing: frees the IPs and folders of pods that went away while no kubelet ran."""
        with self.workers_lock:
            live = set(self.workers)
        self.context.addresses.keep_only(live)
        if self.config.pods_dir.exists():
            for folder in self.config.pods_dir.iterdir():
                if folder.name not in live:
                    shutil.rmtree(folder, ignore_errors=True)

    def _stop_all_pods(self) -> None:
        """SIGTERM to every container's group, a short grace, SIGKILL; no status is written."""
        with self.workers_lock:
            processes = [p for worker in self.workers.values() for p in worker.processes()]
        if processes:
            log.info("stopping %d container processes", len(processes))
        for process in processes:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for process in processes:
            process.exited.wait(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if not process.exited.is_set():
                process.signal_group(signal.SIGKILL)
        for process in processes:
            process.exited.wait(2)
        kill_own_children()
        oci.remove_leftovers(self.config.runc_dir)  # a container's init is no child of the kubelet
        log.info("kubelet stopped")
