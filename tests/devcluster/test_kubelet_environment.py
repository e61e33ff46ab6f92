"""A container's environment and command line from given pods, Secrets and ConfigMaps."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from devcluster.kubelet.config import Image
from devcluster.kubelet.environment import (
    ContainerConfigError,
    container_argv,
    field_ref_value,
    kubernetes_service_env,
    process_env,
    resolve_env,
)

SERVICE_ENV = kubernetes_service_env("127.0.0.1", 6443)
ALLOCATABLE = {"cpu": "2", "memory": "8Gi"}


class Objects:
    def __init__(self, secrets: dict[str, dict[str, str]] | None = None,
                 config_maps: dict[str, dict[str, str]] | None = None) -> None:
        self.secrets = secrets or {}
        self.config_maps = config_maps or {}

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if name not in self.secrets:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}}

    def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"data": self.config_maps[name]} if name in self.config_maps else None


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web", "tier": "a"},
                         "annotations": {"note": 'say "hi"'}},
            "spec": {"nodeName": "devcluster", "serviceAccountName": "runner", **spec}}


def resolve(container: dict[str, Any], objects: Objects | None = None) -> dict[str, str]:
    return resolve_env(pod(containers=[container]), container, objects or Objects(), SERVICE_ENV, "127.0.1.4",
                       "127.0.0.1", ALLOCATABLE)


def test_env_in_order_with_expansion_of_earlier_variables() -> None:
    env = resolve({"name": "c", "env": [
        {"name": "HOST", "value": "db"},
        {"name": "URL", "value": "postgres://$(HOST):5432/$(LATER)"},
        {"name": "LATER", "value": "x"},
        {"name": "API", "value": "$(KUBERNETES_SERVICE_HOST)"},
    ]})
    assert env["URL"] == "postgres://db:5432/$(LATER)"
    assert env["API"] == "127.0.0.1"
    assert list(env)[:4] == ["HOST", "URL", "LATER", "API"]


def test_service_variables_point_at_the_apiserver_unless_the_pod_sets_them() -> None:
    env = resolve({"name": "c", "env": [{"name": "KUBERNETES_SERVICE_PORT", "value": "443"}]})
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"
    assert env["KUBERNETES_PORT_6443_TCP_ADDR"] == "127.0.0.1"


def test_secret_and_config_map_keys() -> None:
    objects = Objects(secrets={"db": {"url": "postgres://x"}}, config_maps={"cfg": {"level": "debug"}})
    env = resolve({"name": "c", "env": [
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
        {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        {"name": "NOKEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k", "optional": True}}},
    ]}, objects)
    assert env["DATABASE_URL"] == "postgres://x"
    assert env["LEVEL"] == "debug"
    assert "GONE" not in env and "NOKEY" not in env


@pytest.mark.parametrize(("value_from", "message"), [
    ({"secretKeyRef": {"name": "x", "key": "k"}}, 'secret "x" not found'),
    ({"configMapKeyRef": {"name": "x", "key": "k"}}, 'configmap "x" not found'),
    ({"secretKeyRef": {"name": "db", "key": "K"}}, "couldn't find key K in Secret shop/db"),
    ({"configMapKeyRef": {"name": "cfg", "key": "K"}}, "couldn't find key K in ConfigMap shop/cfg"),
    ({"fieldRef": {"fieldPath": "spec.nope"}}, "unsupported fieldPath: spec.nope"),
])
def test_missing_sources_give_the_real_kubelets_messages(value_from: dict[str, Any], message: str) -> None:
    objects = Objects(secrets={"db": {"url": "u"}}, config_maps={"cfg": {"level": "debug"}})
    with pytest.raises(ContainerConfigError) as error:
        resolve({"name": "c", "env": [{"name": "V", "valueFrom": value_from}]}, objects)
    assert str(error.value) == message


def test_env_from_with_prefix_and_optional_then_env_overrides() -> None:
    objects = Objects(secrets={"creds": {"USER": "app", "PASS": "pw"}}, config_maps={"cfg": {"MODE": "prod"}})
    env = resolve({"name": "c", "envFrom": [
        {"secretRef": {"name": "creds"}, "prefix": "DB_"},
        {"configMapRef": {"name": "cfg"}},
        {"configMapRef": {"name": "absent", "optional": True}},
    ], "env": [{"name": "MODE", "value": "dev-$(DB_USER)"}]}, objects)
    assert env["DB_USER"] == "app" and env["DB_PASS"] == "pw"
    assert env["MODE"] == "dev-app"
    with pytest.raises(ContainerConfigError, match='configmap "absent" not found'):
        resolve({"name": "c", "envFrom": [{"configMapRef": {"name": "absent"}}]}, objects)


@pytest.mark.parametrize(("path", "value"), [
    ("metadata.name", "web-1"),
    ("metadata.namespace", "shop"),
    ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"),
    ("metadata.labels['missing']", ""),
    ("metadata.annotations['note']", 'say "hi"'),
    ("metadata.labels", 'app="web"\ntier="a"'),
    ("metadata.annotations", 'note="say \\"hi\\""'),
    ("spec.nodeName", "devcluster"),
    ("spec.serviceAccountName", "runner"),
    ("status.podIP", "127.0.1.4"),
    ("status.podIPs", "127.0.1.4"),
    ("status.hostIP", "127.0.0.1"),
    ("status.hostIPs", "127.0.0.1"),
])
def test_field_refs(path: str, value: str) -> None:
    assert field_ref_value(pod(), path, "127.0.1.4", "127.0.0.1") == value


def test_resource_field_refs_with_divisor_and_node_fallback() -> None:
    container = {"name": "c", "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "250m"}}, "env": [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
    ]}
    env = resolve(container)
    assert (env["MEM"], env["CPU"], env["CPU_LIMIT"]) == ("256", "250", "2")


IMAGE = Image(name="blog:2.0", working_dir="/app", path=("/venv/bin",), env={"MODE": "image", "KEEP": "1"},
              command=("sh",))


def test_process_env_puts_the_image_underneath_and_its_path_first() -> None:
    env = process_env(IMAGE, {"MODE": "pod"}, "web-1")
    assert env["MODE"] == "pod" and env["KEEP"] == "1"
    assert env["PATH"].startswith("/venv/bin:")
    assert env["HOSTNAME"] == "web-1" and env["HOME"] == "/root"


def test_argv_expands_command_and_args_and_falls_back_to_the_image_command() -> None:
    env = {"POD_IP": "127.0.1.4"}
    entrypoint = IMAGE.command
    assert container_argv({"command": ["gunicorn"], "args": ["--bind", "$(POD_IP):8000"]}, entrypoint, (), env) == [
        "gunicorn", "--bind", "127.0.1.4:8000"]
    assert container_argv({"args": ["-c", "echo $$HOME $(POD_IP)"]}, entrypoint, (), env) == [
        "sh", "-c", "echo $HOME 127.0.1.4"]
    assert container_argv({}, entrypoint, (), env) == ["sh"]


def test_argv_combines_with_the_images_entrypoint_and_cmd_as_kubernetes_does() -> None:
    entrypoint, cmd = ("python", "-m", "app"), ("--serve",)
    assert container_argv({}, entrypoint, cmd, {}) == ["python", "-m", "app", "--serve"]
    assert container_argv({"args": ["--once"]}, entrypoint, cmd, {}) == ["python", "-m", "app", "--once"]
    assert container_argv({"command": ["sh"]}, entrypoint, cmd, {}) == ["sh"], "a command leaves out the image's cmd"
