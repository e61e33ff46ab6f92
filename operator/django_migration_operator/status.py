"""The vocabulary of a run's status: its shape, its condition types and reasons, and the one reader of a condition.

The workflow writes the status, the driver, the Helm hook's waiter (wait.py) and the webhooks read it; all of
them take the names from here, as atlas-operator's reason.go does. The shape follows the CRD's status schema
(crds/). Every key is optional: a status grows field by field as the run goes, and one read back from the API
server is whatever the operator that wrote it wrote.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, TypedDict


class ConditionType(StrEnum):
    """A state the run is in, or not: Kubernetes condition types are states, never causes."""

    SUCCEEDED = "Succeeded"  # the top condition: Unknown while the run goes on, then True or False
    BACKUP_TAKEN = "BackupTaken"
    MIGRATED = "Migrated"
    VERIFIED = "Verified"
    ROLLED_BACK = "RolledBack"
    MANUAL_RESTORE_REQUIRED = "ManualRestoreRequired"  # the restore failed: the database waits for a person


class Reason(StrEnum):
    """Why a condition changed, a run ended or an event was posted: CamelCase causes, never a condition type.

    An event that tells of a run entering a phase has the phase's name as its reason (workflow.Phase).
    """

    QUEUED = "Queued"  # for another run's Lease on the database
    WAITING_FOR_SLOT = "WaitingForSlot"  # Queued: the operator stops as many apps at once as it may (admission.py)
    RUNNING = "Running"
    INVALID_SPEC = "InvalidSpec"
    STRATEGY_CHOSEN = "StrategyChosen"
    # Planning; the plan script also names its own (Conflict, UnknownTarget, InconsistentHistory, ToolsTooOld,
    # ToolsTooNew, ...).
    PLAN_FAILED = "PlanFailed"
    NO_PLAN = "NoPlan"
    BAD_PLAN = "BadPlan"
    PLAN_ERROR = "PlanError"
    NOTHING_TO_MIGRATE = "NothingToMigrate"
    IRREVERSIBLE = "Irreversible"
    ONLINE_REFUSED = "OnlineRefused"
    REHEARSAL_FAILED = "RehearsalFailed"
    OUTSIDE_WINDOW = "OutsideWindow"
    # A step's pod never started within jobTemplate.startTimeoutSeconds (a Job's reason, next to Kubernetes' own
    # DeadlineExceeded and BackoffLimitExceeded).
    NOT_STARTED = "NotStarted"
    BACKUP_VERIFIED = "BackupVerified"
    BACKUP_FAILED = "BackupFailed"
    PLAN_APPLIED = "PlanApplied"  # the migrations ran (Migrated=True); a run that succeeded did all it had to
    MIGRATION_FAILED = "MigrationFailed"
    VERIFICATION_PASSED = "VerificationPassed"
    VERIFICATION_FAILED = "VerificationFailed"
    RESTORED = "Restored"
    RESTORE_FAILED = "RestoreFailed"
    ROLLOUT_FAILED = "RolloutFailed"
    CONTRACT_FAILED = "ContractFailed"
    SCALED_UP_DURING_RUN = "ScaledUpDuringRun"
    NOTIFICATION_FAILED = "NotificationFailed"
    # The app's pods were deleted, but their node has not reported them stopped long after their grace period.
    PODS_NOT_ENDING = "PodsNotEnding"
    # The run waits, with the app as it is, and goes on by itself once the problem is gone (driver.transient).
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    FORBIDDEN = "Forbidden"
    API_UNAVAILABLE = "APIUnavailable"
    LEFTOVER_JOB = "LeftoverJob"  # a Job under this run's name is not this run's (observe.LeftoverJob)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(TypedDict, total=False):
    type: str
    status: ConditionStatus
    reason: str
    message: str
    lastTransitionTime: str


class Backup(TypedDict, total=False):
    path: str
    sizeBytes: int
    format: str
    compression: str
    verified: bool
    startedAt: str
    completedAt: str


class Restore(TypedDict, total=False):
    """What the restore script's marker says it gave back (jobs.RESTORE_MARKER)."""

    path: str
    restored: bool
    kept: list[str]  # owner, privileges, comment, settings, objectOwners
    notActingAs: str
    refused: int
    refusedStatements: list[str]
    attempts: int  # more than 1 when the server went away and the restore ran again from its DROP


class Rehearsal(TypedDict, total=False):
    outcome: Literal["Succeeded", "Failed"]
    message: str
    dumpSeconds: float
    restoreSeconds: float
    sizeBytes: int
    migrateSeconds: float
    predictedDowntimeSeconds: float


class RowCount(TypedDict, total=False):
    before: int
    after: int


class OpeningWindow(TypedDict, total=False):
    opensAt: str
    closesAt: str


class NotStarted(TypedDict, total=False):
    step: str
    message: str


class PodsNotEnding(TypedDict):
    pods: list[str]  # the app's pods deleted, but not reported stopped long after their grace period
    replaced: str  # the message their naming replaced, put back once they are gone


class Failure(TypedDict, total=False):
    step: str  # the phase that failed
    reason: str
    message: str


class RunStatus(TypedDict, total=False):
    phase: str
    message: str
    conditions: list[Condition]
    observedGeneration: int
    startedAt: str
    completedAt: str
    stoppedAt: str  # when the app's scale-down began
    servingEndedAt: str  # when no pod of app.deployment was Ready any more: the downtime counts from here
    downtimeSeconds: float
    waitingFor: str | None  # the run holding the database's Lease; None clears it
    toolsImage: str
    strategy: str
    strategyReason: str
    plan: list[dict[str, Any]]  # PlannedMigration.to_status()
    planCount: int
    rehearsal: Rehearsal
    window: OpeningWindow
    replicas: dict[str, int]  # Deployment -> its replicas before the run stopped it
    images: dict[str, dict[str, str]]  # Deployment -> container -> image before the run
    jobs: dict[str, str]  # step -> Job name
    notStarted: NotStarted
    podsNotEnding: PodsNotEnding | None  # None: taken away (a merge patch deletes it)
    backup: Backup
    rowCounts: dict[str, RowCount]
    migrateOutput: str
    contractOutput: str
    restore: Restore
    failure: Failure


def condition(status: RunStatus, kind: ConditionType) -> Condition:
    """The run's condition of that type; empty when the status has none (yet)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), Condition())
