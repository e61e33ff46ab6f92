"""The words a run says: its status.message texts, its events and its failures, each one a function of the facts.

The workflow decides, this module words: a message can be reworded here without touching a transition, and
tests/operator/test_messages.py is where the wording is pinned. Every message that ends a run says where the app and
the data are. Pure: no I/O, no decisions about the run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from django_migration_operator.status import Rehearsal, Restore

if TYPE_CHECKING:  # plan.py words its errors here
    from django_migration_operator.plan import PlannedMigration

# How much of a Job's output a message quotes; status.migrateOutput keeps the same tail.
LOG_TAIL_LINES = 20
# How much a "no plan" error quotes: enough for a traceback's last frame and its exception.
PLAN_TAIL_LINES = 8
NOTHING_CHANGED = "Nothing was changed: the app and the database are as they were"

# Django prints "  Applying app.name..." and " OK" once it is done; the line without OK is the one that failed.
_APPLYING = re.compile(r"^\s*(?P<verb>Applying|Unapplying) (?P<migration>[\w.]+?)\.\.\.(?P<ok> OK)?")
# The last line of a Python traceback: the exception, e.g. django.db.utils.ProgrammingError: relation ... exists.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(: .*)?$")


# --- pieces ------------------------------------------------------------------------------------------------------


def tail(log: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a Job's output: what a person reads first when a step failed."""
    return "\n".join(log.strip().splitlines()[-lines:]) or "(no output)"


def plan_summary(plan: Sequence[PlannedMigration]) -> str:
    names = ", ".join(f"{m.key}{' (backwards)' if m.backwards else ''}"
                      f"{f' [{m.migration_class}]' if m.migration_class else ''}" for m in plan)
    return f"{_migrations(len(plan))}: {names}"


def duration(span: timedelta) -> str:
    """5m12s, 1h30m, 2d4h: seconds only when under an hour."""
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{seconds}s" if seconds and not days and not hours else ""]
    return "".join(parts) or "0s"


def _migrations(count: int) -> str:
    return f"{count} migration{'s' if count != 1 else ''}"


def _images(images: dict[str, dict[str, str]]) -> str:
    names = sorted({image for containers in images.values() for image in containers.values()})
    return f" on {', '.join(names)}" if names else ""


def _replicas(replicas: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in replicas.items())


