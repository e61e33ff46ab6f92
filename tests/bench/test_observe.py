"""bench.observe's HTTP prober routes as kube-proxy does (KEP-1669): fed pod events, no cluster."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from bench.observe import APP_COMPONENT_LABEL, APP_NAME_LABEL, Observer


def web_pod(name: str, ip: str, ready: bool, terminating: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "shop",
                                "labels": {APP_NAME_LABEL: "blog", APP_COMPONENT_LABEL: "web"}}
    if terminating:
        metadata["deletionTimestamp"] = "2026-12-07T08:00:00Z"
    return {"metadata": metadata, "status": {"phase": "Running", "podIP": ip,
                                             "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_the_prober_asks_the_ready_pods_and_falls_back_to_ready_terminating_ones_when_none_is_left() -> None:
    observer = Observer(client.ApiClient(), "shop", "blog-release-2")
    observer._on_pod("ADDED", web_pod("old", "10.0.0.1", ready=True, terminating=False), 1.0)
    observer._on_pod("ADDED", web_pod("new", "10.0.0.2", ready=False, terminating=False), 1.0)
    assert observer.serving_web_ips() == ["10.0.0.1"]
    # Deleted: in its preStop, still Ready. No other pod is Ready: a Service still routes to it.
    observer._on_pod("MODIFIED", web_pod("old", "10.0.0.1", ready=True, terminating=True), 2.0)
    assert observer.serving_web_ips() == ["10.0.0.1"]
    observer._on_pod("MODIFIED", web_pod("new", "10.0.0.2", ready=True, terminating=False), 3.0)
    assert observer.serving_web_ips() == ["10.0.0.2"], "a Ready pod not terminating is preferred"
    observer._on_pod("MODIFIED", web_pod("old", "10.0.0.1", ready=False, terminating=True), 4.0)
    assert observer.by_namespace["shop"].pods["old"].unready_at == 4.0, "its container ended: it stopped serving"
    assert observer.by_namespace["shop"].pods["new"].unready_at is None, "still Ready"
