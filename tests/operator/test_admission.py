"""The operator's slots for stopped apps: counted from the runs' statuses, given in the order runs queued."""

from __future__ import annotations

from django_migration_operator.admission import Admission
from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import WAITING_FOR_SLOT, WAITING_TO_PLAN, Phase
from django_migration_operator.world import Slots

STOPPED: RunStatus = {"phase": Phase.BACKING_UP}
QUEUED: RunStatus = {"phase": Phase.QUEUED, "waitingFor": WAITING_FOR_SLOT}
ONLINE: RunStatus = {"phase": Phase.MIGRATING, "strategy": "Online"}


def test_without_a_limit_there_are_no_slots_to_count() -> None:
    admission = Admission(0)
    admission.note("a/1", STOPPED)
    assert admission.stopped.slots("b/2") is None


def test_a_run_takes_a_slot_when_it_stops_its_app_and_the_next_finds_none() -> None:
    admission = Admission(2)
    assert admission.stopped.slots("a/1") == Slots(free=True, taken=0, limit=2)
    admission.note("a/1", {"phase": Phase.SCALING_DOWN})
    admission.note("a/2", STOPPED)
    assert admission.stopped.slots("a/3") == Slots(free=False, taken=2, limit=2)
    assert admission.stopped.slots("a/1") == Slots(free=True, taken=1, limit=2), "a holder keeps its slot"


def test_an_online_run_or_one_before_stopping_takes_no_slot() -> None:
    admission = Admission(1)
    for status in (ONLINE, RunStatus(phase=Phase.PLANNING), RunStatus(phase=Phase.AWAITING_APPROVAL)):
        admission.note("a/1", status)
        assert admission.stopped.slots("b/2") == Slots(free=True, taken=0, limit=1)


def test_a_slot_given_back_wakes_the_waiters_it_admits_in_the_order_they_queued() -> None:
    admission = Admission(2)
    admission.note("a/1", STOPPED)
    admission.note("a/2", STOPPED)
    for waiter in ("w/1", "w/2", "w/3"):
        assert admission.note(waiter, QUEUED) == [], "no slot came free"
    assert admission.forget("a/1") == ["w/1"]
    assert admission.stopped.slots("w/2") == Slots(free=False, taken=1, limit=2), "w/1 goes first"
    assert admission.stopped.slots("new/1") == Slots(free=False, taken=1, limit=2), "a newcomer queues behind"
    assert admission.stopped.slots("w/1").free  # type: ignore[union-attr]
    admission.note("w/1", {"phase": Phase.SCALING_DOWN})
    assert admission.note("a/2", {"phase": Phase.SUCCEEDED}) == ["w/2"]
    assert admission.note("a/2", {"phase": Phase.SUCCEEDED}) == [], "a slot is given back once"


def test_a_waiter_that_goes_away_gives_its_turn_to_the_next() -> None:
    admission = Admission(1)
    admission.note("a/1", STOPPED)
    admission.note("w/1", QUEUED)
    admission.note("w/2", QUEUED)
    admission.forget("w/1")  # deleted while it waited
    assert admission.forget("a/1") == ["w/2"]


def test_a_restarted_operator_counts_the_apps_already_stopped_before_admitting_any() -> None:
    admission = Admission(1)
    admission.seed([("w/1", QUEUED), ("a/1", STOPPED), ("done/1", RunStatus(phase=Phase.SUCCEEDED))])
    assert admission.stopped.slots("w/1") == Slots(free=False, taken=1, limit=1)
    assert admission.forget("a/1") == ["w/1"]


def test_the_runs_holding_a_slot_have_threads_of_their_own_the_others_the_default_pool() -> None:
    admission = Admission(2)
    admission.note("shop/a", {"phase": Phase.BACKING_UP})
    admission.note("blog/b", {"phase": Phase.PLANNING})
    threads = admission.threads("shop/a")
    assert threads is not None and admission.threads("blog/b") is None
    admission.forget("shop/a")
    assert admission.threads("shop/a") is None, "its slot given back, so is its thread"


def test_planning_has_slots_of_its_own_given_in_the_order_runs_queued_for_them() -> None:
    admission = Admission(1, max_planning_runs=1)
    admission.note("a/1", {"phase": Phase.PLANNING})
    assert admission.planning.slots("b/1") == Slots(free=False, taken=1, limit=1)
    assert admission.stopped.slots("b/1") == Slots(free=True, taken=0, limit=1), "planning takes no stopped app's slot"
    admission.note("b/1", {"phase": Phase.QUEUED, "waitingFor": WAITING_TO_PLAN})
    admission.note("b/2", {"phase": Phase.QUEUED, "waitingFor": WAITING_TO_PLAN})
    assert admission.note("a/1", {"phase": Phase.SCALING_DOWN}) == ["b/1"], "planned: its planning slot goes on"
    assert admission.planning.slots("b/1") == Slots(free=True, taken=0, limit=1)
    assert admission.planning.slots("b/2") == Slots(free=False, taken=0, limit=1), "b/1's turn first"
    assert admission.stopped.slots("c/1") == Slots(free=False, taken=1, limit=1), "a/1 now holds a stopped app's slot"
