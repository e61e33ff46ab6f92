"""At most so many apps stopped at once across the operator (--max-stopped-apps), and so many runs planning
(--max-planning-runs); the runs past either wait in Queued.

Stopping fifty apps at once, then sharing the cluster among their backups and migrations, makes every app's
downtime long; waiting costs a user nothing while the app still serves. So an Offline run takes a slot before it
stops its app and gives it back when the run ends, and a run that finds none free waits in Queued, serving, until
one is. Online runs never stop their app and take none.

The operator is one process, so the slots are counted in memory, in the event loop: a driver reads its run's slot
and records the step it leads to in one go, with no await in between, so two runs never both take the last slot. At
start the runs are read once (`seed`): a restarted operator counts the apps that are already stopped before any
run is admitted. Waiters are admitted in the order they queued.

A slot also comes with a thread: the blocking calls of the runs that hold one go to a pool of their own, never
behind the checks and plans of the runs that wait (asyncio's default pool has 6 threads on 2 cores). With 50 runs
applied at once, one of the first four runs admitted once took 35 s from its ScalingDown to its scale-down, its app
already announced as stopping, while 46 runs' looks held every thread of the shared pool.

Planning has slots of its own for the same reason: each plan Job starts Django to list the migrations, and 48 of
them at once shared the two cores with the first two stopped apps, whose downtime was 31.6 s against 5.0 s alone.
A run takes a planning slot when it enters Planning (the Lease already held) and gives it back when it leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor

from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import (
    WAITING_FOR_SLOT,
    WAITING_TO_PLAN,
    Phase,
    holds_planning_slot,
    holds_slot,
    queued_for,
)
from django_migration_operator.world import Slots

# The threads of the runs holding a slot when there is no limit, when any number may: a few, so that they still never
# wait behind the calls of the runs that plan.
UNLIMITED_SLOT_THREADS = 4


class Pool:
    """At most `limit` runs in the phases `holds` names at once (0: no limit); the runs queued for `waiting_for`
    wait their turn, in the order they queued."""

    def __init__(self, limit: int, holds: Callable[[RunStatus], bool], waiting_for: str) -> None:
        self.limit = limit
        self._holds, self._waiting_for = holds, waiting_for
        self.holding: set[str] = set()  # runs (namespace/name) holding a slot
        self._waiting: dict[str, None] = {}  # runs queued for a slot, in the order they queued

    def slots(self, key: str) -> Slots | None:
        """Whether the run may take a slot now; None without a limit."""
        if not self.limit:
            return None
        return Slots(free=self._may_take(key), taken=len(self.holding - {key}), limit=self.limit)

    def note(self, key: str, status: RunStatus) -> list[str]:
        """Records what the run's (new) status means for its slot; returns the waiters to wake: a slot came free."""
        holds = self._holds(status)
        released = key in self.holding and not holds
        if holds:
            self.holding.add(key)
        else:
            self.holding.discard(key)
        if queued_for(status, self._waiting_for):
            self._waiting.setdefault(key, None)
        else:
            self._waiting.pop(key, None)
        return self._admissible() if released else []

    def _may_take(self, key: str) -> bool:
        if key in self.holding:
            return True
        order = list(self._waiting)
        rank = order.index(key) if key in self._waiting else len(order)
        return rank < self.limit - len(self.holding)

    def _admissible(self) -> list[str]:
        return list(self._waiting)[:max(self.limit - len(self.holding), 0)]


class Admission:
    def __init__(self, max_stopped_apps: int, max_planning_runs: int = 0) -> None:
        self.stopped = Pool(max_stopped_apps, holds_slot, WAITING_FOR_SLOT)  # `slots`: may the run stop its app now
        self.planning = Pool(max_planning_runs, holds_planning_slot, WAITING_TO_PLAN)  # `slots`: may it plan now
        # One blocking call at a time per run: with a thread for each slot, no run holding one ever waits for one.
        self._threads = ThreadPoolExecutor(max_stopped_apps or UNLIMITED_SLOT_THREADS, thread_name_prefix="slot")

    def note(self, key: str, status: RunStatus) -> list[str]:
        """Records what the run's (new) status means for its slots; returns the waiters to wake: a slot came free."""
        return [*self.stopped.note(key, status), *self.planning.note(key, status)]

    def threads(self, key: str) -> Executor | None:
        """Where the run's blocking calls go: the slots' pool while it holds a stopped app's slot, else asyncio's
        default (None)."""
        return self._threads if key in self.stopped.holding else None

    def forget(self, key: str) -> list[str]:
        """The run ended or its driver left: its slots, if any, go to the waiters returned."""
        return self.note(key, RunStatus(phase=Phase.SUCCEEDED))

    def seed(self, runs: Iterable[tuple[str, RunStatus]]) -> None:
        for key, status in runs:
            self.note(key, status)
