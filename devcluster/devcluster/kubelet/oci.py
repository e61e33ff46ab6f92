"""OCI images: a container run by runc on the image's own root filesystem, under the pod's securityContext.

An image-map entry with `oci: <folder>` names an unpacked image: `<folder>/rootfs` and `<folder>/config.json` (the
image config's `config` object: User, Env, Entrypoint, Cmd, WorkingDir), as `make image` exports it. Each container
gets a bundle: an overlay of the image's root filesystem (so containers never write into the image) and a runc
config built here, by pure functions, from the pod. What it enforces: the user and groups (runAsUser, runAsGroup,
the image's USER, supplementalGroups, fsGroup), runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation
(no_new_privs) and capabilities (containerd's default set, then drop and add). Its namespaces are mount, pid, ipc
and uts; the network is the host's, as for process containers. The cgroups here are v1 and set no limits.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.kubelet.environment import ContainerConfigError

RUNC = "runc"
# containerd's default capabilities for a container (oci.WithDefaultSpec), the set `drop` and `add` change.
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
# runc's and containerd's defaults: the kernel's knobs a container must not read or change.
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class OciImage:
    """An unpacked image: its root filesystem and what its config says to run."""

    folder: Path  # resolved: a `current` symlink names one build for the container's whole life
    user: str
    env: tuple[str, ...]  # "NAME=value", as the image config lists them
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str

    @property
    def rootfs(self) -> Path:
        return self.folder / "rootfs"


def load(folder: str) -> OciImage:
    resolved = Path(folder).resolve()
    try:
        config: dict[str, Any] = json.loads((resolved / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ContainerConfigError(f"OCI image {folder}: no readable config.json ({error}); build it with "
                                   "`make image`") from error
    if not (resolved / "rootfs").is_dir():
        raise ContainerConfigError(f"OCI image {folder}: no rootfs folder; build it with `make image`")
    return OciImage(folder=resolved, user=str(config.get("User") or ""), env=tuple(config.get("Env") or ()),
                    entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()),
                    working_dir=str(config.get("WorkingDir") or "/"))


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True)
class Security:
    identity: Identity
    read_only_root: bool
    no_new_privileges: bool
    capabilities: tuple[str, ...]


def _passwd(rootfs: Path, user: str) -> tuple[int, int, str] | None:
    """(uid, gid, home) of a user named or numbered in the image's /etc/passwd."""
    try:
        lines = (rootfs / "etc" / "passwd").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 6 and user in (fields[0], fields[2]):
            return int(fields[2]), int(fields[3]), fields[5]
    return None


def identity(image: OciImage, pod_context: Mapping[str, Any], context: Mapping[str, Any]) -> Identity:
    """Who the process runs as: runAsUser and runAsGroup (the container's over the pod's) over the image's USER."""
    name, _, group = image.user.partition(":")
    entry = _passwd(image.rootfs, name) if name else None
    if name and entry is None and not name.isdigit():
        raise ContainerConfigError(f'the image\'s user "{name}" is not in its /etc/passwd')
    uid, gid, home = entry or (int(name) if name else 0, 0, "/")
    if group:
        gid = int(group) if group.isdigit() else _group_id(image.rootfs, group)
    run_as_user = context.get("runAsUser", pod_context.get("runAsUser"))
    if run_as_user is not None:
        uid = int(run_as_user)
        home = (_passwd(image.rootfs, str(uid)) or (0, 0, "/"))[2]
    run_as_group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if run_as_group is not None:
        gid = int(run_as_group)
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) and uid == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
    if pod_context.get("fsGroup") is not None:
        groups.append(int(pod_context["fsGroup"]))
    return Identity(uid, gid, tuple(dict.fromkeys(groups)), home)


