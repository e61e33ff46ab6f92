"""observe.job_state over pods as the API answers them (JSON, camelCase, fields absent rather than null): a Job's end
by its pod's, the log of each container that ran, and why a pod has not started."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException

from django_migration_operator import observe
from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef
from django_migration_operator.world import EndingPod, JobState

CREATED = "2026-12-02T06:00:00Z"
RUN = RunRef("shop", "run", "uid-of-this-run")


class JobKube:
    """One Job, its pods, and the logs of the containers that have one."""

    def __init__(self, pods: list[dict[str, Any]], conditions: list[dict[str, Any]] | None = None,
                 logs: dict[str, str] | None = None) -> None:
        self.pods = pods
        self.job: dict[str, Any] = {
            "metadata": {"name": "run-migrate", "creationTimestamp": CREATED,
                         "ownerReferences": [RUN.owner_reference()]},
            "status": {"conditions": conditions} if conditions else {}}
        self.logs = logs or {}

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.job

    def job_pods(self, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        assert job is self.job
        return self.pods

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        if (pod, container) not in [tuple(key.split("/")) for key in self.logs]:
            raise ApiException(status=400, reason="Bad Request")
        return self.logs[f"{pod}/{container}"]


def pod(name: str, phase: str, created: str = CREATED, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [{"name": "django"}]}, "status": {"phase": phase, **status}}


def state(kube: JobKube) -> JobState:
    found = observe.job_state(cast(Kube, kube), RUN, "run-migrate")
    assert found is not None
    return found


def test_a_job_ends_with_its_pod_and_reads_the_latest_pods_logs_init_containers_first() -> None:
    ran = {"name": "copy", "state": {"terminated": {"exitCode": 0}}}
    never = {"name": "wait", "state": {"waiting": {"reason": "PodInitializing"}}}
    deleted = pod("old", "Failed", "2026-12-02T05:59:00Z")
    deleted["metadata"]["deletionTimestamp"] = CREATED  # stopped, not ended by itself: not the Job's end
    kube = JobKube([deleted, pod("new", "Succeeded", initContainerStatuses=[ran, never])],
                   logs={"new/copy": "copied\n", "new/django": "migrated\n", "old/django": "old\n"})
    found = state(kube)
    assert (found.finished, found.reason, found.log) == ("Complete", None, "copied\nmigrated")
    assert found.created == datetime(2026, 12, 2, 6, 0, tzinfo=UTC) and found.not_started is None


@pytest.mark.parametrize(("owners", "said"), [
    ([RunRef("shop", "run", "uid-of-an-earlier-run").owner_reference()],
     "belongs to an earlier DjangoMigration of this name (uid uid-of-an-earlier-run)"),
    ([], "no DjangoMigration owns it"),
])
def test_a_job_of_an_earlier_run_of_the_same_name_is_never_taken_for_this_runs(owners: list[dict[str, Any]],
                                                                               said: str) -> None:
    # Its pod succeeded: its plan or backup marker is another release's.
    kube = JobKube([pod("old", "Succeeded")], logs={"old/django": "another release's output\n"})
    kube.job["metadata"]["ownerReferences"] = owners
    with pytest.raises(observe.LeftoverJob, match=re.escape(said)):
        observe.job_state(cast(Kube, kube), RUN, "run-migrate")


def test_the_jobs_condition_gives_the_end_and_its_reason() -> None:
    kube = JobKube([], conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    found = state(kube)
    assert (found.finished, found.reason, found.log) == ("Failed", "DeadlineExceeded", "")


def test_a_pod_being_deleted_has_not_ended_the_job_by_itself() -> None:
    stopped = pod("x", "Failed")
    stopped["metadata"]["deletionTimestamp"] = CREATED
    found = state(JobKube([stopped]))
    assert found.finished is None and found.not_started == "the Job controller has created no pod"


def test_an_unschedulable_pod_says_why() -> None:
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available"}
    found = state(JobKube([pod("x", "Pending", conditions=[condition])]))
    assert found.not_started == "Unschedulable: 0/1 nodes are available"


def test_a_container_waiting_for_its_image_says_why() -> None:
    waiting = {"name": "django", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
    assert state(JobKube([pod("x", "Pending", containerStatuses=[waiting])])).not_started == \
        "ImagePullBackOff: no such image"


def test_a_started_pod_is_not_waited_for_and_a_failed_one_without_log_says_why() -> None:
    running = {"name": "django", "state": {"running": {"startedAt": CREATED}}}
    assert state(JobKube([pod("x", "Pending", containerStatuses=[running])])).not_started is None
    crashed = {"name": "django", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                       "message": "secret not found"}}}
    found = state(JobKube([pod("x", "Failed", containerStatuses=[crashed])]))
    assert (found.finished, found.log) == ("Failed", "CreateContainerConfigError: secret not found")


def terminated(message: str) -> list[dict[str, Any]]:
    return [{"name": "django", "state": {"terminated": {"exitCode": 0, "message": message}}}]


def test_a_succeeded_pods_termination_message_is_its_output_and_no_log_is_read() -> None:
    # No logs: a read would fail.
    kube = JobKube([pod("x", "Succeeded", containerStatuses=terminated("DJANGOOPS_BACKUP {}\n"))])
    assert state(kube).log == "DJANGOOPS_BACKUP {}\n"


def test_a_failed_pods_termination_message_is_only_a_tail_and_its_log_is_read() -> None:
    failed = pod("x", "Failed", containerStatuses=terminated("the last 80 lines"))
    assert state(JobKube([failed], logs={"x/django": "the whole log\n"})).log == "the whole log"
    assert state(JobKube([pod("y", "Succeeded", containerStatuses=terminated(""))],
                         logs={"y/django": "migrated\n"})).log == "migrated"


class AppKube:
    """The app's Deployment, scaled to 0, and its pods in their graceful stop."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "generation": 2},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                         "template": {"spec": {"containers": [{"name": "django", "image": "shop:2"}]}}},
                "status": {"observedGeneration": 2}}

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert selector == "app=web"
        return self.pods


