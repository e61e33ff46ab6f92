"""Pod status as the real kubelet writes it: phase, conditions, container statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devcluster.kubelet.status import (
    ContainerRecord,
    PodView,
    Running,
    State,
    Terminated,
    Waiting,
    build_pod_status,
    container_status,
    pod_phase,
    record_from_api,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(name: str, state: State, **fields: Any) -> ContainerRecord:
    return ContainerRecord(name=name, image="busybox", state=state, **fields)


def done(code: int) -> Terminated:
    return Terminated(exit_code=code, reason="Completed" if code == 0 else "Error", finished_at=T0,
                      container_id="devcluster://42", started_at=T0 - timedelta(seconds=3))


RUNNING = Running(T0)
CREATING = Waiting("ContainerCreating")


@pytest.mark.parametrize(("policy", "states", "terminal", "phase"), [
    ("Always", [CREATING], False, "Pending"),
    ("Always", [RUNNING, CREATING], False, "Pending"),
    ("Always", [RUNNING], False, "Running"),
    ("Always", [done(1)], False, "Running"),  # restarting
    ("Always", [done(143)], True, "Failed"),  # deleted
    ("Always", [done(0)], True, "Succeeded"),
    ("Never", [done(0), done(0)], False, "Succeeded"),
    ("Never", [done(0), done(2)], False, "Failed"),
    ("Never", [done(2), RUNNING], False, "Running"),
    ("OnFailure", [done(0)], False, "Succeeded"),
    ("OnFailure", [done(1)], False, "Running"),
])
def test_phase(policy: str, states: list[State], terminal: bool, phase: str) -> None:
    records = [record(f"c{i}", state) for i, state in enumerate(states)]
    assert pod_phase({"restartPolicy": policy}, [], records, terminal) == phase


def test_phase_counts_a_container_in_back_off_as_stopped() -> None:
    backing_off = record("c", Waiting("CrashLoopBackOff"), last_state=done(1), restart_count=1)
    assert pod_phase({"restartPolicy": "Always"}, [], [backing_off], False) == "Running"


def test_phase_with_init_containers() -> None:
    waiting = [record("main", Waiting("PodInitializing"))]
    spec_never, spec_always = {"restartPolicy": "Never"}, {"restartPolicy": "Always"}
    assert pod_phase(spec_never, [record("init", RUNNING)], waiting, False) == "Pending"
    assert pod_phase(spec_never, [record("init", done(1))], waiting, False) == "Failed"
    assert pod_phase(spec_always, [record("init", done(1))], waiting, False) == "Pending"
    assert pod_phase(spec_always, [record("init", done(0))], [record("main", RUNNING)], False) == "Running"


def pod(**spec: Any) -> dict[str, Any]:
    containers = [{"name": "web", "image": "busybox",
                   "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets", "readOnly": True}]}]
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u", "generation": 1},
            "spec": {"containers": containers, **spec}, "status": {}}


def view(records: list[ContainerRecord], init: list[ContainerRecord] | None = None, restart_policy: str = "Always",
         **fields: Any) -> PodView:
    spec: dict[str, Any] = {"restartPolicy": restart_policy}
    if init:
        spec["initContainers"] = [{"name": r.name, "image": "busybox"} for r in init]
    defaults: dict[str, Any] = {"host_ip": "127.0.0.1", "pod_ip": "127.0.1.3", "start_time": T0,
                                "sandbox_ready": True, "pod_is_terminal": False}
    return PodView(pod=pod(**spec), init_records=init or [], records=records, **{**defaults, **fields})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_but_unready_pod() -> None:
    status = build_pod_status(view([record("web", RUNNING, started=True)]), {}, T0)
    assert status["phase"] == "Running"
    assert [c["type"] for c in status["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"]
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "ContainersNotReady"
    assert ready["message"] == "containers with unready status: [web]"
    assert status["podIP"] == "127.0.1.3" and status["podIPs"] == [{"ip": "127.0.1.3"}]
    assert status["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert status["startTime"] == "2026-01-02T03:04:05Z"


def test_ready_condition_clears_reason_and_keeps_transition_times() -> None:
    first = build_pod_status(view([record("web", RUNNING)]), {}, T0)
    later = T0 + timedelta(seconds=30)
    second = build_pod_status(view([record("web", RUNNING, ready=True, started=True)]), first, later)
    ready = conditions(second)["Ready"]
    assert ready["status"] == "True"
    assert ready["reason"] is None and ready["message"] is None  # deleted by the strategic merge patch
    assert ready["lastTransitionTime"] == "2026-01-02T03:04:35Z"
    assert conditions(second)["Initialized"]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_succeeded_pod_conditions() -> None:
    status = build_pod_status(view([record("web", done(0))], restart_policy="Never", sandbox_ready=False), {}, T0)
    assert status["phase"] == "Succeeded"
    by_type = conditions(status)
    assert by_type["Ready"]["reason"] == "PodCompleted"
    assert by_type["ContainersReady"]["reason"] == "PodCompleted"
    assert by_type["Initialized"]["reason"] == "PodCompleted"
    assert by_type["PodReadyToStartContainers"]["status"] == "False"


def test_initializing_pod() -> None:
    status = build_pod_status(view([record("web", Waiting("PodInitializing"))],
                                   init=[record("migrate", RUNNING), record("seed", Waiting("PodInitializing"))]),
                              {}, T0)
    assert status["phase"] == "Pending"
    initialized = conditions(status)["Initialized"]
    assert initialized["reason"] == "ContainersNotInitialized"
    assert initialized["message"] == "containers with incomplete status: [migrate seed]"
    assert [s["name"] for s in status["initContainerStatuses"]] == ["migrate", "seed"]


def test_terminal_phase_never_changes_and_a_terminated_pod_is_not_running() -> None:
    status = build_pod_status(view([record("web", RUNNING)]), {"phase": "Succeeded"}, T0)
    assert status["phase"] == "Succeeded"
    stopped = build_pod_status(view([record("web", Waiting("ContainerCreating"))], pod_is_terminal=True), {}, T0)
    assert stopped["phase"] == "Failed"


def test_deadline_exceeded_fails_the_pod_whatever_the_exit_codes() -> None:
    status = build_pod_status(view([record("web", done(0))], pod_is_terminal=True, reason="DeadlineExceeded",
                                   message="Pod was active on the node longer than the specified deadline"), {}, T0)
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")


def test_readiness_gates() -> None:
    spec_pod = pod(readinessGates=[{"conditionType": "example.com/lb"}])
    ready_view = view([record("web", RUNNING, ready=True, started=True)])
    ready_view.pod = spec_pod
    status = build_pod_status(ready_view, {}, T0)
    assert conditions(status)["Ready"]["reason"] == "ReadinessGatesNotReady"
    spec_pod["status"] = {"conditions": [{"type": "example.com/lb", "status": "True"}]}
    assert conditions(build_pod_status(ready_view, {}, T0))["Ready"]["status"] == "True"


def test_container_status_shapes() -> None:
    spec = pod()["spec"]["containers"][0]
    backing_off = record("web", Waiting("CrashLoopBackOff", "back-off 10s restarting failed container=web pod=p_n(u)"),
                         last_state=Terminated(exit_code=137, reason="Error", finished_at=T0, container_id="devcluster://7",
                                               started_at=T0, signal=9, message="killed"),
                         restart_count=2, container_id="devcluster://7", image_id="sha256:abc")
    status = container_status(backing_off, spec)
    assert status == {
        "name": "web", "image": "busybox", "imageID": "sha256:abc", "containerID": "devcluster://7",
        "ready": False, "started": False, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
                              "message": "back-off 10s restarting failed container=web pod=p_n(u)"}},
        "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "Error", "message": "killed",
                                     "startedAt": "2026-01-02T03:04:05Z", "finishedAt": "2026-01-02T03:04:05Z",
                                     "containerID": "devcluster://7"}},
        "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets", "readOnly": True,
                          "recursiveReadOnly": "Disabled"}],
    }
    assert record_from_api(status) == backing_off
