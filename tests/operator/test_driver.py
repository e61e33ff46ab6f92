"""The driver's loop against a fake Kube: what it does when the API, the rights or the database fail for a while."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from django_migration_operator import database, driver, messages, observe
from django_migration_operator.admission import Admission
from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef
from django_migration_operator.status import Reason

RUN = RunRef("shop", "blog-release-2", "uid-1")
FORBIDDEN = ('leases.coordination.k8s.io "djangoops-db-x" is forbidden: User "system:serviceaccount:ops:operator" '
             'cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "ops"')


def forbidden() -> ApiException:
    error = ApiException(status=403, reason="Forbidden")
    error.body = json.dumps({"kind": "Status", "message": FORBIDDEN, "reason": "Forbidden", "code": 403})
    return error


class FlakyKube:
    """Fails the first reads of the run with the given errors, then finds the run ended."""

    def __init__(self, *errors: Exception, events_fail: bool = False) -> None:
        self.errors = list(errors)
        self.events: list[tuple[str, str, bool]] = []
        self.events_fail = events_fail
        self.reads = 0

    def forget_namespace(self, namespace: str) -> None:
        pass

    def read_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"metadata": {"name": name}, "spec": {}, "status": {"phase": "Succeeded"}}

    def post_event(self, run: RunRef, reason: str, message: str, warning: bool) -> None:
        if self.events_fail:
            raise urllib3.exceptions.MaxRetryError(None, "/api/v1/events")  # type: ignore[arg-type]
        self.events.append((reason, message, warning))


def drive(kube: FlakyKube) -> None:
    asyncio.run(asyncio.wait_for(driver.drive(cast(Kube, kube), driver.Wakeups(), Admission(0), RUN,
                                              logging.getLogger("test"), lambda: None), timeout=10))


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver.Outage, "FIRST_PAUSE_SECONDS", 0.01)
    monkeypatch.setattr(driver.Outage, "MAX_PAUSE_SECONDS", 0.02)


def test_rights_taken_away_are_said_once_and_the_run_goes_on_when_they_are_back(
        caplog: pytest.LogCaptureFixture) -> None:
    kube = FlakyKube(forbidden(), forbidden(), forbidden())
    with caplog.at_level(logging.INFO):
        drive(kube)
    assert kube.reads == 4  # three refused looks, then the one that found the run
    assert [(reason, warning) for reason, _, warning in kube.events] == [("Forbidden", True)]
    assert kube.events[0][1] == messages.forbidden(FORBIDDEN)  # the API's own words: who may not do what, where
    assert sum("Forbidden" in record.getMessage() and record.levelno == logging.WARNING
               for record in caplog.records) == 1
    assert any(record.getMessage().endswith(messages.outage_over(0, "Forbidden").removeprefix("going on after 0 s"))
               for record in caplog.records)


def test_each_new_problem_gets_its_event() -> None:
    kube = FlakyKube(database.Unreachable("connection refused"), forbidden(), database.Unreachable("x"))
    drive(kube)
    assert [reason for reason, _, _ in kube.events] == ["DatabaseUnreachable", "Forbidden", "DatabaseUnreachable"]


def test_an_api_that_does_not_answer_is_waited_for_even_when_no_event_gets_through(
        caplog: pytest.LogCaptureFixture) -> None:
    kube = FlakyKube(urllib3.exceptions.MaxRetryError(None, "/apis"),  # type: ignore[arg-type]
                     ApiException(status=503, reason="Service Unavailable"), events_fail=True)
    with caplog.at_level(logging.WARNING):
        drive(kube)
    assert kube.reads == 3 and kube.events == []
    assert sum("APIUnavailable" in record.getMessage() for record in caplog.records) == 2


def test_any_other_error_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        drive(FlakyKube(KeyError("phase")))
    with pytest.raises(ApiException):
        drive(FlakyKube(ApiException(status=422, reason="Unprocessable Entity")))


@pytest.mark.parametrize(("error", "reason"), [
    (database.Unreachable("connection refused"), "DatabaseUnreachable"),
    (observe.LeftoverJob("Job run-plan belongs to an earlier DjangoMigration"), "LeftoverJob"),
    (forbidden(), "Forbidden"),
    (ApiException(status=500, reason="Internal Server Error"), "APIUnavailable"),
    (ApiException(status=429, reason="Too Many Requests"), "APIUnavailable"),
    (urllib3.exceptions.ProtocolError("Connection aborted."), "APIUnavailable"),
    (ApiException(status=404, reason="Not Found"), None),
    (ApiException(status=409, reason="Conflict"), None),
    (ValueError("a bug"), None),
])
def test_what_passes_by_itself(error: Exception, reason: str | None) -> None:
    problem = driver.transient(error)
    assert (problem.reason if problem else None) == reason


def test_the_pauses_grow_to_a_limit_and_start_again_after_a_recovery() -> None:
    outage = driver.Outage()
    pauses = [outage.pause() for _ in range(4)]
    assert pauses == [0.01, 0.02, 0.02, 0.02]
    outage.problem = driver.Problem(Reason.FORBIDDEN, "x")
    outage.end(logging.getLogger("test"))
    assert outage.pause() == 0.01


def test_a_run_that_ends_wakes_only_the_runs_queued_for_a_lease() -> None:
    wakeups = driver.Wakeups()
    queued, going, was_queued = (wakeups.event("shop", name) for name in ("queued", "going", "was-queued"))
    wakeups.note("shop", "queued", queued=True, counts_pods=False)
    wakeups.note("shop", "was-queued", queued=True, counts_pods=False)
    wakeups.note("shop", "was-queued", queued=False, counts_pods=False)  # it got the Lease and went on
    wakeups.wake_queued()
    assert queued.is_set() and not going.is_set() and not was_queued.is_set()


def test_the_apps_pods_wake_a_namespace_only_while_one_of_its_runs_waits_for_them_to_go() -> None:
    wakeups = driver.Wakeups()
    wakeups.event("shop", "release-3")
    wakeups.note("shop", "release-3", queued=False, counts_pods=True)  # ScalingDown
    assert wakeups.counts_pods_in("shop") and not wakeups.counts_pods_in("blog")
    wakeups.note("shop", "release-3", queued=False, counts_pods=False)  # BackingUp: its Jobs' pods wake it
    assert not wakeups.counts_pods_in("shop")
    wakeups.note("shop", "release-4", queued=False, counts_pods=True)
    wakeups.forget("shop", "release-4")
    assert not wakeups.counts_pods_in("shop")
