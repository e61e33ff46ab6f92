"""Volumes as host folders: the atomic writer, Secret/ConfigMap/projected payloads, mounts and subPath."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devcluster.kubelet.provisioner import volume_for_claim, volume_name
from devcluster.kubelet.volumes import PodVolumes, VolumeError, container_mounts, write_atomically


class Source:
    def __init__(self) -> None:
        self.secrets = {"app": {"data": {"token": base64.b64encode(b"s3cret").decode(),
                                         "other": base64.b64encode(b"o").decode()}}}
        self.config_maps: dict[str, dict[str, Any]] = {
            "kube-root-ca.crt": {"data": {"ca.crt": "CERT"}},
            "cfg": {"data": {"a.ini": "x=1"}, "binaryData": {"blob": base64.b64encode(b"\x00\x01").decode()}},
        }
        self.tokens_requested: list[tuple[str | None, int]] = []

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.config_maps.get(name)

    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def get_volume(self, name: str) -> dict[str, Any] | None:
        return None

    def request_token(
        self, pod: Mapping[str, Any], audience: str | None, expiration_seconds: int
    ) -> tuple[str, datetime]:
        self.tokens_requested.append((audience, expiration_seconds))
        return f"token-{len(self.tokens_requested)}", datetime.now(UTC) + timedelta(seconds=expiration_seconds)


def pod(*volumes: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "shop", "uid": "u", "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "default", "volumes": list(volumes)}}


KUBE_API_ACCESS = {"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                  "fieldPath": "metadata.namespace"}}]}},
]}}


def prepare(tmp_path: Path, the_pod: dict[str, Any], source: Source | None = None) -> PodVolumes:
    volumes = PodVolumes(tmp_path / "pod", tmp_path / "claims")
    volumes.prepare(the_pod, source or Source(), "127.0.1.2", "127.0.0.1", {"cpu": "2"})
    return volumes


def test_service_account_volume_has_token_ca_and_namespace(tmp_path: Path) -> None:
    source = Source()
    volumes = prepare(tmp_path, pod(KUBE_API_ACCESS), source)
    folder = volumes.paths["kube-api-access-x"]
    assert (folder / "token").read_text() == "token-1"
    assert (folder / "ca.crt").read_text() == "CERT"
    assert (folder / "namespace").read_text() == "shop"
    assert os.readlink(folder / "token") == "..data/token"
    assert source.tokens_requested == [(None, 3607)]
    volumes.prepare(pod(KUBE_API_ACCESS), source, "127.0.1.2", "127.0.0.1", {})
    assert source.tokens_requested == [(None, 3607)], "a fresh token is reused until 80% of its life"


def test_secret_items_modes_and_updates(tmp_path: Path) -> None:
    volume = {"name": "s", "secret": {"secretName": "app", "defaultMode": 0o400,
                                      "items": [{"key": "token", "path": "dir/t", "mode": 0o600}]}}
    source = Source()
    volumes = prepare(tmp_path, pod(volume), source)
    file = volumes.paths["s"] / "dir" / "t"
    assert file.read_bytes() == b"s3cret"
    assert file.stat().st_mode & 0o777 == 0o600
    assert not (volumes.paths["s"] / "other").exists()
    source.secrets["app"]["data"]["token"] = base64.b64encode(b"rotated").decode()
    volumes.prepare(pod(volume), source, "127.0.1.2", "127.0.0.1", {})
    assert file.read_bytes() == b"rotated"
    assert len([p for p in volumes.paths["s"].iterdir() if p.name.startswith("..2")]) == 1


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match='volume "s" : secret "nope" not found'):
        prepare(tmp_path, pod({"name": "s", "secret": {"secretName": "nope"}}))
    optional = prepare(tmp_path, pod({"name": "s", "secret": {"secretName": "nope", "optional": True}}))
    assert [p.name for p in optional.paths["s"].iterdir() if not p.name.startswith("..")] == []
    with pytest.raises(VolumeError, match="non-existent config key: missing"):
        prepare(tmp_path, pod({"name": "c", "configMap": {"name": "cfg", "items": [{"key": "missing", "path": "m"}]}}))


def test_config_map_binary_data_and_claims(tmp_path: Path) -> None:
    volumes = prepare(tmp_path, pod({"name": "c", "configMap": {"name": "cfg"}},
                                    {"name": "data", "persistentVolumeClaim": {"claimName": "backups"}},
                                    {"name": "scratch", "emptyDir": {}}))
    assert (volumes.paths["c"] / "blob").read_bytes() == b"\x00\x01"
    assert volumes.paths["data"] == tmp_path / "claims" / "shop" / "backups"
    assert volumes.paths["data"].is_dir() and volumes.paths["scratch"].is_dir()


def test_mounts_sorted_parents_first_with_sub_paths(tmp_path: Path) -> None:
    volumes = prepare(tmp_path, pod({"name": "c", "configMap": {"name": "cfg"}}, {"name": "w", "emptyDir": {}}))
    container = {"volumeMounts": [
        {"name": "c", "mountPath": "/etc/app/a.ini", "subPath": "a.ini", "readOnly": True},
        {"name": "w", "mountPath": "/etc/app"},
        {"name": "w", "mountPath": "/data", "subPathExpr": "$(POD_NAME)"},
    ]}
    mounts = container_mounts(container, volumes, {"POD_NAME": "p"})
    # Shallower mount points first: /etc/app must be mounted before the file mounted inside it.
    assert [m["target"] for m in mounts] == ["/data", "/etc/app", "/etc/app/a.ini"]
    by_target = {m["target"]: m for m in mounts}
    assert Path(by_target["/etc/app/a.ini"]["source"]).read_text() == "x=1"  # the resolved file, not ..data
    assert by_target["/etc/app/a.ini"]["readOnly"] is True
    assert by_target["/data"]["source"] == str(volumes.paths["w"] / "p")
    with pytest.raises(VolumeError, match="must be a relative path"):
        container_mounts({"volumeMounts": [{"name": "w", "mountPath": "/x", "subPath": "../up"}]}, volumes, {})


def test_write_atomically_removes_names_no_longer_there(tmp_path: Path) -> None:
    write_atomically(tmp_path, {"a": (b"1", 0o644), "b": (b"2", 0o644)})
    write_atomically(tmp_path, {"a": (b"1", 0o644)})
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("..")) == ["a"]


def test_provisioned_volume_for_a_claim(tmp_path: Path) -> None:
    claim: dict[str, Any] = {"metadata": {"name": "backups", "namespace": "shop", "uid": "c-1"},
                             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                                      "resources": {"requests": {"storage": "2Gi"}}}}
    volume = volume_for_claim(claim, tmp_path)
    assert volume["metadata"]["name"] == "devcluster-shop-backups"
    spec = volume["spec"]
    assert spec["hostPath"]["path"] == str(tmp_path / "shop" / "backups")
    assert spec["capacity"] == {"storage": "2Gi"}
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["storageClassName"] == "standard"
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "shop",
                                "name": "backups", "uid": "c-1"}
    del claim["spec"]["storageClassName"]
    assert "storageClassName" not in volume_for_claim(claim, tmp_path)["spec"]
    assert len(volume_name("n" * 63, "c" * 253)) <= 253
