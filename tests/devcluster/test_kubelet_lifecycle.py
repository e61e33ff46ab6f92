"""The pod worker's decisions without processes: sync steps, wake-ups, starts, restarts, probes, logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devcluster.kubelet.lifecycle import (
    RESTARTED_MESSAGE,
    STATUS_UNKNOWN_MESSAGE,
    Container,
    LogLookupError,
    PodLifecycle,
    ProbeVerdict,
    SyncStep,
    containers_to_start,
    next_wake,
    pod_ended,
    sync_step,
)
from devcluster.kubelet.status import Running, Terminated, Waiting

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POD = "web-1_blog(uid-1)"


@dataclass
class FakeProcess:
    """What a Container reads of its process: when it started and its id."""

    started_at: datetime = T0
    container_id: str = "devcluster://7"


def container(name: str = "app", init: bool = False, **spec: Any) -> Container:
    return Container.of({"name": name, "image": "busybox", **spec}, init, pod_has_init_containers=init)


def exited(code: int, started: datetime = T0) -> Terminated:
    return Terminated(exit_code=code, reason="Completed" if code == 0 else "Error",
                      finished_at=started + timedelta(seconds=1), container_id="devcluster://7", started_at=started)


def running(c: Container) -> Container:
    c.started(FakeProcess())  # type: ignore[arg-type]
    return c


def finished(c: Container, code: int) -> Container:
    running(c).detach()
    c.ended(exited(code))
    return c


# --- the pod ------------------------------------------------------------------------------------------------


def test_lifecycle_stages_are_ordered_so_a_pod_only_moves_forward() -> None:
    assert list(PodLifecycle) == sorted(PodLifecycle)
    assert max(PodLifecycle.TERMINAL, PodLifecycle.STOPPING) is PodLifecycle.TERMINAL


def test_the_sandbox_is_ready_from_set_up_until_the_pod_is_terminal() -> None:
    assert [stage.name for stage in PodLifecycle if stage.sandbox_ready] == ["SANDBOXED", "ACTIVE", "STOPPING"]


@pytest.mark.parametrize(("lifecycle", "removed", "deleting", "deadline_passed", "step"), [
    (PodLifecycle.ACTIVE, True, True, True, SyncStep.FORGET),  # gone from the API wins over everything
    (PodLifecycle.DELETED, True, True, False, SyncStep.FORGET),
    (PodLifecycle.ACTIVE, False, True, True, SyncStep.DELETE),  # deletion wins over the deadline
    (PodLifecycle.TERMINAL, False, True, False, SyncStep.DELETE),  # a finished pod still gets its final DELETE
    (PodLifecycle.DELETED, False, True, False, SyncStep.WAIT),
    (PodLifecycle.TERMINAL, False, False, True, SyncStep.WAIT),
    (PodLifecycle.ACTIVE, False, False, True, SyncStep.DEADLINE),
    (PodLifecycle.NEW, False, False, True, SyncStep.DEADLINE),
    (PodLifecycle.STOPPING, False, False, False, SyncStep.DEADLINE),  # the deadline's stop goes on
    (PodLifecycle.NEW, False, False, False, SyncStep.PROGRESS),
    (PodLifecycle.ACTIVE, False, False, False, SyncStep.PROGRESS),
])
def test_sync_step(lifecycle: PodLifecycle, removed: bool, deleting: bool, deadline_passed: bool,
                   step: SyncStep) -> None:
    assert sync_step(lifecycle, removed, deleting, deadline_passed) is step


def test_an_active_pod_wakes_for_the_earliest_of_retries_back_offs_refresh_and_deadline() -> None:
    backing_off, retrying = container("a"), container("b")
    backing_off.restart_at, retrying.retry_at = 50.0, 40.0
    assert next_wake(PodLifecycle.ACTIVE, [backing_off, retrying], None, 60.0, 70.0) == 40.0
    assert next_wake(PodLifecycle.ACTIVE, [backing_off, retrying], 30.0, 60.0, 70.0) == 30.0
    assert next_wake(PodLifecycle.ACTIVE, [container()], None, 60.0, 20.0) == 20.0
    assert next_wake(PodLifecycle.ACTIVE, [container()], None, 60.0, None) == 60.0


def test_a_pod_without_a_sandbox_has_no_volumes_to_refresh() -> None:
    assert next_wake(PodLifecycle.NEW, [container()], None, 0.0, None) is None


@pytest.mark.parametrize("lifecycle", [PodLifecycle.STOPPING, PodLifecycle.TERMINAL, PodLifecycle.DELETED])
def test_a_pod_that_starts_nothing_more_wakes_only_to_retry_its_status(lifecycle: PodLifecycle) -> None:
    backing_off = container()
    backing_off.restart_at = 1.0
    assert next_wake(lifecycle, [backing_off], None, 2.0, 3.0) is None
    assert next_wake(lifecycle, [backing_off], 4.0, 2.0, 3.0) == 4.0


# --- which containers start ---------------------------------------------------------------------------------


def test_init_containers_start_one_at_a_time_in_order_before_the_others() -> None:
    first, second, app = container("first", init=True), container("second", init=True), container("app")
    pod = [first, second, app]
    assert containers_to_start("Always", pod) == [first]
    running(first)
    assert containers_to_start("Always", pod) == []
    finished(first, 0)
    assert containers_to_start("Always", pod) == [second]
    finished(second, 0)
    assert containers_to_start("Always", pod) == [app]


@pytest.mark.parametrize(("policy", "due"), [("Always", True), ("OnFailure", True), ("Never", False)])
def test_a_failed_init_container_runs_again_unless_never(policy: str, due: bool) -> None:
    init, app = container("init", init=True), container("app")
    finished(init, 1)
    assert containers_to_start(policy, [init, app]) == ([init] if due else [])


@pytest.mark.parametrize(("policy", "code", "due"), [
    ("Always", 0, True), ("Always", 1, True),
    ("OnFailure", 0, False), ("OnFailure", 1, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_a_regular_container_that_ended_starts_again_by_restart_policy(policy: str, code: int, due: bool) -> None:
    ended, waiting, started = finished(container("ended"), code), container("waiting"), running(container("up"))
    assert containers_to_start(policy, [ended, waiting, started]) == ([ended, waiting] if due else [waiting])


def test_the_pod_ends_when_nothing_runs_and_nothing_will() -> None:
    app, sidecar = finished(container("app"), 0), running(container("sidecar"))
    assert not pod_ended({"restartPolicy": "Never"}, [app, sidecar])
    finished(sidecar, 1)
    assert pod_ended({"restartPolicy": "Never"}, [app, sidecar])
    assert not pod_ended({"restartPolicy": "Always"}, [app, sidecar])


# --- one container ------------------------------------------------------------------------------------------


def test_a_container_starts_only_once_its_back_off_and_retry_delay_ran_out() -> None:
    c = container()
    assert c.start_due(100.0)
    c.restart_at = 110.0
    assert not c.start_due(105.0) and c.start_due(110.0)
    c.restart_at, c.retry_at = None, 120.0
    assert not c.start_due(115.0) and c.start_due(120.0)


def test_each_start_is_a_new_instance_that_counts_as_a_restart_and_keeps_the_last_one() -> None:
    c = container()
    assert (c.record.state, c.instance()) == (Waiting("ContainerCreating"), 0)
    running(c)
    assert (c.record.state, c.record.restart_count, c.record.container_id) == (Running(T0), 0, "devcluster://7")
    c.detach()
    c.ended(exited(1))
    assert c.instance() == 1
    running(c)
    assert (c.record.restart_count, c.record.last_state, c.record.state) == (1, exited(1), Running(T0))


def test_a_quick_crash_restarts_at_once_then_waits_in_crash_loop_back_off() -> None:
    c = finished(container(), 1)
    assert c.back_off(ran_seconds=1, clock=100.0, pod_label=POD) == 0
    assert (c.restart_at, c.record.state, c.record.last_state) == (100.0, exited(1), None)
    running(c).detach()
    c.ended(exited(1))
    assert c.back_off(ran_seconds=1, clock=200.0, pod_label=POD) == 10
    assert c.restart_at == 210.0
    assert c.record.state == Waiting("CrashLoopBackOff", f"back-off 10s restarting failed container=app pod={POD}")
    assert c.record.last_state == exited(1)


def test_a_start_that_cannot_be_configured_is_retried_with_a_doubling_delay() -> None:
    c = container()
    assert c.start_failed("CreateContainerConfigError", 'secret "db" not found', clock=10.0)
    assert (c.record.state, c.retry_at) == (Waiting("CreateContainerConfigError", 'secret "db" not found'), 10.5)
    assert not c.start_failed("CreateContainerConfigError", 'secret "db" not found', clock=11.0)  # no news
    assert c.retry_at == 12.0
    for clock in (20.0, 30.0, 40.0, 50.0):
        c.start_failed("CreateContainerConfigError", 'secret "db" not found', clock)
    assert c.retry_at == 55.0  # at most 5 s
    running(c)
    assert c.retry_at is None and c.retry_delay == 0.5


def test_a_start_failure_after_a_run_keeps_that_run_as_last_state() -> None:
    c = finished(container(), 1)
    assert c.record.last_state is None
    c.start_failed("CreateContainerError", "boom", clock=0.0)
    assert c.record.last_state == exited(1)


def test_a_missing_image_is_news_once() -> None:
    c = container()
    assert c.image_missing("not in the image map")
    assert not c.image_missing("not in the image map")
    assert c.record.state == Waiting("ErrImagePull", "not in the image map")


def test_termination_marks_every_container_without_a_final_state_unknown() -> None:
    init_never_ran, ended, up = container("init", init=True), finished(container("ended"), 0), running(container())
    for c in (init_never_ran, ended, up):
        c.mark_unknown(T0)
    assert isinstance(init_never_ran.record.state, Waiting)
    assert ended.record.state == exited(0)
    assert up.record.state == Terminated(exit_code=137, reason="ContainerStatusUnknown", finished_at=T0,
                                         container_id="", message=STATUS_UNKNOWN_MESSAGE)


def test_a_restarted_kubelet_ends_what_was_running_as_an_error() -> None:
    c = container()
    c.restore({"name": "app", "restartCount": 2, "containerID": "devcluster://9",
               "state": {"running": {"startedAt": "2026-01-02T03:04:05Z"}}}, moment=T0 + timedelta(seconds=5))
    assert c.record.state == Terminated(exit_code=137, reason="Error", finished_at=T0 + timedelta(seconds=5),
                                        container_id="devcluster://9", started_at=T0, message=RESTARTED_MESSAGE)
    assert (c.record.restart_count, c.has_run, c.instance()) == (2, True, 3)


def test_a_restored_container_that_never_ran_still_waits() -> None:
    c = container()
    c.restore({"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}, moment=T0)
    assert not c.has_run and c.instance() == 0


# --- probes -------------------------------------------------------------------------------------------------


def test_the_startup_probe_holds_readiness_and_liveness_back() -> None:
    c = running(container(startupProbe={"exec": {"command": ["true"]}}, readinessProbe={"httpGet": {"port": 80}}))
    assert c.first_probes() == ("startup",)
    assert c.probed("startup", ok=False) is ProbeVerdict.RESTART
    assert c.probed("startup", ok=True) is ProbeVerdict.START_PROBES
    assert c.probed("readiness", ok=True) is ProbeVerdict.NOTHING
    assert c.probed("liveness", ok=False) is ProbeVerdict.RESTART
    assert running(container()).first_probes() == ("readiness", "liveness")


def test_started_and_ready_follow_the_probes() -> None:
    c = running(container(startupProbe={}, readinessProbe={}))
    c.report_probes()
    assert (c.record.started, c.record.ready) == (False, False)
    c.probed("startup", ok=True)
    c.report_probes()
    assert (c.record.started, c.record.ready) == (True, False)
    c.probed("readiness", ok=True)
    c.report_probes()
    assert (c.record.started, c.record.ready) == (True, True)


def test_a_container_without_probes_is_ready_once_it_runs() -> None:
    c = running(container())
    c.report_probes()
    assert (c.record.started, c.record.ready) == (True, True)


def test_a_probe_may_bring_its_own_grace_period() -> None:
    c = container(livenessProbe={"terminationGracePeriodSeconds": 3}, readinessProbe={})
    assert (c.probe_grace("liveness"), c.probe_grace("readiness"), c.probe_grace("startup")) == (3.0, None, None)


# --- logs ---------------------------------------------------------------------------------------------------


def test_logs_of_the_current_and_the_previous_instance() -> None:
    c = finished(container(), 1)
    assert c.log_instance(previous=False, pod_name="web-1") == 0
    c.back_off(ran_seconds=1, clock=0.0, pod_label=POD)
    running(c)  # instance 1
    assert (c.log_instance(False, "web-1"), c.log_instance(True, "web-1")) == (1, 0)
    c.detach()
    c.ended(exited(1))
    c.back_off(ran_seconds=1, clock=0.0, pod_label=POD)  # waiting in back-off after instance 1
    assert (c.log_instance(False, "web-1"), c.log_instance(True, "web-1")) == (1, 1)


def test_logs_of_a_container_that_has_not_run() -> None:
    c = container()
    with pytest.raises(LogLookupError, match="previous terminated container \"app\" in pod \"web-1\" not found"):
        c.log_instance(previous=True, pod_name="web-1")
    c.image_missing("unknown image")
    with pytest.raises(LogLookupError, match="is waiting to start: image can't be pulled") as error:
        c.log_instance(previous=False, pod_name="web-1")
    assert error.value.status == 400
