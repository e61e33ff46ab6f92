"""What the driver observes and the workflow decides on: the app's Deployments, the step's Job, the database.

Plain values: observe.py builds them, workflow.py decides on them. A module of their own, since observe.py reads
the phase table in workflow.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class EndingPod:
    """A pod being deleted whose node has not yet reported its containers stopped (no terminal phase yet)."""

    name: str
    deadline: datetime  # metadata.deletionTimestamp: when the deletion was asked for, plus the grace period


@dataclass(frozen=True)
class DeploymentState:
    replicas: int  # spec.replicas
    # Pods matching the selector whose containers may run: terminating ones included, those in a terminal phase
    # (evicted, or stopped and held by a finalizer) not. None: not counted in this phase.
    pods: int | None
    available: int  # status.availableReplicas
    rolled_out: bool  # the controller has seen the latest spec and every replica is updated
    serving: int | None = None  # of `pods`, the Ready ones (terminating or not); None: not counted
    scaled_by: str | None = None  # the field manager that last set spec.replicas, when the API tells
    images: dict[str, str] = field(default_factory=dict)  # container -> image of the pod template, in order
    stalled: bool = False  # its rollout exceeded progressDeadlineSeconds (condition Progressing, False)
    ending: tuple[EndingPod, ...] = ()  # of `pods`, those being deleted


@dataclass(frozen=True)
class JobState:
    finished: str | None  # None while it runs, "Complete" or "Failed"
    reason: str | None  # the Job's failure reason (DeadlineExceeded, BackoffLimitExceeded, Reason.NOT_STARTED)
    log: str  # the output of its pod
    created: datetime | None = None  # when the Job was created
    not_started: str | None = None  # why its pod has not started yet (Unschedulable: ...); None once it runs


@dataclass(frozen=True)
class Slots:
    """One of the operator's limits (--max-stopped-apps, --max-planning-runs), as it stands for one run."""

    free: bool  # this run may go on now (it holds a slot, or the next free one is its turn)
    taken: int  # other runs holding one: their app stopping, stopped or starting; or planning
    limit: int


@dataclass(frozen=True)
class World:
    now: datetime
    problems: tuple[str, ...] = ()  # input that cannot work, each naming the field and the fix
    server_major: int | None = None  # the PostgreSQL server's major version, read while Pending
    lease_holder: str | None = None  # another run, still going, that holds this database's Lease
    lease_ours: bool = False  # this run holds the Lease
    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    job: JobState | None = None  # the current step's Job; None when not created yet
    row_counts: dict[str, int] | None = None  # counted now
    applied: frozenset[tuple[str, str]] | None = None  # (app, name) rows of django_migrations
    check_results: dict[str, str] | None = None  # check name -> the value its SQL returned
    scratch_exists: bool = False  # the rehearsal's scratch database is there
    slots: Slots | None = None  # None: no limit of apps stopped at once
    planning_slots: Slots | None = None  # None: no limit of runs planning at once
    # This operator process had not looked at the run before (it started, or took the run over): it did not see
    # what changed while no process watched, such as when the app's pods stopped serving.
    first_look: bool = False
