"""A trivial volume provisioner: every Pending claim gets a hostPath PersistentVolume made for it.

The volume `devcluster-<namespace>-<claim>` points at the folder volumeClaimRoot/<namespace>/<claim> and is
pre-bound to the claim (claimRef with its uid), so the controller-manager's PV controller binds the two.
Its reclaim policy is Retain and the folder is never removed: tests read what pods left there (backups,
dumps) after the claim, or its namespace, is gone. When the claim is deleted, its volume object is deleted
too (the folder stays); a later claim of the same name in the same namespace finds the old files.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from devcluster.kubelet.api import ApiError, KubeApi, path_of

log = logging.getLogger("devcluster.kubelet")

PROVISIONER = "devcluster.dev/kubelet"
STALE_VOLUME_WAIT_SECONDS = 10.0


def volume_name(namespace: str, claim: str) -> str:
    name = f"devcluster-{namespace}-{claim}"
    if len(name) <= 253:
        return name
    return f"{name[:240]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def volume_for_claim(claim: dict[str, Any], claim_root: Path) -> dict[str, Any]:
    metadata, spec = claim["metadata"], claim.get("spec") or {}
    namespace, name = metadata["namespace"], metadata["name"]
    volume_spec: dict[str, Any] = {
        "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")},
        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Retain",
        "volumeMode": spec.get("volumeMode") or "Filesystem",
        "hostPath": {"path": str(claim_root / namespace / name), "type": "DirectoryOrCreate"},
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": name,
                     "uid": metadata["uid"]},
    }
    if spec.get("storageClassName") is not None:
        volume_spec["storageClassName"] = spec["storageClassName"]
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": volume_name(namespace, name),
                         "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": volume_spec}


class Provisioner:
    def __init__(self, api: KubeApi, claim_root: Path) -> None:
        self.api = api
        self.claim_root = claim_root

    def handle(self, kind: str, claim: dict[str, Any]) -> None:
        """Informer handler for PersistentVolumeClaims of all namespaces."""
        metadata, spec = claim["metadata"], claim.get("spec") or {}
        namespace, name = metadata["namespace"], metadata["name"]
        if kind == "DELETED":
            self._forget(namespace, name, metadata["uid"])
            return
        if spec.get("volumeName") or metadata.get("deletionTimestamp"):
            return
        if (claim.get("status") or {}).get("phase", "Pending") != "Pending":
            return
        volume = volume_for_claim(claim, self.claim_root)
        (self.claim_root / namespace / name).mkdir(parents=True, exist_ok=True)
        try:
            self.api.request("POST", "/api/v1/persistentvolumes", body=volume)
            log.info("provisioned volume %s for claim %s/%s", volume["metadata"]["name"], namespace, name)
        except ApiError as error:
            if error.status != 409:
                raise
            self._replace_if_stale(volume)

    def _replace_if_stale(self, volume: dict[str, Any]) -> None:
        """A volume of an earlier claim of the same name is in the way: replace it (its folder is kept)."""
        path = path_of("api", "v1", "persistentvolumes", volume["metadata"]["name"])
        existing = self.api.get_or_none(path)
        if not existing or (existing["spec"].get("claimRef") or {}).get("uid") == volume["spec"]["claimRef"]["uid"]:
            return
        self.api.request("DELETE", path, body={"preconditions": {"uid": existing["metadata"]["uid"]}})
        deadline = time.monotonic() + STALE_VOLUME_WAIT_SECONDS
        while self.api.get_or_none(path) is not None:  # the pv-protection finalizer goes first
            if time.monotonic() > deadline:
                raise ApiError(409, f"stale volume {volume['metadata']['name']} is not going away")
            time.sleep(0.2)
        self.api.request("POST", "/api/v1/persistentvolumes", body=volume)
        log.info("replaced the stale volume %s", volume["metadata"]["name"])

    def _forget(self, namespace: str, name: str, uid: str) -> None:
        path = path_of("api", "v1", "persistentvolumes", volume_name(namespace, name))
        existing = self.api.get_or_none(path)
        if existing and (existing["spec"].get("claimRef") or {}).get("uid") == uid:
            try:
                self.api.request("DELETE", path, body={"preconditions": {"uid": existing["metadata"]["uid"]}})
            except ApiError as error:
                if error.status not in (404, 409):
                    raise
            log.info("claim %s/%s is gone: deleted its volume object, kept its folder", namespace, name)
