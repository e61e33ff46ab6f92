"""A container's environment and command line, resolved as the kubelet does (kubelet_pods.go).

Order and precedence follow makeEnvironmentVariables: envFrom in order, then env in order (each value
expanded against the variables declared before it and the service variables), then the service variables
not already set. Errors carry the real kubelet's messages, which become CreateContainerConfigError.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from devcluster.kubelet.config import Image
from devcluster.kubelet.expansion import expand

DEFAULT_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerConfigError(Exception):
    """A container cannot be configured yet (a missing Secret, ConfigMap or key): retried until it is there."""


class ObjectSource(Protocol):
    """Reads Secrets and ConfigMaps; None when the object does not exist."""

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """The variables of the `kubernetes` Service, pointing at the apiserver itself: there is no kube-proxy."""
    address = f"tcp://{host}:{port}"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": address,
        f"KUBERNETES_PORT_{port}_TCP": address,
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def format_map(values: Mapping[str, str]) -> str:
    """All labels or annotations as the downward API writes them: sorted `key="value"` lines."""
    return "\n".join(f"{key}={json.dumps(values[key])}" for key in sorted(values))


def field_ref_value(pod: Mapping[str, Any], field_path: str, pod_ip: str, host_ip: str) -> str:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    for prefix in ("metadata.labels", "metadata.annotations"):
        values: dict[str, str] = metadata.get(prefix.split(".")[1]) or {}
        if field_path == prefix:
            return format_map(values)
        if field_path.startswith(prefix + "[") and field_path.endswith("]"):
            key = field_path[len(prefix) + 1:-1].strip("'\"")
            return values.get(key, "")
    raise ContainerConfigError(f"unsupported fieldPath: {field_path}")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (`500m`, `1Gi`, `2e3`) as a number."""
    from kubernetes.utils.quantity import parse_quantity as parse  # imported here: it is only needed rarely

    return Decimal(parse(text))


def resource_field_value(
    pod: Mapping[str, Any], default_container: str, ref: Mapping[str, Any], node_allocatable: Mapping[str, str]
) -> str:
    """Best effort: the container's request or limit; a missing limit is the node's allocatable, as upstream."""
    name = ref.get("containerName") or default_container
    container = next((c for c in _all_containers(pod) if c.get("name") == name), {})
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    resources = (container.get("resources") or {}).get(kind) or {}
    raw = resources.get(resource)
    if raw is None and kind == "requests":
        raw = (container.get("resources") or {}).get("limits", {}).get(resource)
    if raw is None:
        raw = node_allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    if divisor == 0:
        divisor = Decimal(1)
    return str(math.ceil(parse_quantity(str(raw)) / divisor))


def _all_containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def decode_secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    # surrogateescape keeps bytes that are not UTF-8: os.execve turns them back into the same bytes.
    return {key: base64.b64decode(value).decode("utf-8", "surrogateescape")
            for key, value in (secret.get("data") or {}).items()}


class _Lookups:
    """Fetches each Secret and ConfigMap once per resolution, as the kubelet caches them per call."""

    def __init__(self, source: ObjectSource, namespace: str) -> None:
        self.source = source
        self.namespace = namespace
        self.secrets: dict[str, dict[str, str] | None] = {}
        self.config_maps: dict[str, dict[str, str] | None] = {}

    def secret(self, name: str, optional: bool) -> dict[str, str] | None:
        if name not in self.secrets:
            found = self.source.get_secret(self.namespace, name)
            self.secrets[name] = None if found is None else decode_secret_data(found)
        data = self.secrets[name]
        if data is None and not optional:
            raise ContainerConfigError(f'secret "{name}" not found')
        return data

    def config_map(self, name: str, optional: bool) -> dict[str, str] | None:
        if name not in self.config_maps:
            found = self.source.get_config_map(self.namespace, name)
            self.config_maps[name] = None if found is None else {
                k: str(v) for k, v in (found.get("data") or {}).items()}
        data = self.config_maps[name]
        if data is None and not optional:
            raise ContainerConfigError(f'configmap "{name}" not found')
        return data


def resolve_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    source: ObjectSource,
    service_env: Mapping[str, str],
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The variables Kubernetes gives the container (without the image's): raises ContainerConfigError."""
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    lookups = _Lookups(source, namespace)
    declared: dict[str, str] = {}

    for env_from in container.get("envFrom") or []:
        prefix = env_from.get("prefix") or ""
        if ref := env_from.get("configMapRef"):
            values = lookups.config_map(ref["name"], bool(ref.get("optional")))
        elif ref := env_from.get("secretRef"):
            values = lookups.secret(ref["name"], bool(ref.get("optional")))
        else:
            continue
        for key, value in (values or {}).items():
            declared[prefix + key] = value

    for variable in container.get("env") or []:
        name = variable["name"]
        value = variable.get("value") or ""
        value_from = variable.get("valueFrom")
        if value:
            value = expand(value, {**service_env, **declared})
        elif value_from:
            resolved = _value_from(pod, container, value_from, lookups, pod_ip, host_ip, node_allocatable)
            if resolved is None:  # an optional source that is missing: the variable is not set at all
                continue
            value = resolved
        declared[name] = value

    return {**declared, **{k: v for k, v in service_env.items() if k not in declared}}


def _value_from(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    value_from: Mapping[str, Any],
    lookups: _Lookups,
    pod_ip: str,
    host_ip: str,
    node_allocatable: Mapping[str, str],
) -> str | None:
    if ref := value_from.get("fieldRef"):
        return field_ref_value(pod, ref["fieldPath"], pod_ip, host_ip)
    if ref := value_from.get("resourceFieldRef"):
        return resource_field_value(pod, container.get("name", ""), ref, node_allocatable)
    for kind, fetch in (("ConfigMap", lookups.config_map), ("Secret", lookups.secret)):
        ref = value_from.get("configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef")
        if not ref:
            continue
        optional = bool(ref.get("optional"))
        data = fetch(ref["name"], optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {lookups.namespace}/{ref['name']}")
        return data[ref["key"]]
    return ""


def process_env(image: Image, kubernetes_env: Mapping[str, str], hostname: str) -> dict[str, str]:
    """The process's environment: the image's underneath Kubernetes', PATH with the image's folders first."""
    system_path = os.environ.get("PATH") or DEFAULT_SYSTEM_PATH
    return {
        "PATH": os.pathsep.join([*image.path, system_path]),
        "HOME": "/root",
        "HOSTNAME": hostname,
        **image.env,
        **kubernetes_env,
    }


def container_argv(container: Mapping[str, Any], entrypoint: Sequence[str], cmd: Sequence[str],
                   kubernetes_env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded, combined with the image's as Kubernetes does: a missing command is
    the image's entrypoint, and then missing args are the image's cmd."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command:
        command = list(entrypoint)
        args = args or list(cmd)
    return [expand(part, kubernetes_env) for part in [*command, *args]]
