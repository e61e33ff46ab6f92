"""A small JSON client of the Kubernetes API, and list+watch loops.

Plain dicts rather than the generated models: pods are read field by field (fieldRef paths, status), and the
models' (de)serialisation would cost more than everything else the kubelet does per event. The kubeconfig is
read by the official client's loader, so every credential form it knows works here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

log = logging.getLogger("devcluster.kubelet")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
WATCH_SECONDS = 300


class ApiError(Exception):
    """An error answer of the apiserver; `status` is the HTTP code (0 when the server could not be reached)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: bytes) -> ApiError:
        try:
            parsed = json.loads(body)
            return cls(status, str(parsed.get("message", "")), str(parsed.get("reason", "")))
        except ValueError:
            return cls(status, body.decode(errors="replace")[:500])


def path_of(*segments: str) -> str:
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class KubeApi:
    def __init__(self, kubeconfig: Path, pool_size: int = 32) -> None:
        from kubernetes import client, config  # the loader only: it knows every kubeconfig credential form

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.host = str(configuration.host).rstrip("/")
        self.headers = {"Accept": JSON, "User-Agent": "devcluster-kubelet"}
        bearer = configuration.auth_settings().get("BearerToken")
        if bearer:
            self.headers["Authorization"] = bearer["value"]
        self.pool = urllib3.PoolManager(
            num_pools=2, maxsize=pool_size, block=False,
            cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
            ca_certs=configuration.ssl_ca_cert, cert_file=configuration.cert_file, key_file=configuration.key_file,
        )

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        return f"{self.host}{path}" + ("?" + urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        timeout: float = 30.0,
    ) -> Any:
        headers = dict(self.headers)
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = json.dumps(body).encode()
        try:
            response = self.pool.request(
                method, self.url(path, query), body=payload, headers=headers, timeout=timeout,
                retries=urllib3.Retry(connect=2, read=0, redirect=0, status=0, other=0) if method == "GET" else False,
            )
        except urllib3.exceptions.HTTPError as error:
            raise ApiError(0, f"{method} {path}: {error}") from error
        if response.status >= 400:
            raise ApiError.from_body(response.status, response.data)
        return json.loads(response.data) if response.data else None

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path, query)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Events of one watch request, each as soon as its chunk arrives."""
        url = self.url(path, {**query, "watch": "true"})
        response = self.pool.request(
            "GET", url, headers=self.headers, preload_content=False, retries=False,
            timeout=urllib3.Timeout(connect=5, read=WATCH_SECONDS + 60),
        )
        try:
            if response.status != 200:
                raise ApiError.from_body(response.status, response.read())
            pending = b""
            for chunk in response.stream(64 * 1024):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()


class _Relist(Exception):
    pass


class Informer(threading.Thread):
    """Lists, then watches, one kind of object and hands every change to `handler(event_type, object)`.

    After any gap (410 Gone, a broken connection) it lists again and reports objects that vanished meanwhile
    as DELETED, so the handler sees each object's life completely.
    """

    def __init__(
        self,
        api: KubeApi,
        name: str,
        path: str,
        query: Mapping[str, str],
        handler: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.api = api
        self.path = path
        self.query = dict(query)
        self.handler = handler
        self.stop = stop
        self.known: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                while not self.stop.is_set():
                    version = self._watch(version)
            except _Relist:
                continue
            except Exception as error:
                if not self.stop.is_set():
                    log.warning("%s: %s; listing again in 1s", self.name, error)
                    time.sleep(1)

    def _list(self) -> str:
        listing = self.api.get(self.path, self.query)
        current = {item["metadata"]["uid"]: item for item in listing.get("items") or []}
        for uid in self.known.keys() - current.keys():
            self._handle("DELETED", self.known[uid])
        for item in current.values():
            self._handle("ADDED", item)
        self.known = current
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        query = {**self.query, "resourceVersion": version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(WATCH_SECONDS)}
        for event in self.api.watch(self.path, query):
            kind, item = event.get("type", ""), event.get("object") or {}
            if kind == "ERROR":
                if item.get("code") == 410:
                    raise _Relist
                raise ApiError(int(item.get("code") or 0), str(item.get("message")), str(item.get("reason", "")))
            version = str(item["metadata"]["resourceVersion"])
            if kind == "BOOKMARK":
                continue
            uid = item["metadata"]["uid"]
            if kind == "DELETED":
                self.known.pop(uid, None)
            else:
                self.known[uid] = item
            self._handle(kind, item)
        return version

    def _handle(self, kind: str, item: dict[str, Any]) -> None:
        try:
            self.handler(kind, item)
        except Exception:
            log.exception("%s: handling %s of %s failed", self.name, kind, item["metadata"].get("name"))
