"""kube.WatchCache through Kube's reads, over a fake pool: a look reads the cache, a late event never hides a newer
version or the operator's own write, what cannot be ordered is never cached, and a Job's pods are its own."""

from __future__ import annotations

from typing import Any

from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef
from tests.operator.fake_api import FakePool, Request, api_client


class Deployments(FakePool):
    """The API server's one Deployment shop/web, at `version` with 2 replicas; a patch scales it to 0 and moves it on
    by one version."""

    def __init__(self, version: str = "10") -> None:
        super().__init__()
        self.version, self.replicas = version, 2

    def answer(self, request: Request) -> tuple[int, Any]:
        if request.method == "PATCH":
            self.version, self.replicas = str(int(self.version) + 1), 0
        return 200, deployment(self.version, self.replicas)


def deployment(version: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": version},
            "spec": {"replicas": replicas}}


def replicas(kube: Kube) -> int:
    found = kube.read_deployment("shop", "web")
    assert found is not None
    return int(found["spec"]["replicas"])


def test_a_look_after_the_first_reads_the_cache() -> None:
    pool = Deployments()
    kube = Kube(api_client=api_client(pool))
    assert (replicas(kube), replicas(kube)) == (2, 2)
    assert len(pool.requests) == 1


def test_an_event_replaces_what_is_cached_and_a_late_one_does_not() -> None:
    kube = Kube(api_client=api_client(Deployments()))
    kube.deployments.saw("shop", "web", deployment("12", replicas=3))
    kube.deployments.saw("shop", "web", deployment("11", replicas=1))  # delivered late: older than 12
    assert replicas(kube) == 3
    # Compared as numbers, not as text ("9" > "12" as text).
    kube.deployments.saw("shop", "web", deployment("9", replicas=5))
    assert replicas(kube) == 3


def test_after_the_operators_patch_a_look_reads_the_api_until_an_event_as_new_arrives() -> None:
    pool = Deployments()
    kube = Kube(api_client=api_client(pool))
    kube.deployments.saw("shop", "web", deployment("10", replicas=2))
    kube.scale_deployment("shop", "web", 0, {})  # the Scale answer: version 11
    kube.deployments.saw("shop", "web", deployment("10", replicas=2))  # an event from before the patch
    assert replicas(kube) == 0 and [r.method for r in pool.requests] == ["PATCH", "GET"]
    kube.deployments.saw("shop", "web", deployment("13", replicas=4))
    assert replicas(kube) == 4 and len(pool.requests) == 2


def test_a_version_that_is_not_a_number_is_never_cached() -> None:
    pool = Deployments(version="a7")
    kube = Kube(api_client=api_client(pool))
    replicas(kube)
    kube.deployments.saw("shop", "web", deployment("b8", replicas=1))
    assert replicas(kube) == 2 and len(pool.requests) == 2


def test_a_deleted_deployment_and_a_namespace_without_runs_are_read_again() -> None:
    pool = Deployments()
    kube = Kube(api_client=api_client(pool))
    replicas(kube)
    kube.deployments.gone("shop", "web")
    replicas(kube)
    kube.deployments.forget_namespace("shop")
    replicas(kube)
    assert len(pool.requests) == 3


class Echo(FakePool):
    """Answers every write with the object written at version 20 (a Job marked for deletion on a DELETE), and a
    read or a list with version 30."""

    def answer(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"items": [], "metadata": {"name": "read", "resourceVersion": "30"}}
        if request.method == "DELETE":
            return 200, {"kind": "Job", "metadata": {"name": "run-migrate", "resourceVersion": "20",
                                                     "deletionTimestamp": "2026-12-03T06:00:00Z"}}
        body = request.body or {}
        return 200, {**body, "metadata": {**(body.get("metadata") or {}), "resourceVersion": "20"}}


def test_the_runs_status_patch_and_a_created_job_are_read_back_from_their_answers() -> None:
    pool = Echo()
    kube = Kube(api_client=api_client(pool))
    kube.patch_run_status(RunRef("shop", "run", "uid-1"), {"phase": "BackingUp"})
    kube.create_job({"metadata": {"name": "run-backup", "namespace": "shop"}, "spec": {}})
    run, job = kube.read_run("shop", "run"), kube.read_job("shop", "run-backup")
    assert run is not None and run["status"] == {"phase": "BackingUp"}
    assert job is not None and job["metadata"]["name"] == "run-backup"
    assert [r.method for r in pool.requests] == ["PATCH", "POST"]
    kube.runs.saw("shop", "run", {"metadata": {"resourceVersion": "19"}, "status": {"phase": "ScalingDown"}})
    run = kube.read_run("shop", "run")
    assert run is not None and run["status"] == {"phase": "BackingUp"}, "an event from before the patch"


def test_a_deleted_job_is_read_as_marked_for_deletion_not_as_the_last_event_showed_it() -> None:
    pool = Echo()
    kube = Kube(api_client=api_client(pool))
    kube.jobs.saw("shop", "run-migrate", {"metadata": {"name": "run-migrate", "resourceVersion": "12"}})
    kube.delete_job("shop", "run-migrate")
    job = kube.read_job("shop", "run-migrate")
    assert job is not None and "deletionTimestamp" in job["metadata"]
    assert [r.method for r in pool.requests] == ["DELETE"]


def job_pod(name: str, job_uid: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version, "ownerReferences": [{"uid": job_uid}]},
            "status": {"phase": "Running"}}


def test_a_jobs_pods_are_those_it_owns_and_none_cached_lists_them() -> None:
    pool = Echo()
    kube = Kube(api_client=api_client(pool))
    job = {"metadata": {"name": "run-migrate", "uid": "job-2"}}
    kube.pods.saw("shop", "run-migrate-old", job_pod("run-migrate-old", "job-1", "5"))  # the Job's namesake before
    assert kube.job_pods("shop", job) == []
    assert pool.requests[-1].query == {"labelSelector": "batch.kubernetes.io/controller-uid=job-2"}
    kube.pods.saw("shop", "run-migrate-abc", job_pod("run-migrate-abc", "job-2", "6"))
    assert [p["metadata"]["name"] for p in kube.job_pods("shop", job)] == ["run-migrate-abc"]
    assert len(pool.requests) == 1
    kube.forget_namespace("shop")
    kube.job_pods("shop", job)
    assert len(pool.requests) == 2
