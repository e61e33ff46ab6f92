"""Fixtures for scenarios on devcluster: one cluster per test session, one namespace per test."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from demo.stack import CRD_FILE, BlogStack, LocalOperator, create_database, drop_database
from devcluster.cluster import Cluster
from devcluster.config import REPO_ROOT
from tests.e2e.kit import Kubectl, make_stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """devcluster, reused when it already runs; stopped at the end only if this session started it."""
    devcluster = Cluster()
    started_here = not devcluster.running()
    devcluster.up()
    yield devcluster
    if started_here:
        devcluster.down()


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[LocalOperator]:
    """The operator as a local process watching every namespace; its log stays in devcluster's logs."""
    subprocess.run(["kubectl", "apply", "-f", str(REPO_ROOT / CRD_FILE)], env=cluster.tool_env(), check=True,
                   capture_output=True)
    process = LocalOperator(cluster, f"operator-e2e-{uuid.uuid4().hex[:6]}")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def new_stack(request: pytest.FixtureRequest, cluster: Cluster,
              operator: LocalOperator) -> Iterator[Callable[..., BlogStack]]:
    """Builds demo stacks with the given options (drills, release, posts), each in a namespace of its own, with the
    module's operator watching; drops them after the test."""
    made: list[BlogStack] = []
    prefix = request.path.stem.removeprefix("test_")[:8].replace("_", "-")

    def build(**options: Any) -> BlogStack:
        stack = make_stack(cluster, f"{prefix}-{uuid.uuid4().hex[:6]}", **options)
        made.append(stack)
        return stack

    yield build
    for stack in made:
        stack.drop()


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture(scope="session")
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace with its default ServiceAccount; deleted, with everything in it, after the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: core.list_namespaced_service_account(name).items, f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)
    wait_for(lambda: name not in {n.metadata.name for n in core.list_namespace().items},
             f"namespace {name} to be deleted (its pods stopped)", timeout=120)


@pytest.fixture
def database(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A PostgreSQL database of its own for the test; returns its URL. Dropped after the test."""
    name = namespace.replace("-", "_")
    create_database(cluster, name)
    yield cluster.database_url(name)
    drop_database(cluster, name)


@pytest.fixture
def kubectl(cluster: Cluster) -> Kubectl:
    return cluster.kubectl
