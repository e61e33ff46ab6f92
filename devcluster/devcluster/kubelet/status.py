"""Pod status as the real kubelet writes it (pkg/kubelet/status/generate.go and kubelet_pods.go).

Pure functions from the kubelet's records of a pod's containers to the API's status object: phase,
conditions, container statuses. The messages and reasons are upstream's, word for word, because tools and
tests match on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def rfc3339(moment: datetime) -> str:
    """The API's metav1.Time: seconds, UTC, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    finished_at: datetime
    container_id: str
    started_at: datetime | None = None
    message: str = ""
    signal: int | None = None


State = Waiting | Running | Terminated


@dataclass
class ContainerRecord:
    """What the kubelet knows of one container of a pod; the source of its containerStatus."""

    name: str
    image: str
    state: State
    image_id: str = ""
    container_id: str = ""
    last_state: Terminated | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False


def terminated_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def _state_dict(state: State | None) -> dict[str, Any]:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        waiting: dict[str, Any] = {"reason": state.reason}
        if state.message:
            waiting["message"] = state.message
        return {"waiting": waiting}
    if isinstance(state, Running):
        return {"running": {"startedAt": rfc3339(state.started_at)}}
    terminated: dict[str, Any] = {"exitCode": state.exit_code, "reason": state.reason}
    if state.signal:
        terminated["signal"] = state.signal
    if state.message:
        terminated["message"] = state.message
    terminated["startedAt"] = rfc3339(state.started_at) if state.started_at else None
    terminated["finishedAt"] = rfc3339(state.finished_at)
    if state.container_id:
        terminated["containerID"] = state.container_id
    return {"terminated": terminated}


