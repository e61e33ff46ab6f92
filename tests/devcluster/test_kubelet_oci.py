"""The OCI container's runc config, from an image folder and a pod: who it runs as, what it may do, what it sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devcluster.kubelet import oci
from devcluster.kubelet.environment import ContainerConfigError

PASSWD = "root:x:0:0:root:/root:/bin/sh\ndjangoops:x:10001:10001::/nonexistent:/usr/sbin/nologin\n"


def image_folder(tmp_path: Path, user: str = "10001:10001") -> Path:
    folder = tmp_path / "images" / "abc123"
    (folder / "rootfs" / "etc").mkdir(parents=True)
    (folder / "rootfs" / "etc" / "passwd").write_text(PASSWD)
    (folder / "rootfs" / "etc" / "group").write_text("root:x:0:\ndjangoops:x:10001:\n")
    (folder / "config.json").write_text(json.dumps({
        "User": user, "Env": ["PATH=/app/.venv/bin:/usr/bin", "TMPDIR=/tmp"], "WorkingDir": "/app",
        "Entrypoint": ["python", "-m", "django_migration_operator"]}))
    (tmp_path / "images" / "current").symlink_to("abc123")
    return tmp_path / "images" / "current"


def test_an_image_folder_is_read_through_its_current_link(tmp_path: Path) -> None:
    image = oci.load(str(image_folder(tmp_path)))
    assert image.folder.name == "abc123" and image.rootfs.is_dir()
    assert image.entrypoint == ("python", "-m", "django_migration_operator") and image.cmd == ()
    assert image.working_dir == "/app" and image.user == "10001:10001"


def test_an_image_not_built_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ContainerConfigError, match="make image"):
        oci.load(str(tmp_path / "nothing"))


@pytest.mark.parametrize(("user", "pod", "container", "expected"), [
    ("10001:10001", {}, {}, (10001, 10001, "/nonexistent")),
    ("djangoops", {}, {}, (10001, 10001, "/nonexistent")),  # by name, with its passwd group and home
    ("", {}, {}, (0, 0, "/")),
    ("10001:10001", {"runAsUser": 0}, {}, (0, 10001, "/root")),
    ("10001:10001", {"runAsUser": 5}, {"runAsUser": 7, "runAsGroup": 8}, (7, 8, "/")),
    ("djangoops:root", {}, {}, (10001, 0, "/nonexistent")),
])
def test_the_user_is_the_containers_then_the_pods_then_the_images(
        tmp_path: Path, user: str, pod: dict[str, Any], container: dict[str, Any],
        expected: tuple[int, int, str]) -> None:
    who = oci.identity(oci.load(str(image_folder(tmp_path, user))), pod, container)
    assert (who.uid, who.gid, who.home) == expected


def test_groups_are_the_supplemental_ones_and_the_fs_group(tmp_path: Path) -> None:
    who = oci.identity(oci.load(str(image_folder(tmp_path))), {"supplementalGroups": [3, 4], "fsGroup": 4}, {})
    assert who.groups == (3, 4)


def test_run_as_non_root_refuses_an_image_that_would_run_as_root(tmp_path: Path) -> None:
    image = oci.load(str(image_folder(tmp_path, "")))
    with pytest.raises(ContainerConfigError, match="runAsNonRoot and image will run as root"):
        oci.identity(image, {"runAsNonRoot": True}, {})
    assert oci.identity(image, {"runAsNonRoot": True}, {"runAsUser": 10001}).uid == 10001


def test_a_user_the_image_does_not_know_by_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerConfigError, match='user "nobody" is not in its /etc/passwd'):
        oci.identity(oci.load(str(image_folder(tmp_path, "nobody"))), {}, {})


def test_the_charts_restricted_context_gives_a_read_only_root_no_privileges_and_no_capabilities(
        tmp_path: Path) -> None:
    context = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
               "capabilities": {"drop": ["ALL"]}}
    secure = oci.security(oci.load(str(image_folder(tmp_path))), {}, {"securityContext": context})
    assert secure.read_only_root and secure.no_new_privileges and secure.capabilities == ()
    assert secure.identity.uid == 10001


def test_capabilities_start_from_the_runtimes_default_set(tmp_path: Path) -> None:
    image = oci.load(str(image_folder(tmp_path)))
    default = oci.security(image, {}, {})
    assert "CAP_CHOWN" in default.capabilities and "CAP_SYS_ADMIN" not in default.capabilities
    assert not default.read_only_root and not default.no_new_privileges
    changed = oci.security(image, {}, {"securityContext": {"capabilities": {"drop": ["CHOWN"], "add": ["SYS_TIME"]}}})
    assert "CAP_CHOWN" not in changed.capabilities and "CAP_SYS_TIME" in changed.capabilities
    with pytest.raises(ContainerConfigError, match="privileged"):
        oci.security(image, {}, {"securityContext": {"privileged": True}})


def test_the_bundle_config_runs_the_command_as_the_user_with_the_mounts_and_no_network_namespace(
        tmp_path: Path) -> None:
    image = oci.load(str(image_folder(tmp_path)))
    secure = oci.security(image, {}, {"securityContext": {"readOnlyRootFilesystem": True}})
    env = oci.process_env(image, {"TMPDIR": "/scratch", "POD_IP": "127.0.1.5"}, "op-1", secure.identity.home)
    assert env == {"HOSTNAME": "op-1", "HOME": "/nonexistent", "PATH": "/app/.venv/bin:/usr/bin",
                   "TMPDIR": "/scratch", "POD_IP": "127.0.1.5"}, "Kubernetes' env over the image's"
    mounts = [{"source": "/var/pods/tmp", "target": "/tmp", "readOnly": False},
              {"source": "/var/pods/token", "target": "/var/run/secrets/token", "readOnly": True}]
    config = oci.bundle_config(image, ["python", "-m", "x"], env, "/app", mounts, "op-1", secure)
    process = config["process"]
    assert process["args"] == ["python", "-m", "x"] and process["cwd"] == "/app"
    assert process["user"] == {"uid": 10001, "gid": 10001, "additionalGids": []}
    assert "HOME=/nonexistent" in process["env"]
    assert config["root"] == {"path": "rootfs", "readonly": True} and config["hostname"] == "op-1"
    binds = {m["destination"]: m for m in config["mounts"] if m["type"] == "bind"}
    assert binds["/tmp"]["source"] == "/var/pods/tmp" and "rw" in binds["/tmp"]["options"]
    assert "ro" in binds["/var/run/secrets/token"]["options"]
    kinds = {n["type"] for n in config["linux"]["namespaces"]}
    assert kinds == {"pid", "ipc", "mount", "uts"}, "the host's network"
    on_host_network = oci.bundle_config(image, ["x"], env, "/", [], None, secure)
    assert "uts" not in {n["type"] for n in on_host_network["linux"]["namespaces"]}


def test_why_runc_could_not_start_a_container_comes_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "runc.log"
    container = oci.RuncContainer(tmp_path / "state", "pod-1-django-0", log)
    assert container.start_error() is None
    log.write_text('{"level":"warning","msg":"x"}\n{"level":"error","msg":"runc run failed: unable to start '
                   'container process: exec: \\"nope\\": executable file not found in $PATH"}\n')
    assert container.start_error() == 'unable to start container process: exec: "nope": executable file not found ' \
                                   'in $PATH'
