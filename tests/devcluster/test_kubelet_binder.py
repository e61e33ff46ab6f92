"""The binder against a fake API: a bind the API fails is tried again until the pod is bound."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from devcluster.kubelet import binder as binder_module
from devcluster.kubelet.api import ApiError
from devcluster.kubelet.binder import Binder

BINDING = "/api/v1/namespaces/blog/pods/backup-1/binding"


class FlakyApi:
    """Answers each bind with the next of `answers` (an ApiError is raised), then succeeds."""

    def __init__(self, *answers: ApiError) -> None:
        self.answers = list(answers)
        self.binds: list[str] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        assert (method, path, body["target"]["name"]) == ("POST", BINDING, "devcluster")
        self.binds.append(path)
        if self.answers:
            raise self.answers.pop(0)
        return {}


class FakeEvents:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def pod_event(self, pod: Any, kind: str, reason: str, message: str, **_: Any) -> None:
        self.reasons.append(reason)


def unbound_pod() -> dict[str, Any]:
    return {"metadata": {"name": "backup-1", "namespace": "blog", "uid": "uid-1"}, "spec": {}, "status": {}}


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binder_module, "RETRY_SECONDS", 0.01)


def test_a_bind_the_api_fails_is_tried_again_until_the_pod_is_bound() -> None:
    api, events, stop = FlakyApi(ApiError(0, "connection refused"), ApiError(503, "not ready")), FakeEvents(), \
        threading.Event()
    Binder(api, "devcluster", events, stop).handle("ADDED", unbound_pod())  # type: ignore[arg-type]
    wait_until(lambda: events.reasons == ["Scheduled"])
    stop.set()
    assert len(api.binds) == 3


@pytest.mark.parametrize("status", [404, 409])
def test_a_pod_gone_or_bound_meanwhile_is_not_tried_again(status: int) -> None:
    api, events, stop = FlakyApi(ApiError(status, "gone or bound")), FakeEvents(), threading.Event()
    Binder(api, "devcluster", events, stop).handle("ADDED", unbound_pod())  # type: ignore[arg-type]
    time.sleep(0.1)
    stop.set()
    assert api.binds == [BINDING] and events.reasons == []


def test_retries_end_when_the_kubelet_stops() -> None:
    api, events, stop = FlakyApi(*[ApiError(0, "connection refused")] * 1000), FakeEvents(), threading.Event()
    Binder(api, "devcluster", events, stop).handle("ADDED", unbound_pod())  # type: ignore[arg-type]
    wait_until(lambda: len(api.binds) >= 2)
    stop.set()
    time.sleep(0.1)
    tried = len(api.binds)
    time.sleep(0.2)
    assert len(api.binds) == tried and events.reasons == []
