"""The API objects a pod's containers and volumes are made from, read when a container starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from devcluster.kubelet.api import KubeApi, path_of


class ApiObjects:
    """Reads Secrets, ConfigMaps, claims and volumes, and requests service-account tokens."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    def _namespaced(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.api.get_or_none(path_of("api", "v1", "namespaces", namespace, plural, name))
        return found

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._namespaced(namespace, "secrets", name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._namespaced(namespace, "configmaps", name)

    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._namespaced(namespace, "persistentvolumeclaims", name)

    def get_volume(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.api.get_or_none(path_of("api", "v1", "persistentvolumes", name))
        return found

    def request_token(
        self, pod: Mapping[str, Any], audience: str | None, expiration_seconds: int
    ) -> tuple[str, datetime]:
        """TokenRequest bound to the pod, as the kubelet's token manager makes them."""
        metadata = pod["metadata"]
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience] if audience else [], "expirationSeconds": expiration_seconds,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"],
                                        "uid": metadata["uid"]}},
        }
        answer = self.api.request("POST", path_of("api", "v1", "namespaces", metadata["namespace"], "serviceaccounts",
                                                  account, "token"), body=request)
        expires = datetime.strptime(answer["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        return str(answer["status"]["token"]), expires.replace(tzinfo=UTC)
