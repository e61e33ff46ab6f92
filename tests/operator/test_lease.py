"""The one-run-per-database Lease against a fake apiserver, under the client's real transport, that checks
resourceVersions as the real one does: kube.py's calls, and lease.py's judgement of who holds it."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable
from typing import Any

import pytest

from django_migration_operator import lease
from django_migration_operator.kube import Kube, LeaseRecord
from django_migration_operator.resource import GROUP, PLURAL, VERSION, RunRef
from tests.operator.fake_api import FakePool, Request, api_client

DATABASE = "db.internal:5432/shop"
FINISHED = RunRef(namespace="shop", name="release-42", uid="uid-42")  # ended, but its Lease is still there
RUN_A = RunRef(namespace="shop", name="release-43", uid="uid-43")
RUN_B = RunRef(namespace="blog", name="release-7", uid="uid-7")


class FakeApiServer(FakePool):
    """The Lease calls over a dict, checking resourceVersions as the apiserver does (404 when missing, 409 on a name
    taken or a stale version); and the runs' reads: each run's phase, 404 when missing, 403 in a namespace not
    granted."""

    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1)
        self.phases: dict[RunRef, str] = {}
        self.forbidden: set[str] = set()
        self.on_read: Callable[[], None] = lambda: None  # what happens elsewhere while a run is read

    def answer(self, request: Request) -> tuple[int, Any]:
        match request.path.strip("/").split("/"):
            case ["apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases", *name]:
                return self._lease(request, namespace, name[0] if name else None)
            case ["apis", group, version, "namespaces", namespace, plural, name] if (group, version, plural) == (
                    GROUP, VERSION, PLURAL) and request.method == "GET":
                return self._run(namespace, name)
        raise AssertionError(f"unexpected request {request}")

    def _lease(self, request: Request, namespace: str, name: str | None) -> tuple[int, Any]:
        if name is None and request.method == "GET":
            wanted = dict(term.split("=", 1) for term in request.query.get("labelSelector", "").split(",") if term)
            return 200, {"items": [copy.deepcopy(lease) for (lease_namespace, _), lease in self.leases.items()
                                   if lease_namespace == namespace
                                   and wanted.items() <= lease["metadata"].get("labels", {}).items()]}
        if name is None and request.method == "POST":
            if (namespace, request.body["metadata"]["name"]) in self.leases:
                return 409, {"reason": "AlreadyExists"}
            return 201, self._store(namespace, request.body)
        current = self.leases.get((namespace, str(name)))
        if current is None:
            return 404, {"reason": "NotFound"}
        # As the apiserver: a resourceVersion in the body (or a delete's preconditions) must be the current one.
        wanted_version = (request.body or {}).get("metadata", {}).get("resourceVersion") if request.method == "PUT" \
            else ((request.body or {}).get("preconditions") or {}).get("resourceVersion")
        if request.method in ("PUT", "DELETE") and wanted_version and \
                wanted_version != current["metadata"]["resourceVersion"]:
            return 409, {"reason": "Conflict"}
        if request.method == "PUT":
            return 200, self._store(namespace, request.body)
        if request.method == "DELETE":
            del self.leases[namespace, str(name)]
            return 200, {"kind": "Status", "status": "Success"}
        return 200, copy.deepcopy(current)

    def _store(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        stored = copy.deepcopy(body)
        stored["metadata"]["namespace"] = namespace
        stored["metadata"]["resourceVersion"] = str(next(self._versions))  # every write is a new version
        self.leases[namespace, stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def _run(self, namespace: str, name: str) -> tuple[int, Any]:
        self.on_read()
        if namespace in self.forbidden:
            return 403, {"reason": "Forbidden"}
        for run, phase in self.phases.items():
            if (run.namespace, run.name) == (namespace, name):
                return 200, {"metadata": {"name": name, "namespace": namespace}, "status": {"phase": phase}}
        return 404, {"reason": "NotFound"}


@pytest.fixture
def kube() -> Kube:
    return Kube(lease_namespace="ops", api_client=api_client(FakeApiServer()))  # an explicit client: no config


def runs(kube: Kube) -> FakeApiServer:
    server = kube.api_client.rest_client.pool_manager
    assert isinstance(server, FakeApiServer)
    return server


def held(kube: Kube) -> LeaseRecord:
    lease = kube.lease_holder(DATABASE)
    assert lease is not None
    return lease


def test_of_two_runs_creating_the_lease_one_wins(kube: Kube) -> None:
    assert kube.lease_holder(DATABASE) is None
    assert kube.acquire_lease(RUN_A, DATABASE, None)
    assert not kube.acquire_lease(RUN_B, DATABASE, None), "the name is taken: 409"
    assert held(kube).holder == RUN_A.key


def test_a_take_over_at_the_version_judged_stale_succeeds(kube: Kube) -> None:
    kube.acquire_lease(FINISHED, DATABASE, None)
    stale = held(kube)
    assert stale.holder == FINISHED.key
    assert kube.acquire_lease(RUN_A, DATABASE, stale.version)
    now = held(kube)
    assert now.holder == RUN_A.key and now.version != stale.version


def test_a_take_over_racing_another_one_cannot_replace_the_winner(kube: Kube) -> None:
    kube.acquire_lease(FINISHED, DATABASE, None)
    # Both runs read the Lease of the finished run, and both judge it stale at the same version.
    judged_by_a, judged_by_b = held(kube), held(kube)
    assert judged_by_a == judged_by_b and judged_by_a.holder == FINISHED.key
    assert kube.acquire_lease(RUN_B, DATABASE, judged_by_b.version), "B takes it over first"
    assert not kube.acquire_lease(RUN_A, DATABASE, judged_by_a.version), "A's judgement is of an older version: 409"
    assert held(kube).holder == RUN_B.key, "B, which goes on, keeps it"


def test_a_take_over_of_a_lease_deleted_meanwhile_fails_and_a_create_then_wins(kube: Kube) -> None:
    kube.acquire_lease(FINISHED, DATABASE, None)
    stale = held(kube)
    kube.release_lease(FINISHED)
    assert not kube.acquire_lease(RUN_A, DATABASE, stale.version), "gone: 404"
    assert kube.lease_holder(DATABASE) is None
    assert kube.acquire_lease(RUN_A, DATABASE, None)
    assert held(kube).holder == RUN_A.key


def test_a_run_whose_lease_was_taken_over_does_not_release_the_new_holders(kube: Kube) -> None:
    kube.acquire_lease(FINISHED, DATABASE, None)
    kube.acquire_lease(RUN_B, DATABASE, held(kube).version)
    kube.release_lease(FINISHED)
    assert held(kube).holder == RUN_B.key
    kube.release_lease(RUN_B)
    assert kube.lease_holder(DATABASE) is None


# --- lease.py: who holds it, and taking over a stale one ---------------------------------------------------------


def test_a_lease_of_a_run_that_ended_is_stale_and_taken_over(kube: Kube) -> None:
    runs(kube).phases[FINISHED] = "Succeeded"
    kube.acquire_lease(FINISHED, DATABASE, None)
    assert lease.holders(kube, RUN_A, DATABASE) == (None, False)
    lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert lease.holders(kube, RUN_A, DATABASE) == (None, True)


def test_a_lease_of_a_deleted_run_is_taken_over(kube: Kube) -> None:
    kube.acquire_lease(FINISHED, DATABASE, None)  # no such run any more
    lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert held(kube).holder == RUN_A.key


def test_a_live_holder_keeps_the_lease_and_the_other_run_is_told_who_it_is(kube: Kube) -> None:
    runs(kube).phases[RUN_B] = "Migrating"
    kube.acquire_lease(RUN_B, DATABASE, None)
    version = held(kube).version
    assert lease.holders(kube, RUN_A, DATABASE) == (RUN_B.key, False)
    assert lease.holders(kube, RUN_B, DATABASE) == (None, True)
    lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert held(kube) == LeaseRecord(RUN_B.key, version), "not even rewritten"


def test_a_holder_in_a_namespace_this_operator_may_not_read_counts_as_live(kube: Kube) -> None:
    runs(kube).forbidden.add(RUN_B.namespace)
    kube.acquire_lease(RUN_B, DATABASE, None)
    assert lease.holders(kube, RUN_A, DATABASE) == (RUN_B.key, False)
    lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert held(kube).holder == RUN_B.key


def test_a_free_database_has_no_holder_and_its_lease_is_created(kube: Kube) -> None:
    assert lease.holders(kube, RUN_A, DATABASE) == (None, False)
    lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert lease.holders(kube, RUN_A, DATABASE) == (None, True)


def test_a_take_over_that_loses_the_race_keeps_the_winner_and_says_so(kube: Kube,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    runs(kube).phases[FINISHED] = "Failed"
    kube.acquire_lease(FINISHED, DATABASE, None)

    def b_takes_it_over() -> None:  # while RUN_A reads the finished run, RUN_B judges it stale too and wins
        runs(kube).on_read = lambda: None
        lease.take(kube, RUN_B, DATABASE, logging.getLogger("test"))

    runs(kube).on_read = b_takes_it_over
    with caplog.at_level(logging.INFO):
        lease.take(kube, RUN_A, DATABASE, logging.getLogger("test"))
    assert held(kube).holder == RUN_B.key
    assert "another run won it" in caplog.text
