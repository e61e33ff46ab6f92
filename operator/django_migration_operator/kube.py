"""Every Kubernetes API call of the operator: runs, Deployments, pods, Jobs and their logs, Secrets, Leases, events.

I/O only: what the answers mean is observe.py's and lease.py's to say.

The `kubernetes` client is synchronous; the driver calls these functions through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from django_migration_operator.resource import GROUP, KIND, PLURAL, RUN_LABEL, RUN_NAMESPACE_LABEL, VERSION, RunRef
from django_migration_operator.status import RunStatus

LEASE_PREFIX = "djangoops-db-"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Named in managedFields, so `kubectl get -o yaml --show-managed-fields` tells the operator's writes apart.
FIELD_MANAGER = "django-migration-operator"
# The client's name in the API server's audit log (kopf's own requests say kopf/<version>).
USER_AGENT = "django-migration-operator"
# The end of a log is what counts: the marker line is the last one, and a failure shows at the end.
LOG_TAIL_LINES = 400
# An event's name is <run>.<16 hex digits>, at most 253 characters.
_EVENT_PREFIX_LENGTH = 253 - 17


@dataclass(frozen=True)
class ClaimState:
    phase: str  # Pending, Bound or Lost
    capacity_bytes: int | None  # the bound volume's capacity, else the claim's request; None when neither says


@dataclass(frozen=True)
class LeaseRecord:
    """A database's Lease as read: who holds it, and the version that says so."""

    holder: str  # the run (namespace/name); empty when the Lease names no one
    version: str  # metadata.resourceVersion: a take-over replaces exactly this one, or fails


