"""What the CRD schema cannot know about a run's spec, checked while it is Pending, before anything is touched.

Do the Deployments, the container, the backup claim, the Secrets and the database exist, and does the database
allow what the run will do? Each problem names the field and the fix.
"""

from __future__ import annotations

from django_migration_operator import database, jobs
from django_migration_operator.database import DatabaseUrl
from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef, Spec
from django_migration_operator.window import Window

# A dump is smaller than the database on disk (no indexes, no dead rows, compressed): a claim is refused only when
# it is clearly too small, under a tenth of pg_database_size. keep dumps add up beyond that: only the volume tells.
CLAIM_SIZE_RATIO = 10


def validate(kube: Kube, ref: RunRef, spec: Spec) -> list[str]:
    """What the schema cannot know: do the Deployments, the container, the Secret and the database exist?"""
    problems = []
    if spec.window:
        try:
            Window.from_spec(spec.window)
        except ValueError as error:
            problems.append(str(error))
    backup_claim = None
    for name in spec.deployments:
        deployment = kube.read_deployment(ref.namespace, name)
        field = "app.deployment" if name == spec.deployment else "app.stop"
        if deployment is None:
            problems.append(f"{field}: Deployment '{name}' not found in namespace {ref.namespace}; "
                            "create it or correct the name")
        elif name == spec.deployment:
            try:
                jobs.plan_job(ref, spec, deployment["spec"]["template"])
            except ValueError as error:
                problems.append(str(error))
    if spec.backup_enabled and spec.backup_claim:
        # Checked here, not when the backup pod waits for it with the app already stopped. A Pending claim may be
        # waiting for its first consumer (WaitForFirstConsumer): the backup pod is that consumer.
        claim = f"backup.volumeClaim: PersistentVolumeClaim '{spec.backup_claim}'"
        backup_claim = kube.claim(ref.namespace, spec.backup_claim)
        phase = backup_claim.phase if backup_claim else None
        if phase is None:
            problems.append(f"{claim} not found in namespace {ref.namespace}; create it, or name the claim the "
                            "dumps go to")
        elif phase == "Lost":
            problems.append(f"{claim} is Lost (its volume is gone); recreate the claim or name another one")
    for hook in spec.notify:
        if kube.read_secret_key(ref.namespace, hook.secret, hook.key) is None:
            problems.append(f"notify[{hook.name}].urlSecret: Secret '{hook.secret}' or its key '{hook.key}' not "
                            f"found in namespace {ref.namespace}; create it, or remove the webhook")
    secret = f"database.urlSecret: Secret '{spec.url_secret}'"
    value = kube.read_secret_key(ref.namespace, spec.url_secret, spec.url_key)
    if value is None:
        problems.append(f"{secret} or its key '{spec.url_key}' not found in namespace {ref.namespace}; "
                        "create it, or name the Secret and key that hold the DATABASE_URL")
        return problems
    url = DatabaseUrl(value)
    if url.problem():
        problems.append(f"{secret}, key '{spec.url_key}' {url.problem()}; store a postgres:// URL there")
        return problems
    unreachable = database.connection_problem(url)
    if unreachable:
        problems.append(f"{secret}: cannot connect to database '{url.name}': {unreachable}; "
                        "fix the URL in the Secret or make the database reachable")
        return problems
    capacity = backup_claim.capacity_bytes if spec.backup_enabled and backup_claim else None
    if capacity is not None:
        size = database.database_size(url)
        if capacity * CLAIM_SIZE_RATIO < size:
            problems.append(f"backup.volumeClaim: PersistentVolumeClaim '{spec.backup_claim}' holds "
                            f"{_mebibytes(capacity)}, too small for a dump of database '{url.name}' "
                            f"({_mebibytes(size)} on disk); a claim of half that ({_mebibytes(size // 2)}) holds a "
                            "few dumps: resize it, or name a bigger one")
    refused = database.createdb_problem(url) if spec.rehearsal or spec.backup_enabled else None
    if refused and spec.backup_enabled and spec.on_failure == "Restore":
        problems.append(f"onFailure: Restore is impossible: {refused}, so a restore could not recreate it; grant "
                        "CREATEDB to that role, or set onFailure: Keep")
    if refused and spec.rehearsal:
        problems.append(f"rehearsal.enabled: a rehearsal needs a scratch database, but {refused}; grant CREATEDB to "
                        "that role, or set rehearsal.enabled: false")
    for table in database.missing_tables(url, spec.row_count_tables):
        problems.append(f"verify.rowCounts: table '{table}' does not exist in database '{url.name}'; "
                        "remove it or name an existing table")
    return problems


def _mebibytes(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"
