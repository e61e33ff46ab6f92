"""A fake API server under the kubernetes package's real transport: the urllib3 pool of `ApiClient.rest_client` is
replaced, so every request goes through the ApiClient's serialisation, authentication and decoding, and none leaves
the process."""

from __future__ import annotations

import http
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import urllib3
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration

HOST = "https://apiserver.test:6443"


@dataclass(frozen=True)
class Request:
    """One request as it reached the pool."""

    method: str
    url: str  # as sent: the path quoted, the query encoded
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the JSON sent, parsed; None without a body


class FakePool(ABC):
    """The urllib3 pool's place: each request recorded in `requests` and answered by `answer`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    @abstractmethod
    def answer(self, request: Request) -> tuple[int, Any]:
        """The status and the body: a str is sent as text/plain, anything else as JSON."""

    def request(self, method: str, url: str, **options: Any) -> urllib3.HTTPResponse:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == HOST, url
        body = options.get("body")
        request = Request(method, url, parts.path, dict(parse_qsl(parts.query)), dict(options.get("headers") or {}),
                          json.loads(body) if body else None)
        self.requests.append(request)
        status, answer = self.answer(request)
        text = isinstance(answer, str)
        return urllib3.HTTPResponse(
            body=(answer if text else json.dumps(answer)).encode(), status=status,
            reason=http.HTTPStatus(status).phrase, preload_content=False,
            headers={"Content-Type": "text/plain; charset=utf-8" if text else "application/json"})


def api_client(pool: FakePool, token: str = "token") -> ApiClient:
    """An ApiClient with a bearer token, as in a cluster, over `pool`."""
    configuration = Configuration(host=HOST)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    client = ApiClient(configuration)
    client.rest_client.pool_manager = pool
    return client
