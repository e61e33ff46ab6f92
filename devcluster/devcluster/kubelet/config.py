"""The kubelet's configuration file, written by `devcluster up`."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Image:
    """What an image name runs as: a process container (a folder, PATH entries and env), or an unpacked OCI image
    that runc runs (`oci`, its folder: see oci.py)."""

    name: str
    working_dir: str
    path: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    oci: str | None = None


@dataclass(frozen=True)
class KubeletConfig:
    kubeconfig: Path
    node_name: str
    state_dir: Path
    volume_claim_root: Path
    pod_network: ipaddress.IPv4Network
    apiserver_host: str
    apiserver_port: int
    serving_address: str
    serving_port: int
    serving_cert_file: Path
    serving_key_file: Path
    bind_unscheduled_pods: bool
    images: dict[str, Image]

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def processes_dir(self) -> Path:
        """One file per container process group, so a later kubelet can kill what this one left."""
        return self.state_dir / "processes"

    @property
    def runc_dir(self) -> Path:
        """runc's state of the OCI containers, so a later kubelet can remove what this one left."""
        return self.state_dir / "runc"


def parse_config(raw: dict[str, Any]) -> KubeletConfig:
    images = {
        name: Image(
            name=name,
            working_dir=str(entry.get("workingDir") or "/"),
            path=tuple(entry.get("path") or ()),
            env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
            command=tuple(entry.get("command") or ()),
            oci=entry.get("oci"),
        )
        for name, entry in (raw.get("images") or {}).items()
    }
    serving = raw["serving"]
    return KubeletConfig(
        kubeconfig=Path(raw["kubeconfig"]),
        node_name=raw["nodeName"],
        state_dir=Path(raw["stateDir"]),
        volume_claim_root=Path(raw["volumeClaimRoot"]),
        pod_network=ipaddress.IPv4Network(raw["podNetwork"]),
        apiserver_host=raw["apiserver"]["host"],
        apiserver_port=int(raw["apiserver"]["port"]),
        serving_address=serving["address"],
        serving_port=int(serving["port"]),
        serving_cert_file=Path(serving["certFile"]),
        serving_key_file=Path(serving["keyFile"]),
        bind_unscheduled_pods=bool(raw.get("bindUnscheduledPods", True)),
        images=images,
    )


def load_config(path: Path) -> KubeletConfig:
    return parse_config(json.loads(path.read_text()))