class Kube:
    """A thin, typed facade over the API groups the operator uses."""

    def __init__(self, lease_namespace: str | None = None, api_client: client.ApiClient | None = None) -> None:
        in_cluster = api_client is None and _load_config()
        api_client = api_client or client.ApiClient()
        api_client.user_agent = USER_AGENT
        # One namespace holds the Leases of every run, so two runs on one database in different namespaces are
        # serialised too: the operator's own namespace in a cluster, "default" outside (or as configured).
        self.lease_namespace = lease_namespace or (_own_namespace() if in_cluster else None) or "default"
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    # --- the DjangoMigration ------------------------------------------------------------------------------

    def read_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = _unless_absent(self.custom.get_namespaced_custom_object, GROUP, VERSION,
                                                     namespace, PLURAL, name)
        return body

    def list_runs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every DjangoMigration in the namespaces, or in the cluster when none are named."""
        if not namespaces:
            return list(self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
        return [run for namespace in namespaces
                for run in self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]]

    def patch_run_status(self, run: RunRef, status: RunStatus) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, run.namespace, PLURAL, run.name,
                                                          {"status": status})

    def post_event(self, run: RunRef, reason: str, message: str, warning: bool) -> None:
        now = datetime.now(UTC)
        # Named as Kubernetes' own event recorder names them, <object>.<UnixNano in hex>: kubectl describe sorts by
        # lastTimestamp, whole seconds, and keeps the API's order (by name) among events of one second, so a
        # run's events of one second still read in the order they were posted.
        self.core.create_namespaced_event(run.namespace, client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{run.name[:_EVENT_PREFIX_LENGTH]}.{time.time_ns():x}"),
            involved_object=client.V1ObjectReference(api_version=f"{GROUP}/{VERSION}", kind=KIND,
                                                     name=run.name, namespace=run.namespace, uid=run.uid),
            reason=reason, message=message[:1024], type="Warning" if warning else "Normal",
            first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="django-migration-operator"),
            reporting_component="djangoops.dev/django-migration-operator", reporting_instance="operator"))

    # --- Deployments and their pods -----------------------------------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        deployment = _unless_absent(self.apps.read_namespaced_deployment, name, namespace)
        if deployment is None:
            return None
        result: dict[str, Any] = self.apps.api_client.sanitize_for_serialization(deployment)
        return result

    def list_pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        pods: list[client.V1Pod] = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return pods

    def scale_deployment(self, namespace: str, name: str, replicas: int, images: dict[str, str]) -> None:
        """Sets spec.replicas and, in the same patch, the images of the named containers: one rollout, so no pod
        starts on an image the run does not want."""
        if not images:
            self.apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}},
                                                        field_manager=FIELD_MANAGER)
            return
        self._patch_deployment(namespace, name, {"replicas": replicas, **_containers_patch(images)})

    def set_images(self, namespace: str, name: str, images: dict[str, str]) -> None:
        """Sets the images of the named containers: the Deployment rolls out with its own strategy."""
        self._patch_deployment(namespace, name, _containers_patch(images))

    def _patch_deployment(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        # A strategic merge patch: containers merge by name, the other fields of each stay as they are.
        self.apps.patch_namespaced_deployment(name, namespace, {"spec": spec}, field_manager=FIELD_MANAGER)

    # --- the backup claim ---------------------------------------------------------------------------------

    def claim(self, namespace: str, name: str) -> ClaimState | None:
        """The PersistentVolumeClaim's phase and capacity; None when there is no such claim."""
        claim = _unless_absent(self.core.read_namespaced_persistent_volume_claim, name, namespace)
        if claim is None:
            return None
        status = claim.status
        # The bound volume's capacity, or what the claim asks for while it waits for one.
        size = ((status.capacity if status else None) or {}).get("storage") or \
            ((claim.spec.resources.requests if claim.spec.resources else None) or {}).get("storage")
        return ClaimState(phase=(status.phase if status else None) or "Pending",
                          capacity_bytes=int(parse_quantity(size)) if size else None)

    # --- Secrets ------------------------------------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """The value, or None when the Secret or the key is missing. Never logged, never stored."""
        secret = _unless_absent(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        encoded = (secret.data or {}).get(key)
        return base64.b64decode(encoded).decode() if encoded is not None else None

    # --- Jobs -------------------------------------------------------------------------------------------

    def create_job(self, manifest: dict[str, Any]) -> None:
        try:
            self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest)
        except ApiException as error:
            if error.status != 409:  # already created before a restart: the same deterministic Job
                raise

    def read_job(self, namespace: str, name: str) -> client.V1Job | None:
        return _unless_absent(self.batch.read_namespaced_job, name, namespace)

    def delete_job(self, namespace: str, name: str) -> None:
        """Deletes the Job and, before it goes, its pod (foreground); an absent Job is already deleted."""
        _unless_absent(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Foreground")

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        """The end of one container's log; ApiException when it has none (it never started)."""
        log: str = self.core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=LOG_TAIL_LINES)
        return log

    # --- the one-run-per-database Lease -------------------------------------------------------------------

    def lease_holder(self, database_id: str) -> LeaseRecord | None:
        """The database's Lease: its holder and version; None when there is none."""
        lease = _unless_absent(self.coordination.read_namespaced_lease, _lease_name(database_id), self.lease_namespace)
        if lease is None:
            return None
        return LeaseRecord(holder=lease.spec.holder_identity or "", version=lease.metadata.resource_version)

    def acquire_lease(self, run: RunRef, database_id: str, stale_version: str | None) -> bool:
        """Creates the Lease naming this run, or replaces the one at `stale_version`; True when this run won.

        Both are atomic on the server: of two runs that race, one wins. The other gets 409 (or 404: the stale
        Lease was deleted meanwhile) and False, looks again, and queues behind a winner it finds.
        """
        name = _lease_name(database_id)
        now = datetime.now(UTC)
        spec = client.V1LeaseSpec(holder_identity=run.key, acquire_time=now, renew_time=now)
        # The version read when the holder was judged stale, not a fresh read: that one may be a live winner's.
        metadata = client.V1ObjectMeta(name=name, labels={RUN_LABEL: run.name, RUN_NAMESPACE_LABEL: run.namespace},
                                       resource_version=stale_version)
        lease = client.V1Lease(metadata=metadata, spec=spec)
        if stale_version is None:
            return _written(self.coordination.create_namespaced_lease, self.lease_namespace, lease)
        return _written(self.coordination.replace_namespaced_lease, name, self.lease_namespace, lease)

    def release_lease(self, run: RunRef) -> None:
        """Deletes the Lease this run holds, found by its labels: the database URL's Secret may be gone by now."""
        selector = f"{RUN_LABEL}={run.name},{RUN_NAMESPACE_LABEL}={run.namespace}"
        for lease in self.coordination.list_namespaced_lease(self.lease_namespace, label_selector=selector).items:
            if lease.spec.holder_identity != run.key:
                continue  # taken over since: no longer ours
            # Deleted only at the version listed: one taken over or gone since is not ours to delete.
            _written(self.coordination.delete_namespaced_lease, lease.metadata.name, self.lease_namespace,
                     body=client.V1DeleteOptions(preconditions=client.V1Preconditions(
                         resource_version=lease.metadata.resource_version)))


def _unless_absent(call: Callable[..., Any], *arguments: Any, **options: Any) -> Any:
    """`call(*arguments, **options)`, or None when the API answers 404: how every call tells a missing object apart."""
    try:
        return call(*arguments, **options)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _written(call: Callable[..., Any], *arguments: Any, **options: Any) -> bool:
    """Whether the write `call(*arguments, **options)` went through; False when its object changed since it was
    read (409) or went (404)."""
    try:
        return _unless_absent(call, *arguments, **options) is not None
    except ApiException as error:
        if error.status == 409:
            return False
        raise


def _load_config() -> bool:
    """Loads the in-cluster configuration, or the kubeconfig outside a cluster; True in a cluster."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
        return False
    return True


def _own_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _lease_name(database_id: str) -> str:
    # The identity holds host, port and database name: hashed, it is a valid name and reveals nothing.
    return LEASE_PREFIX + hashlib.sha256(database_id.encode()).hexdigest()[:16]


def _containers_patch(images: dict[str, str]) -> dict[str, Any]:
    return {"template": {"spec": {"containers": [{"name": container, "image": image}
                                                 for container, image in images.items()]}}}

