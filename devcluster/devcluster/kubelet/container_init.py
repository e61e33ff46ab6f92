"""The first program of every container, run as
`unshare --mount --uts --propagation private -- python -m devcluster.kubelet.container_init SPEC`.

In the container's own mount namespace it bind-mounts the volumes at their mountPaths, sets the pod's
hostname, then execve's the container command: the process keeps the pid the kubelet spawned, and its exit
code is the container's. Only the standard library is imported, to start fast.

For an OCI container it mounts the overlay of the image's root filesystem that runc then runs on, and execs
`runc run`: the mount lives in this namespace only, so it goes when the container does.

When the command cannot start, it writes why into the spec's `startErrorFile` and exits 128, which the
kubelet reports as reason StartError, as container runtimes do.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
from typing import Any

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
START_ERROR_EXIT_CODE = 128

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, flags: int, fstype: str | None = None, data: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def bind_mount(source: str, target: str, read_only: bool) -> None:
    """Mounts `source` at `target`, creating the target (a folder or an empty file) where it is missing."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _same_folder(path: str, handle: int) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(handle))
    except OSError:
        return False


def mount_volumes(mounts: list[dict[str, Any]], image_dirs: list[str]) -> None:
    """Mounts the volumes, then brings back any of the image's folders that a volume hid.

    A real image's files live in its own root file system; here they are host folders. A volume at /tmp (a
    read-only root's usual scratch space) would hide a repository cloned under /tmp, and with it the image's
    Python: such a folder is bound again, from a handle opened before the volumes, at its own path.
    """
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in sorted(set(image_dirs), key=len)
               if os.path.isdir(path)}
    try:
        for mount in mounts:
            bind_mount(mount["source"], mount["target"], bool(mount.get("readOnly")))
        for path, handle in handles.items():
            if not _same_folder(path, handle):
                bind_mount(f"/proc/self/fd/{handle}", path, read_only=False)
    finally:
        for handle in handles.values():
            os.close(handle)


def start(spec: dict[str, Any]) -> None:
    if overlay := spec.get("overlay"):
        options = f"lowerdir={overlay['lowerdir']},upperdir={overlay['upperdir']},workdir={overlay['workdir']}"
        for folder in (overlay["upperdir"], overlay["workdir"], overlay["target"]):
            os.makedirs(folder, exist_ok=True)
        _mount("overlay", overlay["target"], 0, "overlay", options)
    mount_volumes(spec["mounts"], spec.get("imageDirs", []))
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    os.makedirs(spec["workingDir"], exist_ok=True)  # as runtimes do for a missing workingDir
    os.chdir(spec["workingDir"])
    argv: list[str] = spec["argv"]
    if not argv:
        raise RuntimeError("no command specified")
    env: dict[str, str] = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError as error:
        raise RuntimeError(f'exec: "{argv[0]}": executable file not found in $PATH') from error


def main() -> None:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    try:
        start(spec)
    except Exception as error:
        with open(spec["startErrorFile"], "w") as report:
            report.write(str(error))
        sys.exit(START_ERROR_EXIT_CODE)


if __name__ == "__main__":
    main()
