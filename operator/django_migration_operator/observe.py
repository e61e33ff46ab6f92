"""What the driver looks at before each step: the `World` the current phase decides on, and nothing else.

kube.py and database.py read; this module says what the reads mean: a Deployment rolled out, a Job ended (by its
pod's end), why its pod has not started, which output is the Job's.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from django_migration_operator import database, jobs, lease, messages, validation
from django_migration_operator.database import DatabaseUrl
from django_migration_operator.kube import Kube
from django_migration_operator.resource import KIND, RunRef, Spec
from django_migration_operator.status import RunStatus
from django_migration_operator.workflow import PHASES, WAITING_FOR_SLOT, Phase, phase_of, queued_for
from django_migration_operator.world import DeploymentState, EndingPod, JobState, World

Pod = dict[str, Any]  # a pod as the API answers it
TERMINAL_POD_PHASES = ("Succeeded", "Failed")  # set by the kubelet once every container stopped for good


def observe(kube: Kube, ref: RunRef, spec: Spec, status: RunStatus) -> World:
    """Reads what the current phase decides on, and nothing else."""
    phase = phase_of(status)
    facts = PHASES[phase]
    now = datetime.now(UTC)
    if phase == Phase.PENDING:
        problems = validation.problems(ref, spec, validation.read_facts(kube, ref, spec))
        if problems:
            return World(now=now, problems=tuple(problems))
    # Read from its Secret only when a phase uses the database: most looks at a run do not.
    url = functools.cache(lambda: database_url(kube, ref, spec))
    # A run queued for a slot holds its Lease already.
    if facts.reads_lease and not queued_for(status, WAITING_FOR_SLOT):
        other, ours = lease.holders(kube, ref, url().identity)
        return World(now=now, lease_holder=other, lease_ours=ours,
                     server_major=database.server_major(url()) if phase == Phase.PENDING else None)
    deployments = {}
    # The first look of ScalingDown and of RollingOut records the containers' images (and the app's size) and acts:
    # the pods are counted from the next look on (two lists fewer before the app stops).
    count_pods = facts.counts_pods and "images" in status
    if facts.reads_app:
        for name in spec.deployments:
            state = deployment_state(kube, ref.namespace, name, count_pods)
            if state is not None:
                deployments[name] = state
    # A step's Job is recorded in status.jobs before it is created, so one not recorded yet is not there: no GET.
    recorded_job = facts.job if facts.job in status.get("jobs", {}) else None
    job = job_state(kube, ref, jobs.job_name(ref, recorded_job)) if recorded_job else None
    row_counts = applied = checks = None
    spec_checks = {check.name: check.sql for check in spec.checks}
    if facts.rehearses:
        scratch = jobs.scratch_name(ref)
        exists = database.database_exists(url(), scratch)
        if exists and job and job.finished == "Complete" and "outcome" not in (status.get("rehearsal") or {}):
            # Verified as production would be, on the copy.
            found = database.verification(url().with_name(scratch), spec.row_count_tables, spec_checks)
            row_counts, applied, checks = found.row_counts, found.applied, found.check_results
        return World(now=now, job=job, scratch_exists=exists, row_counts=row_counts, applied=applied,
                     check_results=checks)
    if facts.verifies:
        found = database.verification(url(), spec.row_count_tables, spec_checks)
        row_counts, applied, checks = found.row_counts, found.applied, found.check_results
    elif facts.counts_rows and "rowCounts" not in status and not (facts.counts_pods and _app_running(deployments)):
        row_counts = database.row_counts(url(), spec.row_count_tables)
    return World(now=now, deployments=deployments, job=job, row_counts=row_counts, applied=applied,
                 check_results=checks)


def database_url(kube: Kube, ref: RunRef, spec: Spec) -> DatabaseUrl:
    """The run's database, from its Secret: there since Pending checked it, so its absence is an error."""
    value = kube.read_secret_key(ref.namespace, spec.url_secret, spec.url_key)
    if value is None:
        raise RuntimeError(f"database.urlSecret: Secret '{spec.url_secret}' key '{spec.url_key}' "
                           "disappeared during the run")
    return DatabaseUrl(value)


