"""The pod worker's syncs against a fake API, for the paths that start no process: what it writes and deletes."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any

import pytest

from devcluster.kubelet.config import Image, KubeletConfig
from devcluster.kubelet.ipam import PodAddresses
from devcluster.kubelet.lifecycle import LogLookupError, PodLifecycle
from devcluster.kubelet.objects import ApiObjects
from devcluster.kubelet.pod_worker import PodContext, PodWorker

POD_PATH = "/api/v1/namespaces/blog/pods/web-1"


class FakeApi:
    """Records the requests; every object it is asked for is missing."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append((method, path, body))
        return {}

    def get_or_none(self, path: str) -> None:
        return None

    def statuses(self) -> list[dict[str, Any]]:
        return [body["status"] for method, path, body in self.requests if path == f"{POD_PATH}/status"]


class FakeEvents:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def pod_event(self, pod: Any, kind: str, reason: str, message: str, container: str | None = None) -> None:
        self.seen.append((reason, message, container))


def make_pod(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "app", "image": "busybox"}])
    return {"metadata": {"name": "web-1", "namespace": "blog", "uid": "uid-1"},
            "spec": {"containers": containers, **spec}, "status": status or {}}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def events() -> FakeEvents:
    return FakeEvents()


@pytest.fixture
def context(tmp_path: Path, api: FakeApi, events: FakeEvents) -> PodContext:
    config = KubeletConfig(
        kubeconfig=tmp_path / "kubeconfig", node_name="devcluster", state_dir=tmp_path / "state",
        volume_claim_root=tmp_path / "claims", pod_network=ipaddress.IPv4Network("127.0.1.0/24"),
        apiserver_host="127.0.0.1", apiserver_port=6443, serving_address="127.0.0.1", serving_port=10250,
        serving_cert_file=tmp_path / "cert", serving_key_file=tmp_path / "key", bind_unscheduled_pods=True,
        images={"busybox": Image(name="busybox", working_dir=str(tmp_path), path=())},
    )
    return PodContext(api=api, config=config, events=events,  # type: ignore[arg-type]
                      addresses=PodAddresses(config.pod_network, tmp_path / "addresses.json"),
                      objects=ApiObjects(api), node_allocatable={}, service_env={},  # type: ignore[arg-type]
                      stopping=threading.Event(), forget=lambda uid: None)


def sync(worker: PodWorker, pod: dict[str, Any], removed: bool = False) -> bool:
    worker.pod = pod
    return worker._sync(pod, removed, [], [])


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_an_unknown_image_waits_in_err_image_pull_with_one_event(context: PodContext, api: FakeApi,
                                                                 events: FakeEvents) -> None:
    pod = make_pod(containers=[{"name": "app", "image": "nginx"}])
    worker = PodWorker(context, pod)
    assert not sync(worker, pod)
    assert not sync(worker, pod)
    [status] = api.statuses()  # the second sync changed nothing, so it wrote nothing
    assert status["phase"] == "Pending"
    assert status["podIP"] == "127.0.1.1"
    assert condition(status, "PodReadyToStartContainers")["status"] == "True"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert [reason for reason, _, _ in events.seen] == ["Failed"]
    assert worker.lifecycle is PodLifecycle.ACTIVE
    with pytest.raises(LogLookupError, match="is waiting to start: image can't be pulled"):
        worker.log_file("app", previous=False)
    with pytest.raises(LogLookupError, match='container "db" not found') as error:
        worker.log_file("db", previous=False)
    assert error.value.status == 404


def test_a_container_whose_secret_is_missing_is_retried(context: PodContext, api: FakeApi,
                                                        events: FakeEvents) -> None:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    pod = make_pod(containers=[{"name": "app", "image": "busybox", "env": env}])
    worker = PodWorker(context, pod)
    sync(worker, pod)
    [status] = api.statuses()
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    assert [reason for reason, _, _ in events.seen] == ["Failed"]
    retry_at = worker.slots[0].retry_at
    assert retry_at is not None and worker._next_wake() == retry_at


def test_init_containers_hold_the_others_in_pod_initializing(context: PodContext, api: FakeApi) -> None:
    pod = make_pod(initContainers=[{"name": "migrate", "image": "nginx"}])
    worker = PodWorker(context, pod)
    sync(worker, pod)
    [status] = api.statuses()
    assert status["initContainerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert condition(status, "Initialized")["reason"] == "ContainersNotInitialized"


def test_a_pod_deleted_before_it_started_fails_and_is_deleted_for_good(context: PodContext, api: FakeApi) -> None:
    pod = make_pod()
    pod["metadata"]["deletionTimestamp"] = "2026-01-02T03:04:05Z"
    worker = PodWorker(context, pod)
    assert not sync(worker, pod)
    [status] = api.statuses()
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert condition(status, "PodReadyToStartContainers")["status"] == "False"
    assert api.requests[-1] == ("DELETE", POD_PATH, {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1"}})
    assert worker.lifecycle is PodLifecycle.DELETED
    requests = len(api.requests)
    assert not sync(worker, pod)
    assert len(api.requests) == requests  # deleted already: it waits for the API to remove the pod
    assert sync(worker, pod, removed=True)
    assert not worker.pod_dir.exists()


def test_a_pod_past_its_deadline_fails_with_deadline_exceeded(context: PodContext, api: FakeApi) -> None:
    earlier = {"phase": "Pending", "startTime": "2026-01-02T03:04:05Z", "podIP": "127.0.1.9",
               "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    pod = make_pod(earlier, activeDeadlineSeconds=5)
    worker = PodWorker(context, pod)
    sync(worker, pod)
    [status] = api.statuses()
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")
    assert status["message"] == "Pod was active on the node longer than the specified deadline"
    assert worker.lifecycle is PodLifecycle.TERMINAL
    assert worker._next_wake() is None  # its deadline, long past, wakes it no more


def test_a_pod_that_ended_under_an_earlier_kubelet_stays_ended(context: PodContext, api: FakeApi) -> None:
    done = {"name": "app", "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": "2026-01-02T03:04:05Z"}}}
    pod = make_pod({"phase": "Succeeded", "containerStatuses": [done]}, restartPolicy="Never")
    worker = PodWorker(context, pod)
    assert worker.lifecycle is PodLifecycle.TERMINAL
    sync(worker, pod)
    assert api.statuses() == []
    pod["metadata"]["deletionTimestamp"] = "2026-01-02T03:05:00Z"
    sync(worker, pod)
    assert api.statuses()[-1]["phase"] == "Succeeded"
    assert api.requests[-1][0] == "DELETE"


def test_a_pod_gone_from_the_api_frees_its_address_and_folder(context: PodContext) -> None:
    pod = make_pod(containers=[{"name": "app", "image": "nginx"}])
    worker = PodWorker(context, pod)
    sync(worker, pod)
    assert worker.pod_dir.exists() and context.addresses.owners == {"127.0.1.1": "uid-1"}
    assert sync(worker, pod, removed=True)
    assert not worker.pod_dir.exists() and context.addresses.owners == {}
