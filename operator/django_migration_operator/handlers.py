"""The kopf layer: registration, the caches' feeds and wake-ups only. The run itself is in driver.py and workflow.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from logging import Logger, LoggerAdapter
from typing import Any

import kopf

from django_migration_operator import driver
from django_migration_operator.admission import Admission
from django_migration_operator.kube import Kube, WatchCache
from django_migration_operator.resource import GROUP, PLURAL, RUN_LABEL, VERSION, RunRef
from django_migration_operator.workflow import TERMINAL


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping lives under the project's prefix, not kopf.zalando.org.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # events are posted by the driver, deliberately
    settings.watching.server_timeout = 300
    # A driver asked to stop reads the run once and returns: wait for that before looking again (see `run`).
    settings.background.instant_exit_timeout = 1.0
    logging.getLogger("kopf.objects").addFilter(_quiet_wakeups)
    memo.kube = Kube(lease_namespace=memo.get("lease_namespace"))
    memo.wakeups = driver.Wakeups()
    memo.admission = Admission(memo.get("max_stopped_apps", 0), memo.get("max_planning_runs", 0))
    # Before any driver starts: the apps a previous operator left stopped hold their slots from the first look on.
    memo.admission.seed((f"{run['metadata']['namespace']}/{run['metadata']['name']}", run.get("status") or {})
                        for run in memo.kube.list_runs(memo.get("namespaces", [])))


def _unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


# Only unfinished runs get a driver. A finished run then needs no finalizer and kopf removes it: a namespace being
# deleted never waits on one (kopf stops watching a terminating namespace before it would release it).
# No cancellation timeout: kopf never cancels the driver, which decides itself when to stop (driver.Stop).
# kopf looks again every second whether a stopped driver has ended, to release a deleted run's finalizer promptly.
@kopf.daemon(GROUP, VERSION, PLURAL, when=_unfinished, cancellation_polling=1.0)
async def run(name: str, namespace: str | None, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped,
              logger: Logger | LoggerAdapter[Any], **_: Any) -> None:
    """The one driver of a DjangoMigration: it returns once the run reached Succeeded or Failed."""
    ref = RunRef(namespace or "", name, uid)

    def stopping() -> driver.Stop | None:
        if not stopped.reason:
            return None
        return driver.Stop.LEAVE if stopped.reason & _LEAVE else driver.Stop.DELETED

    async def wake_when_stopped() -> None:
        await stopped.wait()
        memo.wakeups.wake(ref.namespace, ref.name)

    waker = asyncio.create_task(wake_when_stopped())
    try:
        await driver.drive(memo.kube, memo.wakeups, memo.admission, ref, logger, stopping)
    finally:
        waker.cancel()


_LEAVE = (kopf.DaemonStoppingReason.OPERATOR_EXITING | kopf.DaemonStoppingReason.OPERATOR_PAUSING
          | kopf.DaemonStoppingReason.FILTERS_MISMATCH)


def _run_in_namespace(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return bool(memo.wakeups.active_in(namespace or ""))


def _pods_counted_in_namespace(namespace: str | None, memo: kopf.Memo, **_: Any) -> bool:
    return bool(memo.wakeups.counts_pods_in(namespace or ""))


def _keep(cache: WatchCache, namespace: str | None, name: str | None, type: str | None, body: kopf.Body) -> None:
    """An object's event into the cache the runs' looks read (kube.WatchCache) instead of the API."""
    if type == "DELETED":
        cache.gone(namespace or "", name or "")
    else:
        cache.saw(namespace or "", name or "", dict(body))


# Only in the namespaces where a run is driven: no run would read the others, and no event would update them.
# The wake-ups are coroutines: they only set an event, cheaper in the loop than through a thread.
@kopf.on.event(GROUP, VERSION, PLURAL, when=_run_in_namespace)
async def run_changed(namespace: str | None, name: str | None, type: str | None, body: kopf.Body, memo: kopf.Memo,
                      **_: Any) -> None:
    _keep(memo.kube.runs, namespace, name, type, body)


# A run's Jobs and their pods wake that run: it reads a Job's end from its pod's, a second before the Job's condition.
@kopf.on.event("batch", "v1", "jobs", labels={RUN_LABEL: kopf.PRESENT}, when=_run_in_namespace)
async def job_changed(namespace: str | None, name: str | None, type: str | None, labels: Mapping[str, str],
                      body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _keep(memo.kube.jobs, namespace, name, type, body)
    memo.wakeups.wake(namespace or "", labels[RUN_LABEL])


@kopf.on.event("", "v1", "pods", labels={RUN_LABEL: kopf.PRESENT}, when=_run_in_namespace)
async def job_pod_changed(namespace: str | None, name: str | None, type: str | None, labels: Mapping[str, str],
                          body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _keep(memo.kube.pods, namespace, name, type, body)
    memo.wakeups.wake(namespace or "", labels[RUN_LABEL])


@kopf.on.event("apps", "v1", "deployments", when=_run_in_namespace)
async def deployment_changed(namespace: str | None, name: str | None, type: str | None, body: kopf.Body,
                             memo: kopf.Memo, **_: Any) -> None:
    """A Deployment scaling or rolling out: the runs of the namespace look again."""
    _keep(memo.kube.deployments, namespace, name, type, body)
    memo.wakeups.wake(namespace or "")


@kopf.on.event("", "v1", "pods", labels={RUN_LABEL: kopf.ABSENT}, when=_pods_counted_in_namespace)
async def app_pod_changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """While a run waits for the app's pods to go (ScalingDown), their events wake the namespace's runs. Every other
    pod event would only cost each run a look."""
    memo.wakeups.wake(namespace or "")


_WAKEUP_HANDLERS = ("'run_changed'", "'job_changed'", "'job_pod_changed'", "'deployment_changed'",
                    "'app_pod_changed'")


def _quiet_wakeups(record: logging.LogRecord) -> bool:
    """Drops kopf's "Handler ... succeeded" lines of the caches and wake-ups: one per event, they bury the run."""
    return not (record.levelno <= logging.INFO and any(name in record.getMessage() for name in _WAKEUP_HANDLERS))
