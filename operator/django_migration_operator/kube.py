"""Every Kubernetes API call of the operator: runs, Deployments, pods, Jobs and their logs, Secrets, Leases, events.

I/O only: what the answers mean is observe.py's and lease.py's to say.

Requests go through the `kubernetes` package's transport (`ApiClient`: its configuration, authentication and urllib3
pool), never its generated API classes or models, which cost ~110 MiB of memory once imported (docs/architecture.md).
Every answer is the API's JSON as a dict. The transport is synchronous; the driver calls these functions through
`asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.client.api_client import ApiClient
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
# The Content-Type of each patch, as the generated client sends it: a JSON merge patch for a custom resource (which has
# no strategic merge), a strategic merge patch for built-in kinds (containers merge by name).
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# The RBAC verb of a request -> its HTTP method: the calls name the verb, so the chart's rules can be read off them.
HTTP_METHODS = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH", "update": "PUT", "delete": "DELETE"}
# The one resource whose answer is text, not JSON.
TEXT_RESOURCES = frozenset({"pods/log"})
RUNS_API = f"{GROUP}/{VERSION}"  # the DjangoMigrations' apiVersion
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


class WatchCache:
    """Objects of one kind in the namespaces where a run is driven, as kopf's watch last delivered them: a look at a
    run reads them here instead of a GET each (bench/scale.py: the Deployments' GETs were 58 of a run's 181 requests;
    at 20 runs, the run's, its Jobs' and their pods' about 70 of the 129 left).

    Newer wins, by metadata.resourceVersion, which Kubernetes makes comparable as an integer (KEP-5504, stable in
    1.35; etcd's revision in every version before): a late event never hides a newer one, nor the operator's own
    write, whose answer is kept as seen, or as a floor (`patched`) when it carries only a version. A version that is
    not a decimal integer is never cached.
    """

    def __init__(self) -> None:
        # (namespace, name) -> (version, body); body None: at least this version exists (patched), not yet seen.
        self._entries: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._entries.get((namespace, name), (0, None))[1]

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        return [body for (entry_namespace, _), (_, body) in self._entries.items()
                if entry_namespace == namespace and body is not None]

    def saw(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """An object as an event or a read showed it: kept unless something newer is known."""
        version = _comparable((body.get("metadata") or {}).get("resourceVersion"))
        key = (namespace, name)
        if version is None:
            self._entries.pop(key, None)
        elif version >= self._entries.get(key, (0, None))[0]:
            self._entries[key] = (version, body)

    def patched(self, namespace: str, name: str, answer: dict[str, Any]) -> None:
        """The operator changed the object and the API answered only its version (the Scale subresource's): what is
        cached is older, and that version is a floor until an event as new arrives."""
        version = _comparable(answer["metadata"].get("resourceVersion"))
        if version is None:
            self._entries.pop((namespace, name), None)
        elif version > self._entries.get((namespace, name), (0, None))[0]:
            self._entries[(namespace, name)] = (version, None)

    def gone(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    def forget_namespace(self, namespace: str) -> None:
        """No run is driven there any more, so no event updates its entries: they go."""
        for key in [key for key in self._entries if key[0] == namespace]:
            del self._entries[key]


def _comparable(version: str | None) -> int | None:
    return int(version) if version and version.isdecimal() and not version.startswith("0") else None


class Kube:
    """A thin, typed facade over the operator's API calls, each a `_call` that names its verb, API and resource."""

    def __init__(self, lease_namespace: str | None = None, api_client: ApiClient | None = None) -> None:
        in_cluster = api_client is None and _load_config()
        self.api_client = api_client or ApiClient()
        self.api_client.user_agent = USER_AGENT
        # Fed by kopf's watches (handlers.py), for the namespaces where a run is driven.
        # pods: those of the runs' Jobs.
        self.runs, self.deployments, self.jobs, self.pods = WatchCache(), WatchCache(), WatchCache(), WatchCache()
        # One namespace holds the Leases of every run, so two runs on one database in different namespaces are
        # serialised too: the operator's own namespace in a cluster, "default" outside (or as configured).
        self.lease_namespace = lease_namespace or (_own_namespace() if in_cluster else None) or "default"

    def _call(self, verb: str, api_version: str, resource: str, namespace: str | None = None, name: str | None = None,
              *, query: Sequence[tuple[str, str | int]] = (), body: Any = None, patch_type: str | None = None) -> Any:
        """One request: `verb` (RBAC's) on `resource` (its plural, then "/subresource" if any) of `api_version` ("v1"
        for the core group), in `namespace` or cluster-wide, on the object `name` or the collection.

        The answer is the JSON as a dict, or text for a log; any other status than 2xx raises the ApiException the
        generated client raises, with its status, reason and body.
        """
        plural, _, subresource = resource.partition("/")
        path = ("/apis/" if "/" in api_version else "/api/") + api_version
        path_params: dict[str, str] = {}
        if namespace is not None:
            path += "/namespaces/{namespace}"
            path_params["namespace"] = namespace
        path += f"/{plural}"
        if name is not None:
            path += "/{name}"
            path_params["name"] = name
        if subresource:
            path += f"/{subresource}"
        # The generated client asks for JSON, even of a log (the server answers text/plain), and sends a Content-Type
        # only with a patch: a POST, PUT or DELETE body goes as JSON without one.
        headers = {"Accept": "application/json", **({"Content-Type": patch_type} if patch_type else {})}
        # param_serialize quotes the names, adds the User-Agent and the credentials (a bearer token is refreshed by
        # the configuration's hook when it expires); the client certificates are the pool's.
        request = self.api_client.param_serialize(HTTP_METHODS[verb], path, path_params=path_params,
                                                  query_params=list(query), header_params=headers, body=body,
                                                  auth_settings=["BearerToken"])
        response = self.api_client.call_api(*request)
        response.read()
        # The generated client's own decoding and errors: "object" keeps the JSON as parsed.
        answer_type = "str" if resource in TEXT_RESOURCES else "object"
        return self.api_client.response_deserialize(response, {"2XX": answer_type}).data

    @staticmethod
    def _cached(cache: WatchCache, namespace: str, name: str,
                read: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """The object as the cache has it, else as `read` answers (and then cached); None when there is none.

        Each `read` names its request literally: tests/packaging/test_chart.py derives the chart's RBAC from them.
        """
        body = cache.get(namespace, name)
        if body is None:
            body = read()
            if body is not None:
                cache.saw(namespace, name, body)
        return body

    def forget_namespace(self, namespace: str) -> None:
        """No run is driven in the namespace any more: what the caches hold of it goes."""
        for cache in (self.runs, self.deployments, self.jobs, self.pods):
            cache.forget_namespace(namespace)

    # --- the DjangoMigration ------------------------------------------------------------------------------

    def read_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._cached(self.runs, namespace, name,
                            lambda: _unless_absent(self._call, "get", RUNS_API, PLURAL, namespace, name))

    def list_runs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every DjangoMigration in the namespaces, or in the cluster when none are named."""
        if not namespaces:
            return list(self._call("list", RUNS_API, PLURAL)["items"])
        return [run for namespace in namespaces for run in self._call("list", RUNS_API, PLURAL, namespace)["items"]]

    def patch_run_status(self, run: RunRef, status: RunStatus) -> None:
        answer = self._call("patch", RUNS_API, f"{PLURAL}/status", run.namespace, run.name, body={"status": status},
                            patch_type=MERGE_PATCH)
        self.runs.saw(run.namespace, run.name, answer)

    def post_event(self, run: RunRef, reason: str, message: str, warning: bool) -> None:
        now = datetime.now(UTC).isoformat()
        # Named as Kubernetes' own event recorder names them, <object>.<UnixNano in hex>: kubectl describe sorts by
        # lastTimestamp, whole seconds, and keeps the API's order (by name) among events of one second, so a
        # run's events of one second still read in the order they were posted.
        self._call("create", "v1", "events", run.namespace, body={
            "metadata": {"name": f"{run.name[:_EVENT_PREFIX_LENGTH]}.{time.time_ns():x}"},
            "involvedObject": {"apiVersion": RUNS_API, "kind": KIND, "name": run.name, "namespace": run.namespace,
                               "uid": run.uid},
            "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "django-migration-operator"},
            "reportingComponent": "djangoops.dev/django-migration-operator", "reportingInstance": "operator"})

    # --- Deployments and their pods -----------------------------------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._cached(self.deployments, namespace, name,
                            lambda: _unless_absent(self._call, "get", "apps/v1", "deployments", namespace, name))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self._call("list", "v1", "pods", namespace,
                                                query=[("labelSelector", selector)])["items"]
        return pods

    def scale_deployment(self, namespace: str, name: str, replicas: int, images: dict[str, str]) -> None:
        """Sets spec.replicas and, in the same patch, the images of the named containers: one rollout, so no pod
        starts on an image the run does not want."""
        if not images:
            answer = self._call("patch", "apps/v1", "deployments/scale", namespace, name,
                                body={"spec": {"replicas": replicas}}, query=[("fieldManager", FIELD_MANAGER)],
                                patch_type=STRATEGIC_MERGE_PATCH)
            self.deployments.patched(namespace, name, answer)
            return
        self._patch_deployment(namespace, name, {"replicas": replicas, **_containers_patch(images)})

    def set_images(self, namespace: str, name: str, images: dict[str, str]) -> None:
        """Sets the images of the named containers: the Deployment rolls out with its own strategy."""
        self._patch_deployment(namespace, name, _containers_patch(images))

    def _patch_deployment(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        # A strategic merge patch: containers merge by name, the other fields of each stay as they are.
        answer = self._call("patch", "apps/v1", "deployments", namespace, name, body={"spec": spec},
                            query=[("fieldManager", FIELD_MANAGER)], patch_type=STRATEGIC_MERGE_PATCH)
        self.deployments.saw(namespace, name, answer)

    # --- the backup claim ---------------------------------------------------------------------------------

    def claim(self, namespace: str, name: str) -> ClaimState | None:
        """The PersistentVolumeClaim's phase and capacity; None when there is no such claim."""
        claim = _unless_absent(self._call, "get", "v1", "persistentvolumeclaims", namespace, name)
        if claim is None:
            return None
        status = claim.get("status") or {}
        # The bound volume's capacity, or what the claim asks for while it waits for one.
        size = (status.get("capacity") or {}).get("storage") or \
            ((claim["spec"].get("resources") or {}).get("requests") or {}).get("storage")
        return ClaimState(phase=status.get("phase") or "Pending",
                          capacity_bytes=int(parse_quantity(size)) if size else None)

    # --- Secrets ------------------------------------------------------------------------------------------

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        """The value, or None when the Secret or the key is missing. Never logged, never stored."""
        secret = _unless_absent(self._call, "get", "v1", "secrets", namespace, name)
        if secret is None:
            return None
        encoded = (secret.get("data") or {}).get(key)
        return base64.b64decode(encoded).decode() if encoded is not None else None

    # --- Jobs -------------------------------------------------------------------------------------------

    def create_job(self, manifest: dict[str, Any]) -> None:
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            answer = self._call("create", "batch/v1", "jobs", namespace, body=manifest)
        except ApiException as error:
            if error.status != 409:  # already created before a restart: the same deterministic Job
                raise
            return
        self.jobs.saw(namespace, name, answer)

    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._cached(self.jobs, namespace, name,
                            lambda: _unless_absent(self._call, "get", "batch/v1", "jobs", namespace, name))

    def job_pods(self, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The Job's pods as the cache has them, else as listed (and then cached). Told apart by the Job's uid: a
        Job deleted and created again under its name has pods of its own."""
        uid = job["metadata"]["uid"]
        pods = [pod for pod in self.pods.in_namespace(namespace)
                if any(owner.get("uid") == uid for owner in pod["metadata"].get("ownerReferences") or [])]
        if not pods:
            pods = self.list_pods(namespace, f"batch.kubernetes.io/controller-uid={uid}")
            for pod in pods:
                self.pods.saw(namespace, pod["metadata"]["name"], pod)
        return pods

    def delete_job(self, namespace: str, name: str) -> None:
        """Deletes the Job and, before it goes, its pod (foreground); an absent Job is already deleted."""
        answer = _unless_absent(self._call, "delete", "batch/v1", "jobs", namespace, name,
                                query=[("propagationPolicy", "Foreground")])
        # The Job marked for deletion while its pod goes; a Status (or nothing) once it is gone.
        if answer and answer.get("kind") == "Job":
            self.jobs.saw(namespace, name, answer)
        else:
            self.jobs.gone(namespace, name)

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        """The end of one container's log; ApiException when it has none (it never started)."""
        log: str = self._call("get", "v1", "pods/log", namespace, pod,
                              query=[("container", container), ("tailLines", LOG_TAIL_LINES)])
        return log

    # --- the one-run-per-database Lease -------------------------------------------------------------------

    def lease_holder(self, database_id: str) -> LeaseRecord | None:
        """The database's Lease: its holder and version; None when there is none."""
        lease = _unless_absent(self._call, "get", "coordination.k8s.io/v1", "leases", self.lease_namespace,
                               _lease_name(database_id))
        if lease is None:
            return None
        return LeaseRecord(holder=(lease.get("spec") or {}).get("holderIdentity") or "",
                           version=lease["metadata"]["resourceVersion"])

    def acquire_lease(self, run: RunRef, database_id: str, stale_version: str | None) -> bool:
        """Creates the Lease naming this run, or replaces the one at `stale_version`; True when this run won.

        Both are atomic on the server: of two runs that race, one wins. The other gets 409 (or 404: the stale
        Lease was deleted meanwhile) and False, looks again, and queues behind a winner it finds.
        """
        name = _lease_name(database_id)
        now = datetime.now(UTC).isoformat()
        # The version read when the holder was judged stale, not a fresh read: that one may be a live winner's.
        metadata: dict[str, Any] = {"name": name, "labels": {RUN_LABEL: run.name, RUN_NAMESPACE_LABEL: run.namespace}}
        if stale_version is not None:
            metadata["resourceVersion"] = stale_version
        lease = {"metadata": metadata, "spec": {"holderIdentity": run.key, "acquireTime": now, "renewTime": now}}
        if stale_version is None:
            return _written(self._call, "create", "coordination.k8s.io/v1", "leases", self.lease_namespace,
                            body=lease)
        return _written(self._call, "update", "coordination.k8s.io/v1", "leases", self.lease_namespace, name,
                        body=lease)

    def release_lease(self, run: RunRef) -> None:
        """Deletes the Lease this run holds, found by its labels: the database URL's Secret may be gone by now."""
        selector = f"{RUN_LABEL}={run.name},{RUN_NAMESPACE_LABEL}={run.namespace}"
        leases = self._call("list", "coordination.k8s.io/v1", "leases", self.lease_namespace,
                            query=[("labelSelector", selector)])["items"]
        for lease in leases:
            if (lease.get("spec") or {}).get("holderIdentity") != run.key:
                continue  # taken over since: no longer ours
            # Deleted only at the version listed: one taken over or gone since is not ours to delete.
            _written(self._call, "delete", "coordination.k8s.io/v1", "leases", self.lease_namespace,
                     lease["metadata"]["name"],
                     body={"preconditions": {"resourceVersion": lease["metadata"]["resourceVersion"]}})


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

