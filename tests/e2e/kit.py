"""Helpers shared by the e2e scenarios."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.2) -> Any:
    """Polls `predicate` until it returns something truthy; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except client.ApiException as error:  # e.g. not created yet
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def apply(kubectl: Kubectl, namespace: str, *manifests: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                    "items": list(manifests)}))