def test_the_ready_pods_of_an_app_being_stopped_are_counted_as_serving_terminating_ones_included() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    in_pre_stop = pod("a", "Running", conditions=ready)
    in_pre_stop["metadata"]["deletionTimestamp"] = CREATED
    exited = pod("b", "Running", conditions=[{"type": "Ready", "status": "False"}])
    exited["metadata"]["deletionTimestamp"] = CREATED
    found = observe.deployment_state(cast(Kube, AppKube([in_pre_stop, exited])), "shop", "web", count_pods=True)
    assert found is not None and (found.pods, found.serving) == (2, 1)
    found = observe.deployment_state(cast(Kube, AppKube([exited])), "shop", "web", count_pods=True)
    assert found is not None and (found.pods, found.serving) == (1, 0)
    found = observe.deployment_state(cast(Kube, AppKube([])), "shop", "web", count_pods=False)
    assert found is not None and (found.pods, found.serving) == (None, None), "not counted: not listed"


def test_pods_in_a_terminal_phase_are_not_counted_and_deleted_ones_carry_their_deadline() -> None:
    # An evicted pod stays until garbage-collected, a stopped one held by a finalizer until it is removed: neither
    # runs a container, and waiting for them would never end.
    evicted = pod("evicted", "Failed", reason="Evicted")
    held = pod("held", "Succeeded")
    held["metadata"]["deletionTimestamp"] = CREATED
    lost = pod("lost", "Running", conditions=[{"type": "Ready", "status": "True"}])
    lost["metadata"]["deletionTimestamp"] = "2026-11-24T12:00:30Z"
    found = observe.deployment_state(cast(Kube, AppKube([evicted, held, lost])), "shop", "web", count_pods=True)
    assert found is not None and (found.pods, found.serving) == (1, 1)
    assert found.ending == (EndingPod("lost", datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)),)