def container_status(record: ContainerRecord, spec: Mapping[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": record.name,
        "image": record.image,
        "imageID": record.image_id,
        "ready": record.ready,
        "started": record.started,
        "restartCount": record.restart_count,
        "state": _state_dict(record.state),
        "lastState": _state_dict(record.last_state),
    }
    if record.container_id:
        status["containerID"] = record.container_id
    mounts = []
    for mount in spec.get("volumeMounts") or []:
        entry: dict[str, Any] = {"name": mount["name"], "mountPath": mount["mountPath"]}
        if mount.get("readOnly"):
            entry["readOnly"] = True
        entry["recursiveReadOnly"] = "Disabled"
        mounts.append(entry)
    if mounts:
        status["volumeMounts"] = mounts
    return status


def pod_phase(
    spec: Mapping[str, Any],
    init_records: Sequence[ContainerRecord],
    records: Sequence[ContainerRecord],
    pod_is_terminal: bool,
) -> str:
    """getPhase of kubelet_pods.go (without restartable init containers)."""
    pending_init = failed_init = 0
    for record in init_records:
        state = record.state
        if isinstance(state, Terminated):
            failed_init += state.exit_code != 0
        elif isinstance(state, Waiting) and record.last_state is not None:
            failed_init += record.last_state.exit_code != 0
        else:
            pending_init += 1
    running = waiting = stopped = succeeded = 0
    for record in records:
        state = record.state
        if isinstance(state, Running):
            running += 1
        elif isinstance(state, Terminated):
            stopped += 1
            succeeded += state.exit_code == 0
        elif record.last_state is not None:
            stopped += 1
        else:
            waiting += 1
    restart_policy = spec.get("restartPolicy") or "Always"
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if pod_is_terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


def _go_list(names: Sequence[str]) -> str:
    return "[" + " ".join(names) + "]"


def containers_ready_condition(records: Sequence[ContainerRecord], phase: str) -> dict[str, Any]:
    if phase == "Succeeded":
        return {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}
    if phase == "Failed":
        return {"type": "ContainersReady", "status": "False", "reason": "PodFailed"}
    unready = [r.name for r in records if not r.ready]
    if unready:
        return {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
                "message": f"containers with unready status: {_go_list(unready)}"}
    return {"type": "ContainersReady", "status": "True"}


def ready_condition(
    containers_ready: Mapping[str, Any], readiness_gates: Sequence[Mapping[str, Any]],
    other_conditions: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    if containers_ready["status"] != "True":
        return {**containers_ready, "type": "Ready"}
    unready: list[str] = []
    for gate in readiness_gates:
        gate_type = gate.get("conditionType", "")
        condition = other_conditions.get(gate_type)
        if condition is None:
            unready.append(f'corresponding condition of pod readiness gate "{gate_type}" does not exist.')
        elif condition.get("status") != "True":
            unready.append(f'the status of pod readiness gate "{gate_type}" is not "True", '
                           f'but {condition.get("status")}')
    if unready:
        return {"type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady", "message": ", ".join(unready)}
    return {"type": "Ready", "status": "True"}


def initialized_condition(
    init_records: Sequence[ContainerRecord], records: Sequence[ContainerRecord], phase: str
) -> dict[str, Any]:
    if phase == "Succeeded":
        return {"type": "Initialized", "status": "True", "reason": "PodCompleted"}
    if any(not isinstance(r.state, Waiting) for r in records):
        return {"type": "Initialized", "status": "True"}  # a regular container has started: initialized before
    incomplete = [r.name for r in init_records
                  if not (isinstance(r.state, Terminated) and r.state.exit_code == 0)]
    if incomplete:
        return {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
                "message": f"containers with incomplete status: {_go_list(incomplete)}"}
    return {"type": "Initialized", "status": "True"}


@dataclass
class PodView:
    """Everything the status of one pod is made of."""

    pod: Mapping[str, Any]
    init_records: Sequence[ContainerRecord]
    records: Sequence[ContainerRecord]
    host_ip: str
    pod_ip: str | None
    start_time: datetime | None
    sandbox_ready: bool
    pod_is_terminal: bool
    reason: str = ""
    message: str = ""


OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


def build_pod_status(
    view: PodView, previous: Mapping[str, Any], moment: datetime
) -> dict[str, Any]:
    """The status to write; `previous` is the last status written (for transition times and terminal phase)."""
    spec = view.pod.get("spec") or {}
    generation = (view.pod.get("metadata") or {}).get("generation")
    phase = pod_phase(spec, view.init_records, view.records, view.pod_is_terminal)
    if previous.get("phase") in ("Succeeded", "Failed"):
        phase = previous["phase"]  # a terminal phase never changes
    if view.pod_is_terminal and phase in ("Pending", "Running"):
        phase = "Failed"  # TerminatePod: a pod whose containers were stopped for good has not succeeded
    reason, message = view.reason, view.message
    if reason:
        phase = "Failed"  # the kubelet evicted the pod (DeadlineExceeded): its sync handlers override the phase

    previous_conditions = {c.get("type", ""): c for c in previous.get("conditions") or []}
    # Readiness gates are conditions other controllers write: read them from the pod as the API has it.
    api_conditions = {c.get("type", ""): c for c in (view.pod.get("status") or {}).get("conditions") or []}
    containers_ready = containers_ready_condition(view.records, phase)
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True" if view.sandbox_ready else "False"},
        initialized_condition(view.init_records, view.records, phase),
        ready_condition(containers_ready, spec.get("readinessGates") or [], api_conditions),
        containers_ready,
    ]
    for condition in conditions:
        # Conditions are merged by type in the strategic merge patch: a reason that no longer holds must be
        # deleted explicitly, as the real kubelet's two-way merge patch does.
        condition.setdefault("reason", None)
        condition.setdefault("message", None)
        earlier = previous_conditions.get(condition["type"])
        same = earlier is not None and earlier.get("status") == condition["status"]
        condition["lastTransitionTime"] = earlier.get("lastTransitionTime") if same and earlier else rfc3339(moment)
        condition["lastProbeTime"] = None
        if generation is not None:
            condition["observedGeneration"] = generation

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": rfc3339(view.start_time) if view.start_time else None,
        "initContainerStatuses": [container_status(r, s) for r, s in
                                  zip(view.init_records, spec.get("initContainers") or [], strict=True)] or None,
        "containerStatuses": [container_status(r, s) for r, s in
                              zip(view.records, spec.get("containers") or [], strict=True)],
        "reason": reason or None,
        "message": message or None,
    }
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def state_from_api(state: Mapping[str, Any] | None) -> State | None:
    """The reverse of the status's `state`/`lastState`: used when a restarted kubelet picks its pods up again."""
    state = state or {}
    if running := state.get("running"):
        return Running(parse_time(running.get("startedAt")) or now())
    if terminated := state.get("terminated"):
        return Terminated(
            exit_code=int(terminated.get("exitCode", 0)), reason=str(terminated.get("reason", "")),
            finished_at=parse_time(terminated.get("finishedAt")) or now(),
            container_id=str(terminated.get("containerID", "")), started_at=parse_time(terminated.get("startedAt")),
            message=str(terminated.get("message", "")), signal=terminated.get("signal"))
    if waiting := state.get("waiting"):
        return Waiting(str(waiting.get("reason", "")), str(waiting.get("message", "")))
    return None


def record_from_api(status: Mapping[str, Any]) -> ContainerRecord:
    last_state = state_from_api(status.get("lastState"))
    return ContainerRecord(
        name=status["name"], image=status.get("image", ""), image_id=status.get("imageID", ""),
        state=state_from_api(status.get("state")) or Waiting("ContainerCreating"),
        container_id=status.get("containerID", ""),
        last_state=last_state if isinstance(last_state, Terminated) else None,
        restart_count=int(status.get("restartCount", 0)),
    )