def _words(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


# --- before anything is touched ----------------------------------------------------------------------------------


def invalid_spec(problems: list[str]) -> str:
    return "; ".join(problems) + f". {NOTHING_CHANGED}."


# What Pending finds wrong with the spec: each names the field, what is wrong, and the fix.


def deployment_not_found(field: str, name: str, namespace: str) -> str:
    return f"{field}: Deployment '{name}' not found in namespace {namespace}; create it or correct the name"


def claim_not_found(claim: str, namespace: str) -> str:
    return f"{_claim(claim)} not found in namespace {namespace}; create it, or name the claim the dumps go to"


def claim_lost(claim: str) -> str:
    return f"{_claim(claim)} is Lost (its volume is gone); recreate the claim or name another one"


def claim_too_small(claim: str, capacity_bytes: int, database: str, size_bytes: int) -> str:
    return (f"{_claim(claim)} holds {_mebibytes(capacity_bytes)}, too small for a dump of database '{database}' "
            f"({_mebibytes(size_bytes)} on disk); a claim of half that ({_mebibytes(size_bytes // 2)}) holds a few "
            "dumps: resize it, or name a bigger one")


def webhook_secret_not_found(webhook: str, secret: str, key: str, namespace: str) -> str:
    return (f"notify[{webhook}].urlSecret: Secret '{secret}' or its key '{key}' not found in namespace {namespace}; "
            "create it, or remove the webhook")


def url_secret_not_found(secret: str, key: str, namespace: str) -> str:
    return (f"{_url_secret(secret)} or its key '{key}' not found in namespace {namespace}; create it, or name the "
            "Secret and key that hold the DATABASE_URL")


def url_invalid(secret: str, key: str, problem: str) -> str:
    return f"{_url_secret(secret)}, key '{key}' {problem}; store a postgres:// URL there"


def cannot_connect(secret: str, database: str, why: str) -> str:
    return (f"{_url_secret(secret)}: cannot connect to database '{database}': {why}; fix the URL in the Secret or "
            "make the database reachable")


def restore_impossible(refused: str) -> str:
    return (f"onFailure: Restore is impossible: {refused}, so a restore could not recreate it; grant CREATEDB to that "
            "role, or set onFailure: Keep")


def rehearsal_impossible(refused: str) -> str:
    return (f"rehearsal.enabled: a rehearsal needs a scratch database, but {refused}; grant CREATEDB to that role, "
            "or set rehearsal.enabled: false")


def table_not_found(table: str, database: str) -> str:
    return (f"verify.rowCounts: table '{table}' does not exist in database '{database}'; remove it or name an existing "
            "table")


def _claim(claim: str) -> str:
    return f"backup.volumeClaim: PersistentVolumeClaim '{claim}'"


def _url_secret(secret: str) -> str:
    return f"database.urlSecret: Secret '{secret}'"


def _mebibytes(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def queued(holder: str) -> str:
    return f"waiting for run {holder}, which holds this database"


def waiting_for_slot(taken: int, limit: int) -> str:
    return (f"queued, the app serving: {taken} other apps are stopped for their migrations now, the most this "
            f"operator stops at once (maxStoppedApps: {limit}); this run stops its app when one of them ends")


def waiting_to_plan(taken: int, limit: int) -> str:
    return (f"queued, the app serving: {taken} other runs are planning now, the most this operator plans at once "
            f"(maxPlanningRuns: {limit}); this run plans when one of them is done")


def planning() -> str:
    return "planning: listing the migrations to apply"


def no_plan(log: str) -> str:
    return f"the plan Job printed no plan; last lines:\n{tail(log, PLAN_TAIL_LINES)}"


def unreadable_plan(error: Exception, log: str) -> str:
    return f"the plan Job printed a plan that cannot be read ({error!r}); last lines:\n{tail(log, PLAN_TAIL_LINES)}"


def plan_failed(detail: str) -> str:
    return f"planning failed, nothing was changed: {detail}"


def nothing_to_migrate() -> str:
    return "no migration to apply: the database is up to date; the app was not stopped"


def irreversible(migrations: Sequence[PlannedMigration]) -> str:
    names = ", ".join(m.key for m in migrations)
    return (f"the plan unapplies {names}, which cannot be reversed; nothing was changed. Choose a migrate.target "
            "after it, or restore a backup instead")


def online_refused(obstacles: Sequence[str]) -> str:
    return (f"strategy: Online cannot apply this plan while the app serves: {'; '.join(obstacles)}. "
            f"{NOTHING_CHANGED}. Set strategy: Offline, or Auto, which stops the app for such a plan")


def strategy_chosen(strategy: str, why: str) -> str:
    return f"{strategy}: {why}"


def rehearsing(summary: str) -> str:
    return f"plan: {summary}; rehearsing on a copy of the database while the app serves"


def rehearsal_copy_failed(output: str) -> str:
    return f"copying the database failed: {output}"


def rehearsal_verification_failed(failures: list[str]) -> str:
    return "verification failed on the copy: " + "; ".join(failures)


def rehearsal_succeeded() -> str:
    return "migrated and verified on the copy"


def rehearsal_failed(why: str) -> str:
    return (f"the rehearsal on a copy of the database failed: {why}. Production was never touched and the app "
            "never stopped; the copy was dropped")


def rehearsed(rehearsal: Rehearsal) -> str:
    """What a plan summary adds once rehearsed: the durations on the copy and the downtime they predict."""
    return (f"; rehearsed on a copy: dump {rehearsal.get('dumpSeconds', 0):.1f}s, migrate "
            f"{rehearsal.get('migrateSeconds', 0):.1f}s, predicted downtime "
            f"{rehearsal.get('predictedDowntimeSeconds', 0):.0f}s")


def awaiting_approval(summary: str, strategy: str | None) -> str:
    return f"plan ready ({summary}; {strategy}); waiting for approval: set spec.approval to Automatic to go on"


def window_too_short(predicted: float, window_duration: str | None) -> str:
    return (f"the predicted downtime ({predicted:.0f}s, status.rehearsal) is longer than the maintenance window "
            f"(window.duration: {window_duration})")


def window_never_opens() -> str:
    return "the maintenance window's schedule never opens (window.schedule)"


def window_over(predicted: float) -> str:
    left = f", or too little of it is left for the predicted downtime ({predicted:.0f}s)" if predicted else ""
    return f"the maintenance window (window.start) is over{left}"


def outside_window(why: str) -> str:
    return f"{why}, and no later window will do. {NOTHING_CHANGED}. Apply a new run with a window that fits"


def scheduled(opens: str, zone: str, wait: timedelta, predicted: float) -> str:
    room = f", the first with room for the predicted downtime ({predicted:.0f}s)" if predicted else ""
    return (f"waiting for the maintenance window: it opens {opens} ({zone}), in {duration(wait)}{room}; the run "
            "starts then")


# --- on the way --------------------------------------------------------------------------------------------------


def stopping_the_app(summary: str) -> str:
    return f"plan: {summary}; stopping the app"


def backing_up_online(summary: str, claim: str | None) -> str:
    return f"plan: {summary}; online: backing the database up into {claim} while the app serves"


def migrating_online_without_backup(summary: str) -> str:
    return f"plan: {summary}; online, backup disabled (backup.enabled: false): migrating without a backup"


def backing_up(claim: str | None) -> str:
    return f"app stopped; backing the database up into {claim}"


def migrating_without_backup() -> str:
    return "app stopped; backup disabled (backup.enabled: false): migrating without a backup"


def scaled_up_during_run(deployment: str, replicas: int, scaled_by: str | None, phase: str | None) -> str:
    by = f" by {scaled_by}" if scaled_by else ""
    return (f"Deployment {deployment} was scaled to {replicas}{by} while the run is in {phase}; scaling it down to "
            "0 again")


def not_started(timeout_seconds: int, why: str) -> str:
    return f"its pod did not start within jobTemplate.startTimeoutSeconds ({timeout_seconds}s): {why}"


def backup_verified(path: str, size_bytes: int) -> str:
    return f"backup verified: {path} ({size_bytes} bytes); migrating"


def migrations_applied() -> str:
    return "migrations applied; verifying"


def rolling_out(image: str | None, expanded: bool) -> str:
    done = "expand migrations applied" if expanded else "no expand migration"
    return f"{done}; rolling the app out to {image} with its own rolling update"


# What waits for the app's pods to end: the backup (Offline), the contract migrations, or the run's end (Online).
HeldByPods = Literal["backup", "contract", "end"]
_HELD_BY_PODS: dict[HeldByPods, str] = {
    "backup": "the backup and the migration wait, as the app may still write to the database",
    "contract": "the contract migrations wait, as the old release may still use what they remove",
    "end": "the run ends once only the new release runs",
}
_PODS_NAMED = 5  # the rest are counted: an event's message is cut at 1024 characters


def pods_not_ending(pods: list[str], margin_seconds: int, held: HeldByPods) -> str:
    named = ", ".join(pods[:_PODS_NAMED]) + (f" and {len(pods) - _PODS_NAMED} more (status.podsNotEnding)"
                                              if len(pods) > _PODS_NAMED else "")
    return (f"waiting for pods {named} to end: deleted, but their node has not reported their containers stopped "
            f"{margin_seconds} s after their grace period (a lost or unresponsive node), so they may still run; "
            f"{_HELD_BY_PODS[held]}. Once you know they no longer run: `kubectl delete pod --force --grace-period=0 "
            f"POD` for each, in the run's namespace")


def contracting(image: str | None) -> str:
    return f"the app runs {image}; applying the contract migrations"


def rolled_out_without_contract(image: str | None) -> str:
    return f"the app runs {image}; no contract migration; verifying"


def contract_applied() -> str:
    return "contract migrations applied; verifying"


def verified() -> str:
    return "verified: django_migrations, row counts and checks hold; starting the app"


def restored(path: str, restore: Restore) -> str:
    return f"database restored from {path} ({restore_summary(restore)}); starting the app on the restored database"


def restore_summary(restore: Restore) -> str:
    """What the restore gave back besides the data, and what it could not (the restore script's marker)."""
    kept = restore.get("kept", [])
    database = [word for word in ("owner", "privileges", "comment", "settings") if word in kept]
    parts = [f"kept: the database's {_words(database)}"] if database else []
    if "objectOwners" in kept:
        parts.append("every object keeps its owner")
    elif restore.get("notActingAs"):
        parts.append(f"its objects now belong to the database URL's role, which cannot act as "
                     f"{restore['notActingAs']}")
    if restore.get("refused"):
        parts.append(f"not re-applied: {'; '.join(restore.get('refusedStatements') or [])}")
    if restore.get("attempts", 1) > 1:
        parts.append(f"the server went away during the restore: it ran {restore['attempts']} times, the last one "
                     "whole, from its DROP")
    return "; ".join(parts) or "the data only: the backup holds none of the database's own properties"


# --- failures: what failed, and where the app and the data are ---------------------------------------------------


def backup_failed(job_reason: str | None, log: str) -> str:
    why = "timed out: backup.timeoutSeconds" if job_reason == "DeadlineExceeded" else \
        job_reason or "pg_dump or its verification failed"
    return f"the backup failed ({why}): {tail(log)}; no migration was attempted"


def backup_failed_online(failure: str) -> str:
    return f"{failure}. The app kept serving and the database is as it was"


def migration_failed(timed_out: bool, log: str) -> str:
    """'the migration failed while applying blog.0004_x: SomeError: why': what a person needs to read first.

    Without an exception line (a killed process) the output's tail stands for it; the tail is in
    status.migrateOutput either way.
    """
    lines = log.splitlines()
    failing = [m for m in (_APPLYING.match(line) for line in lines) if m and not m["ok"]]
    errors = [line.strip() for line in lines if _EXCEPTION.match(line.strip())]
    why = "timed out (migrate.timeoutSeconds)" if timed_out else "failed"
    where = f" while {failing[-1]['verb'].lower()} {failing[-1]['migration']}" if failing else ""
    detail = f"{errors[-1]} (the output's tail is in status.migrateOutput)" if errors else tail(log)
    return f"the migration {why}{where}: {detail}"


def online_migration_failed(failure: str, log: str) -> str:
    """Online, PostgreSQL rolled the failing migration back; those before it in the same Job did commit."""
    done = [m["migration"] for m in (_APPLYING.match(line) for line in log.splitlines()) if m and m["ok"]]
    before = f"; applied before it (expand, harmless to the running release): {', '.join(done)}" if done else ""
    return (f"{failure}. PostgreSQL rolled the failing migration back and the app kept serving the release it ran: "
            f"nothing was stopped or restored{before}")


def contract_failed(failure: str, image: str | None) -> str:
    return (f"{failure}. The release {image} serves without the contract changes; the expand migrations stay "
            "applied and nothing was restored (online: a restore would lose the writes made since the backup). "
            "Fix the migration and run again: the plan then holds only what is left")


def rollout_stalled(image: str | None, stalled: list[str]) -> str:
    return (f"the rollout of {image} did not progress ({', '.join(stalled)}: ProgressDeadlineExceeded). The expand "
            "migrations are applied and the contract migrations were not run; the Deployments are as their rollout "
            "left them (`kubectl rollout undo` goes back: expand migrations suit the previous release)")


def not_applied(migration: str, backwards: bool) -> str:
    return f"django_migrations: {migration} is not {'unapplied' if backwards else 'applied'}"


def lost_rows(table: str, before: int, after: int) -> str:
    return f"table {table} lost rows: {before} before, {after} after"


def check_failed(name: str, got: str | None, expected: str) -> str:
    return f"check '{name}' returned {got!r}, expected {expected!r}"


def verification_failed(failures: list[str]) -> str:
    return "verification failed: " + "; ".join(failures)


def verification_failed_online(failure: str, backup_path: str | None) -> str:
    return (f"{failure}. The release serves the migrated database; nothing was restored (online: a restore would "
            f"lose the writes made since the backup {backup_path})")


def kept_as_failed(failure: str, on_failure_keep: bool) -> str:
    """onFailure: Keep, or no backup to restore: the database and the app stay as the failure left them."""
    why = "onFailure is Keep" if on_failure_keep else "backup.enabled is false"
    return (f"{failure}. The database is left as the failure left it ({why}) and the app stays stopped: repair the "
            "database, then scale the app back to status.replicas")


def restoring(failure: str, backup_path: str | None) -> str:
    return f"{failure}; restoring the database from {backup_path or 'the backup'}"


def starting_again(failure: str) -> str:
    return f"{failure}; starting the app again"


def restore_failed(failure: str | None, log: str, path: str, claim: str | None) -> str:
    return (f"{failure or 'the run failed'}; then the restore failed too: {tail(log)}. The app stays stopped (old "
            f"code must not run on a broken schema). The backup is {path} in PersistentVolumeClaim {claim}: restore "
            f"it by hand with `pg_restore --single-transaction --exit-on-error --no-owner -d <database> {path}` into "
            "a recreated database, then scale the app back to status.replicas")


def failed_app_running(failure: str, replicas: dict[str, int], images: dict[str, dict[str, str]],
                       downtime: float, restore: Restore | None) -> str:
    """A failed run whose app runs again; `restore` when the database was restored first."""
    message = (f"{failure.rstrip('.')}. The app runs again ({_replicas(replicas)}){_images(images)} after "
               f"{downtime:.0f}s of downtime")
    if restore is not None:
        message += (f"; the database was restored from the backup taken before the migration "
                    f"({restore_summary(restore)})")
    return message


# --- success -----------------------------------------------------------------------------------------------------


def succeeded(count: int, backwards: bool, downtime: float, replicas: dict[str, int],
              images: dict[str, dict[str, str]]) -> str:
    # Django refuses a plan that goes both ways, so one verb tells the direction of them all.
    verb = "unapplied" if backwards else "applied"
    return (f"{_migrations(count)} {verb}, {downtime:.0f}s downtime; app running ({_replicas(replicas)})"
            f"{_images(images)}")


def succeeded_online(count: int, images: dict[str, dict[str, str]]) -> str:
    return f"{_migrations(count)} applied online, 0s downtime; verified; the app serves{_images(images)}"


# --- the driver's own --------------------------------------------------------------------------------------------


def notification_failed(webhook: str, kind: str, error: str) -> str:
    return f"notify[{webhook}]: the {kind} message was not delivered: {error}; the run goes on"


def database_unreachable(error: str) -> str:
    return f"the database does not answer: {error}; the run goes on once it does"


def forbidden(refusal: str) -> str:
    return (f"the operator was refused: {refusal}; give its ServiceAccount that right again (the chart's RBAC "
            "grants it) and the run goes on")


def leftover_job(name: str, namespace: str, owner_uid: str | None) -> str:
    """Why a Job under this run's name is not this run's: an earlier run's, or one no DjangoMigration owns."""
    delete = f"kubectl delete job {name} -n {namespace}"
    if owner_uid:
        return (f"Job {name} belongs to an earlier DjangoMigration of this name (uid {owner_uid}), which Kubernetes "
                f"is still deleting; the run goes on once it is gone ({delete} if it stays)")
    return (f"Job {name} has this run's name but no DjangoMigration owns it (left behind with --cascade=orphan, or "
            f"made by hand); the run goes on once it is gone: {delete}")


def api_unavailable(what: str) -> str:
    return f"the Kubernetes API {what}; trying again"


def outage_over(seconds: float, reason: str) -> str:
    return f"going on after {seconds:.0f} s: {reason} is over"
