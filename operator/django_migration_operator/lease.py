"""One run per database: who holds its Lease, whether that run still goes on, and taking over a stale Lease.

kube.py makes the Lease calls; this module judges what they read. A Lease whose run ended or is gone is stale and
taken over, at the version judged so; a live holder's Lease is never overwritten.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException

from django_migration_operator.kube import Kube
from django_migration_operator.resource import RunRef
from django_migration_operator.workflow import TERMINAL


def holders(kube: Kube, run: RunRef, database_id: str) -> tuple[str | None, bool]:
    """Another run, still going, that holds the database's Lease (None when it is free, ours, or stale); and
    whether `run` holds it."""
    lease = kube.lease_holder(database_id)
    holder = lease.holder if lease else None
    return _live_other_holder(kube, run, holder), holder == run.key


def take(kube: Kube, run: RunRef, database_id: str, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Takes the database's Lease for `run` when it is free or stale; the run looks again either way."""
    lease = kube.lease_holder(database_id)
    # Taken over only from a run that ended or is gone, at the version judged so; a live holder keeps it, and so
    # does a run that took it over meanwhile (this run then queues).
    free = lease is None or _live_other_holder(kube, run, lease.holder) is None
    if free and not kube.acquire_lease(run, database_id, lease.version if lease else None):
        logger.info("the database's Lease changed since it was read: another run won it; looking again")


def _live_other_holder(kube: Kube, run: RunRef, holder: str | None) -> str | None:
    """`holder` (namespace/name) when it is another run that still goes on; None when free, ours, or stale."""
    if not holder or holder == run.key:
        return None
    namespace, _, name = holder.rpartition("/")
    try:
        other = kube.read_run(namespace or run.namespace, name)
    except ApiException as error:
        if error.status == 403:
            return holder  # a run in a namespace this operator may not read: assume it goes on
        raise
    if other is None or (other.get("status") or {}).get("phase") in TERMINAL:
        return None  # a stale Lease: its run ended or is gone
    return holder
