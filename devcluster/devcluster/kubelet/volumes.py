"""A pod's volumes as host folders, and the bind mounts of each container.

Every volume is a folder (or, for hostPath, possibly a file) on the host: emptyDir in the pod's folder,
persistentVolumeClaim the claim's folder under volumeClaimRoot (or the hostPath of the volume it is bound
to), hostPath itself. Secret, ConfigMap, downwardAPI and projected volumes are written like the kubelet's
AtomicWriter does: files in a timestamped folder, `..data` pointing at it, and one symlink per top-level
name, so an update swaps all files at once.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from devcluster.kubelet.environment import ObjectSource, decode_secret_data, field_ref_value, resource_field_value
from devcluster.kubelet.expansion import expand

DEFAULT_FILE_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600
REFRESH_SECONDS = 60.0  # how often Secret, ConfigMap and token files are brought up to date


class VolumeError(Exception):
    """A volume cannot be set up yet; the pod waits in ContainerCreating and the kubelet tries again."""


class VolumeSource(ObjectSource, Protocol):
    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def get_volume(self, name: str) -> dict[str, Any] | None: ...

    def request_token(
        self, pod: Mapping[str, Any], audience: str | None, expiration_seconds: int
    ) -> tuple[str, datetime]: ...


@dataclass
class _Token:
    value: str
    renew_at: datetime


@dataclass
class PodVolumes:
    """The host paths of one pod's volumes, kept up to date by `prepare`."""

    pod_dir: Path
    claim_root: Path
    paths: dict[str, Path] = field(default_factory=dict)
    tokens: dict[tuple[str, int], _Token] = field(default_factory=dict)
    refresh_after: float = 0.0  # time.monotonic() when the files should be rewritten

    def due(self) -> bool:
        return time.monotonic() >= self.refresh_after

    def prepare(
        self, pod: Mapping[str, Any], source: VolumeSource, pod_ip: str, host_ip: str,
        node_allocatable: Mapping[str, str],
    ) -> None:
        """Creates or refreshes every volume of the pod; raises VolumeError naming the volume that failed."""
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = volume["name"]
            try:
                self.paths[name] = self._prepare_one(pod, volume, source, pod_ip, host_ip, node_allocatable)
            except VolumeError as error:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {error}') from error
        renewals = [(t.renew_at - datetime.now(UTC)).total_seconds() for t in self.tokens.values()]
        self.refresh_after = time.monotonic() + min([REFRESH_SECONDS, *renewals])

    def _prepare_one(
        self, pod: Mapping[str, Any], volume: Mapping[str, Any], source: VolumeSource, pod_ip: str,
        host_ip: str, node_allocatable: Mapping[str, str],
    ) -> Path:
        namespace = pod["metadata"]["namespace"]
        own_dir: Path = self.pod_dir / "volumes" / str(volume["name"])
        if "emptyDir" in volume:
            own_dir.mkdir(parents=True, exist_ok=True)
            own_dir.chmod(0o777)  # as the kubelet's: writable by a container that runs as any user
            return own_dir
        if claim := volume.get("persistentVolumeClaim"):
            return self._claim_folder(namespace, claim["claimName"], source)
        if "ephemeral" in volume:  # the ephemeral volume controller names the claim <pod>-<volume>
            return self._claim_folder(namespace, f"{pod['metadata']['name']}-{volume['name']}", source)
        if host_path := volume.get("hostPath"):
            return _host_path(host_path)
        writer_payload: dict[str, tuple[bytes, int]] | None = None
        if secret := volume.get("secret"):
            writer_payload = _secret_payload(namespace, secret, source, _mode(secret))
        elif config_map := volume.get("configMap"):
            writer_payload = _config_map_payload(namespace, config_map, source, _mode(config_map))
        elif downward := volume.get("downwardAPI"):
            writer_payload = _downward_payload(pod, downward.get("items") or [], _mode(downward), pod_ip, host_ip,
                                               node_allocatable)
        elif projected := volume.get("projected"):
            writer_payload = self._projected_payload(pod, projected, source, pod_ip, host_ip, node_allocatable)
        if writer_payload is None:
            kinds = ", ".join(sorted(k for k in volume if k != "name"))
            raise VolumeError(f"volume type {kinds} is not supported by devcluster's kubelet")
        write_atomically(own_dir, writer_payload)
        return own_dir

    def _claim_folder(self, namespace: str, claim_name: str, source: VolumeSource) -> Path:
        folder = self.claim_root / namespace / claim_name
        claim = source.get_claim(namespace, claim_name)
        volume_name = ((claim or {}).get("spec") or {}).get("volumeName")
        if volume_name:
            bound = source.get_volume(volume_name)
            host_path = ((bound or {}).get("spec") or {}).get("hostPath")
            if host_path:
                folder = Path(host_path["path"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _projected_payload(
        self, pod: Mapping[str, Any], projected: Mapping[str, Any], source: VolumeSource, pod_ip: str,
        host_ip: str, node_allocatable: Mapping[str, str],
    ) -> dict[str, tuple[bytes, int]]:
        namespace = pod["metadata"]["namespace"]
        mode = _mode(projected)
        payload: dict[str, tuple[bytes, int]] = {}
        for item in projected.get("sources") or []:
            if token := item.get("serviceAccountToken"):
                value = self._token(pod, token.get("audience"), int(token.get("expirationSeconds")
                                                                     or DEFAULT_TOKEN_SECONDS), source)
                payload[token["path"]] = (value.encode(), mode)
            elif secret := item.get("secret"):
                payload.update(_secret_payload(namespace, {**secret, "secretName": secret.get("name")}, source, mode))
            elif config_map := item.get("configMap"):
                payload.update(_config_map_payload(namespace, config_map, source, mode))
            elif downward := item.get("downwardAPI"):
                payload.update(_downward_payload(pod, downward.get("items") or [], mode, pod_ip, host_ip,
                                                 node_allocatable))
            else:
                raise VolumeError(f"projected source {', '.join(item)} is not supported by devcluster's kubelet")
        return payload

    def _token(self, pod: Mapping[str, Any], audience: str | None, seconds: int, source: VolumeSource) -> str:
        """A TokenRequest token bound to the pod, renewed at 80% of its life as the kubelet's token manager."""
        key = (audience or "", seconds)
        cached = self.tokens.get(key)
        if cached and cached.renew_at > datetime.now(UTC):
            return cached.value
        value, expires = source.request_token(pod, audience, seconds)
        issued = datetime.now(UTC)
        self.tokens[key] = _Token(value, issued + (expires - issued) * 0.8)
        return value


def _mode(volume_source: Mapping[str, Any]) -> int:
    mode = volume_source.get("defaultMode")
    return DEFAULT_FILE_MODE if mode is None else int(mode)


def _host_path(host_path: Mapping[str, Any]) -> Path:
    path = Path(host_path["path"])
    kind = host_path.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind == "Directory" and not path.is_dir():
        raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif not kind and not path.exists():
        path.mkdir(parents=True)  # what a runtime does with a missing hostPath of no type
    return path


def _keyed_payload(
    data: Mapping[str, bytes], items: list[Mapping[str, Any]], mode: int, missing_key: str, optional: bool
) -> dict[str, tuple[bytes, int]]:
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    payload: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f"{missing_key}: {item['key']}")
        item_mode = item.get("mode")
        payload[item.get("path") or item["key"]] = (data[item["key"]], mode if item_mode is None else int(item_mode))
    return payload


def _secret_payload(
    namespace: str, secret: Mapping[str, Any], source: VolumeSource, mode: int
) -> dict[str, tuple[bytes, int]]:
    name = secret.get("secretName") or ""
    optional = bool(secret.get("optional"))
    found = source.get_secret(namespace, name)
    if found is None:
        if optional:
            return {}
        raise VolumeError(f'secret "{name}" not found')
    data = {k: v.encode("utf-8", "surrogateescape") for k, v in decode_secret_data(found).items()}
    return _keyed_payload(data, secret.get("items") or [], mode, "references non-existent secret key", optional)


def _config_map_payload(
    namespace: str, config_map: Mapping[str, Any], source: VolumeSource, mode: int
) -> dict[str, tuple[bytes, int]]:
    name = config_map.get("name") or ""
    optional = bool(config_map.get("optional"))
    found = source.get_config_map(namespace, name)
    if found is None:
        if optional:
            return {}
        raise VolumeError(f'configmap "{name}" not found')
    data = {k: str(v).encode() for k, v in (found.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()})
    return _keyed_payload(data, config_map.get("items") or [], mode, "configmap references non-existent config key",
                          optional)


def _downward_payload(
    pod: Mapping[str, Any], items: list[Mapping[str, Any]], mode: int, pod_ip: str, host_ip: str,
    node_allocatable: Mapping[str, str],
) -> dict[str, tuple[bytes, int]]:
    payload: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if ref := item.get("fieldRef"):
            value = field_ref_value(pod, ref["fieldPath"], pod_ip, host_ip)
        elif ref := item.get("resourceFieldRef"):
            value = resource_field_value(pod, "", ref, node_allocatable)
        else:
            continue
        item_mode = item.get("mode")
        payload[item["path"]] = (value.encode(), mode if item_mode is None else int(item_mode))
    return payload


def write_atomically(target: Path, payload: Mapping[str, tuple[bytes, int]]) -> None:
    """Writes `payload` (relative path -> content, mode) into `target` as the kubelet's AtomicWriter does."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    if data_link.is_symlink() and _same_content(target / os.readlink(data_link), payload):
        return
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    version = target / stamp
    version.mkdir()
    for relative, (content, mode) in payload.items():
        file = version / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content)
        file.chmod(mode)
    old_version = os.readlink(data_link) if data_link.is_symlink() else None
    temporary_link = target / "..data_tmp"
    temporary_link.unlink(missing_ok=True)
    temporary_link.symlink_to(stamp)
    temporary_link.rename(data_link)
    visible = {relative.split("/", 1)[0] for relative in payload}
    for name in visible:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in visible and entry.is_symlink():
            entry.unlink()
    if old_version and old_version != stamp:
        shutil.rmtree(target / old_version, ignore_errors=True)


def _same_content(version: Path, payload: Mapping[str, tuple[bytes, int]]) -> bool:
    existing = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()}
    if existing != set(payload):
        return False
    for relative, (content, mode) in payload.items():
        file = version / relative
        if file.read_bytes() != content or (file.stat().st_mode & 0o7777) != mode:
            return False
    return True


def container_mounts(
    container: Mapping[str, Any], volumes: PodVolumes, env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The bind mounts of one container, parents before the mounts nested in them."""
    mounts: list[dict[str, Any]] = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in volumes.paths:
            raise VolumeError(f'volume "{name}" of mount {mount["mountPath"]} is not a volume of the pod')
        source = volumes.paths[name]
        sub_path = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env)
        if sub_path:
            source = _sub_path(source, sub_path)
        mounts.append({"source": str(source), "target": mount["mountPath"], "readOnly": bool(mount.get("readOnly"))})
    return sorted(mounts, key=lambda m: len(Path(m["target"]).parts))


def _sub_path(volume: Path, sub_path: str) -> Path:
    if os.path.isabs(sub_path) or ".." in Path(sub_path).parts:
        raise VolumeError(f"subPath {sub_path!r} must be a relative path that does not leave the volume")
    path = volume / sub_path
    if not path.exists() and not path.is_symlink():
        path.mkdir(parents=True)  # the kubelet creates a missing subPath as a folder
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(os.path.realpath(volume)):
        raise VolumeError(f"subPath {sub_path!r} resolves outside its volume")
    return resolved
