"""The driver's loop against a fake Kube and a fake database: a run from Pending to its end, through observe.py,
workflow.py and carry_out, with what it did to the cluster recorded in order.

tests/operator/test_workflow.py proves each transition; here, that the driver observes, carries out and resumes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import urllib3

from django_migration_operator import database, driver, jobs
from django_migration_operator.admission import Admission
from django_migration_operator.kube import ClaimState, Kube, LeaseRecord
from django_migration_operator.resource import RunRef, Spec
from django_migration_operator.status import ConditionType, RunStatus, condition
from django_migration_operator.world import Slots
from tests.operator.test_workflow import SCRIPT_PLAN, backup_log, plan_log

RUN = RunRef("shop", "release-3", "uid-3")
URL = "postgres://app:secret@db.internal:5432/shop"
SPEC: dict[str, Any] = {
    "app": {"deployment": "web", "stop": ["worker"]},
    "database": {"urlSecret": {"name": "db", "key": "url"}},
    "backup": {"volumeClaim": "backups"},
    "verify": {"rowCounts": ["blog_post"]},
}
REPLICAS = {"web": 2, "worker": 1}
# What each step's Job prints; every Job's pod ends as soon as it is created.
LOGS = {jobs.job_name(RUN, "plan"): plan_log(SCRIPT_PLAN), jobs.job_name(RUN, "backup"): backup_log(),
        jobs.job_name(RUN, "migrate"): "  Applying blog.0003_add_post_status... OK\n"}


class FakeKube:
    """A cluster with the run, its two Deployments (each controller acts at once), its Secret, claim and Lease."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {"metadata": {"name": RUN.name, "generation": 1}, "spec": SPEC, "status": {}}
        self.replicas = dict(REPLICAS)
        self.jobs: dict[str, dict[str, Any]] = {}  # each Job's metadata
        self.leftover_reads = 0  # reads of a Job of an earlier run of this name before the garbage collector takes it
        self.lease: str | None = None
        self.done: list[tuple[str, ...]] = []  # what the run did to the cluster, in order
        self.events: list[str] = []
        self.phases: list[str] = []  # each phase the status was patched to
        self.secret_reads: Counter[str] = Counter()  # the database URL's reads, by the phase of the look
        self.forgotten: list[str] = []  # namespaces whose cached objects went: their last run ended
        self.missing_job_reads = 0  # looks for a Job not created yet
        self.early_pod_lists = 0  # the app's pods listed before the run recorded the app's size

    # --- the run

    def forget_namespace(self, namespace: str) -> None:
        self.forgotten.append(namespace)

    def read_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body

    def patch_run_status(self, run: RunRef, status: RunStatus) -> None:
        self.body = {**self.body, "status": {**self.body["status"], **status}}
        if "phase" in status:
            self.phases.append(str(status["phase"]))

    def post_event(self, run: RunRef, reason: str, message: str, warning: bool) -> None:
        self.events.append(reason)

    # --- the app

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        replicas = self.replicas[name]
        return {"metadata": {"name": name, "generation": 1},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"spec": {"containers": [{"name": "django", "image": "shop:2"}]}}},
                "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                           "availableReplicas": replicas}}

    def scale_deployment(self, namespace: str, name: str, replicas: int, images: dict[str, str]) -> None:
        self.done.append(("scale", name, str(replicas)))
        self.replicas[name] = replicas

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.early_pod_lists += "replicas" not in self.body["status"]
        _, _, app = selector.partition("=")
        return [{"metadata": {"name": f"{app}-{index}"}} for index in range(self.replicas[app])]

    # --- Jobs

    def create_job(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        if name in self.jobs:  # 409, which kube.create_job takes for its own creation before a restart
            return
        self.done.append(("create job", name))
        self.jobs[name] = {"name": name, "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "ownerReferences": manifest["metadata"]["ownerReferences"]}

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name not in self.jobs:
            self.missing_job_reads += 1
            return None
        metadata = self.jobs[name]
        if metadata["ownerReferences"][0]["uid"] != RUN.uid:
            self.leftover_reads -= 1
            if self.leftover_reads == 0:
                del self.jobs[name]
        # Its pod ended: the Job's condition is not written yet.
        return {"metadata": metadata, "status": {}}

    def job_pods(self, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        name = job["metadata"]["name"]
        return [{"metadata": {"name": f"{name}-x", "creationTimestamp": self.jobs[name]["creationTimestamp"]},
                 "spec": {"containers": [{"name": "django"}]}, "status": {"phase": "Succeeded"}}]

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        return LOGS[pod.removesuffix("-x")]

    # --- the Secret, the claim and the Lease

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        self.secret_reads[self.body["status"].get("phase", "Pending")] += 1
        return URL if (name, key) == ("db", "url") else None

    def claim(self, namespace: str, name: str) -> ClaimState | None:
        return ClaimState("Bound", 10 * 2**30)

    def lease_holder(self, database_id: str) -> LeaseRecord | None:
        return LeaseRecord(self.lease, "1") if self.lease else None

    def acquire_lease(self, run: RunRef, database_id: str, stale_version: str | None) -> bool:
        self.done.append(("acquire lease",))
        self.lease = run.key
        return True

    def release_lease(self, run: RunRef) -> None:
        self.done.append(("release lease",))
        self.lease = None


@pytest.fixture(autouse=True)
def fake_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL 16 server that allows everything, whose one table keeps its rows, and that applies the plan."""
    answers: dict[str, Any] = {"connection_problem": None, "createdb_problem": None, "server_major": 16,
                               "database_size": 2**30, "missing_tables": [], "row_counts": {"blog_post": 3},
                               "verification": database.Verification(
                                   {"blog_post": 3}, frozenset({("blog", "0003_add_post_status")}), {})}
    for name, answer in answers.items():
        monkeypatch.setattr(database, name, lambda *_, answer=answer: answer)
    monkeypatch.setattr(driver, "SAFETY_NET_SECONDS", 0.0)  # every change is there at once: look again at once


def drive(kube: FakeKube, stopping: driver.Stop | None = None, once_in: str | None = None) -> None:
    """Drives the run until it ends; or with `stopping`, told so once it is in the phase `once_in`."""
    def told() -> driver.Stop | None:
        return stopping if kube.body["status"].get("phase") == once_in else None
    asyncio.run(asyncio.wait_for(driver.drive(cast(Kube, kube), driver.Wakeups(), Admission(0), RUN,
                                              logging.getLogger("test"), told), timeout=10))


FROM_PENDING_TO_SUCCEEDED = [
    ("acquire lease",), ("create job", jobs.job_name(RUN, "plan")), ("scale", "web", "0"), ("scale", "worker", "0"),
    ("create job", jobs.job_name(RUN, "backup")), ("create job", jobs.job_name(RUN, "migrate")),
    ("scale", "web", "2"), ("scale", "worker", "1"), ("release lease",)]


def test_a_run_goes_from_pending_to_succeeded_and_the_app_runs_again() -> None:
    kube = FakeKube()
    drive(kube)
    assert kube.phases == ["Planning", "ScalingDown", "BackingUp", "Migrating", "Verifying", "ScalingUp",
                           "Succeeded"]
    assert kube.done == FROM_PENDING_TO_SUCCEEDED
    assert kube.events == ["Planning", "StrategyChosen", "ScalingDown", "BackingUp", "Migrating", "Verifying",
                           "ScalingUp", "PlanApplied"]
    status = kube.body["status"]
    assert condition(status, ConditionType.SUCCEEDED)["status"] == "True"
    assert status["replicas"] == REPLICAS and kube.replicas == REPLICAS and kube.lease is None
    assert status["rowCounts"] == {"blog_post": {"before": 3, "after": 3}}
    assert status["jobs"] == {step: jobs.job_name(RUN, step) for step in ("plan", "backup", "migrate")}
    assert status["stoppedAt"] <= status["servingEndedAt"], "the downtime counts from the end of serving"
    assert status["observedGeneration"] == 1 and status["toolsImage"] == jobs.tools_image(
        Spec.from_body(SPEC), 16)
    # The rows are counted once, in the look that found the app's pods gone, whose step also creates the backup Job.
    assert kube.secret_reads["ScalingDown"] == 1 and kube.secret_reads["BackingUp"] == 0
    assert kube.forgotten == ["shop"], "the namespace's last run ended: no event keeps its cached objects current"
    assert kube.missing_job_reads == 0, "a Job is looked for only once status.jobs records it, which comes first"
    assert kube.early_pod_lists == 0, "the look that records the app's size and scales it down lists no pods"


class KubeAwayAfterBackingUp(FakeKube):
    """The API goes away just after the status says BackingUp: it refuses the backup Job's create and the outage's
    own event, then is back."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 0

    def _answer(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise urllib3.exceptions.MaxRetryError(None, "/apis")  # type: ignore[arg-type]

    def patch_run_status(self, run: RunRef, status: RunStatus) -> None:
        super().patch_run_status(run, status)
        if status.get("phase") == "BackingUp":
            self.refusals = 2

    def create_job(self, manifest: dict[str, Any]) -> None:
        self._answer()
        super().create_job(manifest)

    def post_event(self, run: RunRef, reason: str, message: str, warning: bool) -> None:
        self._answer()
        super().post_event(run, reason, message, warning)


def test_the_event_of_a_phase_whose_status_got_through_is_posted_once_the_api_is_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver.Outage, "FIRST_PAUSE_SECONDS", 0.01)
    kube = KubeAwayAfterBackingUp()
    drive(kube)
    assert kube.done == FROM_PENDING_TO_SUCCEEDED
    assert kube.events == ["Planning", "StrategyChosen", "ScalingDown", "BackingUp", "Migrating", "Verifying",
                           "ScalingUp", "PlanApplied"], "each phase's event once, in order"


def test_a_job_left_by_an_earlier_run_of_the_same_name_is_waited_for_never_taken_as_this_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A Helm hook deleted the last release's run and created this one under its name: the garbage collector has not
    # deleted the old plan Job yet, whose plan is the last release's.
    monkeypatch.setattr(driver.Outage, "FIRST_PAUSE_SECONDS", 0.01)
    kube = FakeKube()
    plan = jobs.job_name(RUN, "plan")
    kube.jobs[plan] = {"name": plan, "creationTimestamp": "2026-12-01T00:00:00Z",
                       "ownerReferences": [RunRef(RUN.namespace, RUN.name, "uid-2").owner_reference()]}
    kube.leftover_reads = 3
    drive(kube)
    assert kube.done == FROM_PENDING_TO_SUCCEEDED, "its own plan Job created once the old one was gone"
    assert kube.events[:2] == ["Planning", "LeftoverJob"] and kube.events.count("LeftoverJob") == 1


@pytest.mark.parametrize("phase", ["Planning", "ScalingDown", "BackingUp", "Migrating", "Verifying", "ScalingUp"])
def test_a_driver_that_leaves_is_resumed_by_the_next_from_the_status_alone(phase: str) -> None:
    kube = FakeKube()
    drive(kube, driver.Stop.LEAVE, once_in=phase)
    assert kube.phases[-1] == phase and kube.lease == RUN.key
    drive(kube)  # the next operator's driver: nothing but the status and the cluster to go on
    assert kube.done == FROM_PENDING_TO_SUCCEEDED, "each action once, none skipped"
    assert kube.phases[-1] == "Succeeded"


def test_a_driver_that_did_not_see_the_app_stop_serving_counts_the_downtime_from_the_scale_down() -> None:
    kube = FakeKube()

    def once_scaled_down() -> driver.Stop | None:
        return driver.Stop.LEAVE if "stoppedAt" in kube.body["status"] else None
    asyncio.run(asyncio.wait_for(driver.drive(cast(Kube, kube), driver.Wakeups(), Admission(0), RUN,
                                              logging.getLogger("test"), once_scaled_down), timeout=10))
    assert kube.replicas == {"web": 0, "worker": 0} and "servingEndedAt" not in kube.body["status"]
    # The operator was down for a minute: its pods stopped serving somewhere in it.
    stopped_at = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    kube.patch_run_status(RUN, {"stoppedAt": stopped_at})
    drive(kube)
    status = kube.body["status"]
    assert status["phase"] == "Succeeded" and status["servingEndedAt"] == stopped_at
    assert status["downtimeSeconds"] >= 60


def test_a_run_deleted_before_it_touched_anything_ends_at_once_and_frees_the_database() -> None:
    kube = FakeKube()
    drive(kube, driver.Stop.DELETED, once_in="Planning")
    assert kube.done == [("acquire lease",), ("release lease",)], "not even the plan Job"
    assert kube.phases[-1] == "Planning" and kube.replicas == REPLICAS


def test_a_run_deleted_once_the_app_is_stopped_is_driven_to_its_end_first() -> None:
    kube = FakeKube()
    drive(kube, driver.Stop.DELETED, once_in="BackingUp")
    assert kube.done == FROM_PENDING_TO_SUCCEEDED and kube.replicas == REPLICAS


@pytest.mark.parametrize(("admission", "other", "phases"), [
    # The one app the operator may stop is stopped: the run plans, then waits to stop its app.
    (lambda: Admission(1), "BackingUp", ["Planning", "Queued", "ScalingDown"]),
    # The one run the operator may plan at a time is planning: the run waits, its Lease held, then plans.
    (lambda: Admission(0, max_planning_runs=1), "Planning", ["Queued", "Planning", "ScalingDown"]),
], ids=["stopped apps", "planning runs"])
def test_a_run_with_no_slot_free_waits_in_queued_serving_and_goes_on_when_the_slot_is_given_back(
        admission: Callable[[], Admission], other: str, phases: list[str]) -> None:
    kube = FakeKube()
    slots = admission()
    slots.note("other/release-1", {"phase": other})
    wakeups = driver.Wakeups()

    def free_for_the_run() -> Slots | None:
        return slots.stopped.slots(RUN.key) if other == "BackingUp" else slots.planning.slots(RUN.key)

    async def scenario() -> None:
        run = asyncio.create_task(driver.drive(cast(Kube, kube), wakeups, slots, RUN, logging.getLogger("test"),
                                               lambda: None))
        while kube.body["status"].get("phase") != "Queued":
            await asyncio.sleep(0.01)
        assert kube.replicas == REPLICAS and ("scale", "web", "0") not in kube.done, "the app serves while queued"
        assert free_for_the_run() == Slots(free=False, taken=1, limit=1)
        for key in slots.forget("other/release-1"):  # that run ended: the driver wakes the waiter it admits
            wakeups.wake(*key.split("/"))
        await asyncio.wait_for(run, timeout=10)

    asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert kube.phases == [*phases, "BackingUp", "Migrating", "Verifying", "ScalingUp", "Succeeded"]
    assert kube.body["status"]["waitingFor"] is None and kube.done == FROM_PENDING_TO_SUCCEEDED
    assert free_for_the_run() == Slots(free=True, taken=0, limit=1), "its slot is given back at its end"