def deployment_state(kube: Kube, namespace: str, name: str, count_pods: bool) -> DeploymentState | None:
    """The Deployment as read; its pods, terminating ones included, are listed only when `count_pods`."""
    deployment = kube.read_deployment(namespace, name)
    if deployment is None:
        return None
    spec, status = deployment["spec"], deployment.get("status", {})
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"].get("matchLabels", {}).items())
    # A pod in a terminal phase runs no container (the kubelet sets the phase once they stopped), yet may stay:
    # evicted pods until garbage-collected, a deleted one held by a finalizer. Waiting for it would never end.
    listed = [pod for pod in kube.list_pods(namespace, selector)
              if _status(pod).get("phase") not in TERMINAL_POD_PHASES] if count_pods else None
    pods = len(listed) if listed is not None else None
    serving = sum(_ready(pod) for pod in listed) if listed is not None else None
    ending = tuple(EndingPod(pod["metadata"]["name"], datetime.fromisoformat(pod["metadata"]["deletionTimestamp"]))
                   for pod in listed or () if pod["metadata"].get("deletionTimestamp"))
    replicas = int(spec.get("replicas", 1))
    rolled_out = (status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
                  and status.get("updatedReplicas", 0) >= replicas and status.get("replicas", 0) == replicas)
    images = {c["name"]: c.get("image", "") for c in spec["template"]["spec"].get("containers", [])}
    stalled = any(c.get("type") == "Progressing" and c.get("status") == "False"
                  and c.get("reason") == "ProgressDeadlineExceeded" for c in status.get("conditions") or [])
    return DeploymentState(replicas=replicas, pods=pods, serving=serving,
                           available=int(status.get("availableReplicas", 0)), rolled_out=rolled_out,
                           scaled_by=_replicas_manager(deployment), images=images, stalled=stalled, ending=ending)


def _ready(pod: Pod) -> bool:
    """The pod's Ready condition, which the kubelet keeps while a terminating pod's readiness probe passes: what
    an EndpointSlice calls serving."""
    return any(condition.get("type") == "Ready" and condition.get("status") == "True"
               for condition in _status(pod).get("conditions") or [])


class LeftoverJob(Exception):
    """The step's Job name is held by a Job that is not this run's: an earlier DjangoMigration's of the same name (a
    Helm hook deletes and creates its run again under one name) that the garbage collector has not deleted yet, or
    one no DjangoMigration owns. Its output is another release's. The run waits for it to go (driver.transient)."""


def job_state(kube: Kube, ref: RunRef, name: str) -> JobState | None:
    job = kube.read_job(ref.namespace, name)
    if job is None:
        return None
    owners = job["metadata"].get("ownerReferences") or []
    if not any(owner.get("uid") == ref.uid for owner in owners):
        earlier = next((str(owner.get("uid")) for owner in owners if owner.get("kind") == KIND), None)
        raise LeftoverJob(messages.leftover_job(name, ref.namespace, earlier))
    finished = reason = None
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            finished, reason = condition["type"], condition.get("reason")
    pods = kube.job_pods(ref.namespace, job)
    if finished is None:
        finished = _ended_by_itself(pods)
    return JobState(finished=finished, reason=reason, log=_last_pod_log(kube, ref.namespace, pods) if finished else "",
                    created=datetime.fromisoformat(job["metadata"]["creationTimestamp"]),
                    not_started=None if finished else _not_started(pods))


def _app_running(deployments: dict[str, DeploymentState]) -> bool:
    """Some pod of the app is still there (or no Deployment was found): no count of its rows means anything yet."""
    return not deployments or any(state.pods != 0 for state in deployments.values())