def _group_id(rootfs: Path, group: str) -> int:
    try:
        for line in (rootfs / "etc" / "group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == group:
                return int(fields[2])
    except OSError:
        pass
    raise ContainerConfigError(f'the image\'s group "{group}" is not in its /etc/group')


def security(image: OciImage, pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> Security:
    context: Mapping[str, Any] = container.get("securityContext") or {}
    if context.get("privileged"):
        raise ContainerConfigError("securityContext.privileged: privileged containers are not supported here")
    capabilities = context.get("capabilities") or {}
    drop = {str(c).upper().removeprefix("CAP_") for c in capabilities.get("drop") or []}
    add = [str(c).upper().removeprefix("CAP_") for c in capabilities.get("add") or []]
    kept = [] if "ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    return Security(
        identity=identity(image, pod_spec.get("securityContext") or {}, context),
        read_only_root=bool(context.get("readOnlyRootFilesystem")),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
        capabilities=tuple(dict.fromkeys(f"CAP_{c}" for c in [*kept, *add])))


def process_env(image: OciImage, kubernetes_env: Mapping[str, str], hostname: str, home: str) -> dict[str, str]:
    """The image's environment under Kubernetes', as a runtime sets it: HOSTNAME and HOME first."""
    env = {"HOSTNAME": hostname, "HOME": home}
    env.update(entry.partition("=")[::2] for entry in image.env)
    env.update(kubernetes_env)
    return env


def bundle_config(image: OciImage, argv: list[str], env: Mapping[str, str], working_dir: str,
                  mounts: list[dict[str, Any]], hostname: str | None, secure: Security) -> dict[str, Any]:
    """The runc config.json of one container; `mounts` are the kubelet's binds (volumes, /etc/hosts, ...)."""
    caps = list(secure.capabilities)
    who = secure.identity
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": who.uid, "gid": who.gid, "additionalGids": list(who.groups)},
            "args": argv,
            "env": [f"{name}={value}" for name, value in env.items()],
            "cwd": working_dir,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": secure.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": secure.read_only_root},
        "hostname": hostname or "",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            # The host's, read-only: a sysfs of its own would need a network namespace of its own.
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec",
                                                                                 "nodev", "ro"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf",
             "options": ["rbind", "ro"]},
            *({"destination": mount["target"], "type": "bind", "source": mount["source"],
               "options": ["rbind", "ro" if mount.get("readOnly") else "rw"]} for mount in mounts),
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "ipc", "mount", *(("uts",) if hostname else ()))],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }


# --- runc, for the process that runs the container and for the kubelet that cleans up after it -------------------


@dataclass(frozen=True)
class RuncContainer:
    """An OCI container: the process is `runc run` of it, which leaves runc's state behind to clean up."""

    state_root: Path
    container_id: str
    log_file: Path  # runc's own log: why it could not start the container

    def _runc(self, *arguments: str) -> list[str]:
        return [RUNC, "--root", str(self.state_root), *arguments]

    def run_argv(self, bundle: Path) -> list[str]:
        """`runc run` in the foreground: stdio pass through, signals are forwarded, its exit code is the
        container's."""
        return self._runc("--log", str(self.log_file), "--log-format", "json", "run", "--bundle", str(bundle),
                          self.container_id)

    def exec_prefix(self) -> tuple[str, ...]:
        """What runs a command inside the container (an exec probe, a preStop hook)."""
        return tuple(self._runc("exec", self.container_id))

    def start_error(self) -> str | None:
        """What runc said when it could not start the container, from its log."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") == "error":
                return str(entry.get("msg", "")).removeprefix("runc run failed: ")
        return None

    def remove(self) -> None:
        """Kills what is left of the container and forgets it: its init is a session of its own, which a signal to
        runc's process group never reaches, and would outlive runc."""
        subprocess.run(self._runc("delete", "--force", self.container_id), stdin=subprocess.DEVNULL,
                       capture_output=True, check=False)


def remove_leftovers(state_root: Path) -> int:
    """Removes every container a previous kubelet left in runc's state folder; returns how many."""
    if not state_root.is_dir():
        return 0
    listed = subprocess.run([RUNC, "--root", str(state_root), "list", "--quiet"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, check=False)
    names = listed.stdout.split()
    for name in names:
        RuncContainer(state_root, name, Path(os.devnull)).remove()
    return len(names)
