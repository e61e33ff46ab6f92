"""Versions, ports and folders of devcluster: the one place to change them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"

PROJECT_DIR = Path(__file__).resolve().parent.parent  # devcluster/: this package, its image map, its Go modules
REPO_ROOT = PROJECT_DIR.parent
GOMOD_DIR = PROJECT_DIR / "gomod"
IMAGE_MAP = PROJECT_DIR / "images.yaml"


@dataclass(frozen=True)
class Ports:
    # Unusual numbers so a devcluster can run beside whatever else listens on the usual ones.
    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 6443
    controller_manager: int = 10257
    scheduler: int = 10259
    kubelet: int = 10250
    postgres: int = 55432


PORTS = Ports()
NODE_NAME = "devcluster"
POD_NETWORK = "127.0.1.0/24"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def cache_dir() -> Path:
    """Built binaries, per version: paid once per machine."""
    return _project_cache() / "devcluster"


def _project_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "django-migration-operator"


# Unpacked OCI images, one folder per image name with a `current` link to its latest build (scripts/image.sh).
OCI_IMAGES = _project_cache() / "images"


def state_dir() -> Path:
    """The running cluster: certificates, etcd data, logs, pod folders, volume claims, PostgreSQL.

    Not under root's home: PostgreSQL runs as the `postgres` user, who cannot enter /root.
    """
    return Path(os.environ.get("DEVCLUSTER_STATE", "/var/lib/devcluster"))