def _replicas_manager(deployment: dict[str, Any]) -> str | None:
    """Who last set spec.replicas, from managedFields (server-side field ownership)."""
    for entry in reversed(deployment["metadata"].get("managedFields") or []):
        fields = entry.get("fieldsV1", {}).get("f:spec", {})
        if "f:replicas" in fields:
            return str(entry.get("manager"))
    return None


def _ended_by_itself(pods: list[Pod]) -> str | None:
    """"Complete" or "Failed" as soon as the Job's one pod ended by itself; None while it runs or is stopped.

    One pod, never retried (backoffLimit 0): its end is the Job's. The Job controller batches its status writes for
    up to a second; waiting for them would add that to the downtime twice. A pod the Job controller stops
    (activeDeadlineSeconds ran out: it deletes the pod) still waits for the Job's condition, whose reason
    (DeadlineExceeded) tells a timeout apart.
    """
    for pod in pods:
        phase = _status(pod).get("phase")
        if pod["metadata"].get("deletionTimestamp") is None and phase in TERMINAL_POD_PHASES:
            return "Complete" if phase == "Succeeded" else "Failed"
    return None


def _last_pod_log(kube: Kube, namespace: str, pods: list[Pod]) -> str:
    """The output of the Job's pod: each initContainer's that ran (the rehearsal's copy), then its container's; or,
    when the pod succeeded with one container that left a termination message (the backup's marker), that message,
    which came with the pod's event: no request for the log through the kubelet while the app is down."""
    if not pods:
        return ""
    # RFC 3339 in UTC, to the second: the text sorts as the time does.
    pod = max(pods, key=lambda p: str(p["metadata"]["creationTimestamp"]))
    message = _termination_message(pod)
    if message:
        return message
    ran = [status["name"] for status in _status(pod).get("initContainerStatuses") or [] if _ran(status)]
    logs, missing = [], ""
    for container in [*ran, pod["spec"]["containers"][0]["name"]]:
        try:
            logs.append(kube.read_pod_log(namespace, pod["metadata"]["name"], container))
        except ApiException as error:  # a container that never started has no log: its status says why
            missing = f"(no log: {error.reason})"
    return "\n".join(log.rstrip("\n") for log in logs if log) or _pod_problem(pod) or missing


def _termination_message(pod: Pod) -> str:
    """The message of a succeeded pod's one container, nothing for any other pod (a failure's is only a log tail)."""
    statuses = _status(pod).get("containerStatuses") or []
    if _status(pod).get("phase") != "Succeeded" or pod["spec"].get("initContainers") or len(statuses) != 1:
        return ""
    return str(((statuses[0].get("state") or {}).get("terminated") or {}).get("message") or "")


def _not_started(pods: list[Pod]) -> str | None:
    """Why the Job's pod has not started yet, in the words of the scheduler or the kubelet; None once it runs."""
    live = [pod for pod in pods if pod["metadata"].get("deletionTimestamp") is None]
    if not live:
        return "the Job controller has created no pod"
    pod = live[0]
    if _status(pod).get("phase") != "Pending" or any(_ran(status) for status in _container_statuses(pod)):
        return None  # a container ran: the pod started, and the step's own deadline bounds it from here
    for condition in _status(pod).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".strip(": ")
    return _pod_problem(pod) or "Pending"


def _pod_problem(pod: Pod) -> str | None:
    """The first container that waits for a reason of its own (PodInitializing only says an initContainer runs)."""
    for status in _container_statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip()
    return None


def _status(pod: Pod) -> dict[str, Any]:
    status: dict[str, Any] = pod.get("status") or {}
    return status


def _container_statuses(pod: Pod) -> list[dict[str, Any]]:
    """The initContainers' statuses, then the containers'."""
    return [*(_status(pod).get("initContainerStatuses") or []), *(_status(pod).get("containerStatuses") or [])]


def _ran(container_status: dict[str, Any]) -> bool:
    """Whether the container runs or ran: its state names running or terminated (present, even when empty)."""
    state = container_status.get("state") or {}
    return state.get("running") is not None or state.get("terminated") is not None
