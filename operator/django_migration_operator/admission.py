"""At most so many apps stopped at once across the operator (--max-stopped-apps); the runs past that wait in Queued.

Stopping fifty apps at once, then sharing the cluster among their backups and migrations, makes every app's
downtime long; waiting costs a user nothing while the app still serves. So an Offline run takes a slot before it
stops its app and gives it back when the run ends, and a run that finds none free waits in Queued, serving, until
one is. Online runs never stop their app and take none.

The operator is one process, so the slots are counted in memory, in the event loop: a driver reads its run's slot
and records the step it leads to in one go, with no await in between, so two runs never both take the last slot. At
start the runs are read once (`seed`): a restarted operator counts the apps that are already stopped before any
run is admitted. Waiters are admitted in the order they queued.
"""

from __future__ import annotations

from collections.abc import Iterable

from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import Phase, holds_slot, queued_for_slot
from django_migration_operator.world import Slots


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._holding: set[str] = set()  # runs (namespace/name) whose app is stopping, stopped or starting
        self._waiting: dict[str, None] = {}  # runs queued for a slot, in the order they queued

    def slots(self, key: str) -> Slots | None:
        """Whether the run may stop its app now; None without a limit."""
        if not self.limit:
            return None
        return Slots(free=self._may_take(key), taken=len(self._holding - {key}), limit=self.limit)

    def note(self, key: str, status: RunStatus) -> list[str]:
        """Records what the run's (new) status means for its slot; returns the waiters to wake: a slot came free."""
        holds = holds_slot(status)
        released = key in self._holding and not holds
        if holds:
            self._holding.add(key)
        else:
            self._holding.discard(key)
        if queued_for_slot(status):
            self._waiting.setdefault(key, None)
        else:
            self._waiting.pop(key, None)
        return self._admissible() if released else []

    def forget(self, key: str) -> list[str]:
        """The run ended or its driver left: its slot, if any, goes to the waiters returned."""
        return self.note(key, RunStatus(phase=Phase.SUCCEEDED))

    def seed(self, runs: Iterable[tuple[str, RunStatus]]) -> None:
        for key, status in runs:
            self.note(key, status)

    def _may_take(self, key: str) -> bool:
        if key in self._holding:
            return True
        order = list(self._waiting)
        rank = order.index(key) if key in self._waiting else len(order)
        return rank < self.limit - len(self._holding)

    def _admissible(self) -> list[str]:
        return list(self._waiting)[:max(self.limit - len(self._holding), 0)]
