"""What the CRD schema cannot know about a run's spec, checked while it is Pending, before anything is touched.

Do the Deployments, the container, the backup claim, the Secrets and the database exist, and does the database
allow what the run will do? `read_facts` does the reads, `problems` judges them without I/O: each problem names
the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django_migration_operator import database, jobs, messages
from django_migration_operator.database import DatabaseUrl
from django_migration_operator.kube import ClaimState, Kube
from django_migration_operator.resource import RunRef, Spec
from django_migration_operator.window import Window

# A dump is smaller than the database on disk (no indexes, no dead rows, compressed): a claim is refused only when
# it is clearly too small, under a tenth of pg_database_size. keep dumps add up beyond that: only the volume tells.
CLAIM_SIZE_RATIO = 10


@dataclass(frozen=True)
class Facts:
    """What the checks read from the cluster and the database; what could not be read yet is None or empty.

    Nothing is asked of a database whose URL is missing or invalid, and only whether it answers until it does.
    """

    deployments: dict[str, dict[str, Any] | None]  # each of spec.deployments as read; None when not found
    claim: ClaimState | None = None  # spec.backup.volumeClaim, read when backups go to one; None when not found
    missing_webhook_secrets: frozenset[tuple[str, str]] = frozenset()  # (Secret, key) of spec.notify not found
    url: DatabaseUrl | None = field(default=None, repr=False)  # None when its Secret or key is missing
    unreachable: str | None = None  # why a connection to a valid URL failed
    size_bytes: int | None = None  # pg_database_size, read when the claim tells its capacity
    createdb_refused: str | None = None  # why the role may not create databases, asked when a run may need to
    missing_tables: tuple[str, ...] = ()  # of spec.verify.rowCounts


def read_facts(kube: Kube, ref: RunRef, spec: Spec) -> Facts:
    deployments = {name: kube.read_deployment(ref.namespace, name) for name in spec.deployments}
    # Checked now, not when the backup pod waits for it with the app already stopped.
    claim = kube.claim(ref.namespace, spec.backup_claim) if spec.backup_enabled and spec.backup_claim else None
    missing_webhook_secrets = frozenset((hook.secret, hook.key) for hook in spec.notify
                                        if kube.read_secret_key(ref.namespace, hook.secret, hook.key) is None)
    value = kube.read_secret_key(ref.namespace, spec.url_secret, spec.url_key)
    url = DatabaseUrl(value) if value is not None else None
    read = Facts(deployments, claim, missing_webhook_secrets, url)
    if url is None or url.problem():
        return read
    unreachable = database.connection_problem(url)
    if unreachable:
        return replace(read, unreachable=unreachable)
    return replace(read, size_bytes=database.database_size(url) if claim and claim.capacity_bytes is not None else None,
                   createdb_refused=database.createdb_problem(url) if spec.rehearsal or spec.backup_enabled else None,
                   missing_tables=tuple(database.missing_tables(url, spec.row_count_tables)))


def problems(ref: RunRef, spec: Spec, facts: Facts) -> list[str]:
    """Every problem of the spec against the facts, in the order of the spec; none about the database until its
    URL is valid and it answers."""
    found = []
    if spec.window:
        try:
            Window.from_spec(spec.window)
        except ValueError as error:
            found.append(str(error))
    for name in spec.deployments:
        deployment = facts.deployments[name]
        if deployment is None:
            field = "app.deployment" if name == spec.deployment else "app.stop"
            found.append(messages.deployment_not_found(field, name, ref.namespace))
        elif name == spec.deployment:
            try:
                jobs.plan_job(ref, spec, deployment["spec"]["template"])
            except ValueError as error:
                found.append(str(error))
    if spec.backup_enabled and spec.backup_claim:
        # A Pending claim may be waiting for its first consumer (WaitForFirstConsumer): the backup pod is that one.
        if facts.claim is None:
            found.append(messages.claim_not_found(spec.backup_claim, ref.namespace))
        elif facts.claim.phase == "Lost":
            found.append(messages.claim_lost(spec.backup_claim))
    for hook in spec.notify:
        if (hook.secret, hook.key) in facts.missing_webhook_secrets:
            found.append(messages.webhook_secret_not_found(hook.name, hook.secret, hook.key, ref.namespace))
    url = facts.url
    if url is None:
        return [*found, messages.url_secret_not_found(spec.url_secret, spec.url_key, ref.namespace)]
    invalid = url.problem()
    if invalid:
        return [*found, messages.url_invalid(spec.url_secret, spec.url_key, invalid)]
    if facts.unreachable:
        return [*found, messages.cannot_connect(spec.url_secret, url.name, facts.unreachable)]
    capacity = facts.claim.capacity_bytes if facts.claim else None
    if capacity is not None and facts.size_bytes is not None and capacity * CLAIM_SIZE_RATIO < facts.size_bytes:
        found.append(messages.claim_too_small(str(spec.backup_claim), capacity, url.name, facts.size_bytes))
    if facts.createdb_refused and spec.backup_enabled and spec.on_failure == "Restore":
        found.append(messages.restore_impossible(facts.createdb_refused))
    if facts.createdb_refused and spec.rehearsal:
        found.append(messages.rehearsal_impossible(facts.createdb_refused))
    found += [messages.table_not_found(table, url.name) for table in facts.missing_tables]
    return found
