"""kube.DeploymentCache through Kube.read_deployment, over a fake pool: a look reads the cache, a late event never
hides a newer version or the operator's own patch, and what cannot be ordered is never cached."""

from __future__ import annotations

from typing import Any

from django_migration_operator.kube import Kube
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
    kube.scale_deployment("shop", "web", 0, {})  # the API answers version 11
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
