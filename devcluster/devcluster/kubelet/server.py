"""The kubelet's HTTPS endpoint: what the apiserver calls for `kubectl logs` (the pods/log subresource).

GET /containerLogs/{namespace}/{pod}/{container} with follow, tailLines, limitBytes, timestamps,
sinceSeconds, sinceTime and previous, as the real kubelet serves it; GET /healthz. Client certificates are
not checked: only the local apiserver calls it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from devcluster.kubelet.config import KubeletConfig
from devcluster.kubelet.lifecycle import LogLookupError
from devcluster.kubelet.logs import LogOptions, read_log
from devcluster.kubelet.pod_worker import PodWorker
from devcluster.kubelet.status import parse_time

log = logging.getLogger("devcluster.kubelet")

TRUE_WORDS = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool


class BadRequest(Exception):
    pass


def log_options(query: dict[str, list[str]]) -> tuple[LogOptions, bool]:
    """The pods/log query parameters as LogOptions, and `previous`."""
    def text(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    def number(name: str) -> int | None:
        value = text(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError as error:
            raise BadRequest(f"{name}: {value!r} is not a number") from error

    since: datetime | None = None
    since_seconds = number("sinceSeconds")
    if since_seconds is not None:
        since = datetime.now(UTC) - timedelta(seconds=since_seconds)
    elif (since_time := text("sinceTime")) is not None:
        since = parse_time(since_time)
    options = LogOptions(
        tail_lines=number("tailLines"), limit_bytes=number("limitBytes"),
        timestamps=text("timestamps") in TRUE_WORDS, since=since, follow=text("follow") in TRUE_WORDS,
    )
    return options, text("previous") in TRUE_WORDS


class KubeletServer:
    def __init__(self, config: KubeletConfig, find_pod: Callable[[str, str], PodWorker | None]) -> None:
        handler = _handler_class(find_pod)
        self.server = ThreadingHTTPServer((config.serving_address, config.serving_port), handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(config.serving_cert_file), str(config.serving_key_file))
        # The handshake then happens in the request's thread, not in the accepting one.
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, name="kubelet-server", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler_class(find_pod: Callable[[str, str], PodWorker | None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "devcluster-kubelet"

        def log_message(self, format: str, *args: object) -> None:
            log.debug("server: " + format, *args)

        def reply(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self.reply(200, "ok")
                return
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.reply(404, f"devcluster's kubelet does not serve {url.path}\n")
                return
            _, namespace, pod_name, container = parts
            try:
                options, previous = log_options(parse_qs(url.query))
            except BadRequest as error:
                self.reply(400, str(error))
                return
            worker = find_pod(namespace, pod_name)
            if worker is None:
                self.reply(404, f'pod "{pod_name}" does not exist\n')
                return
            try:
                path, finished = worker.log_file(container, previous)
            except LogLookupError as error:
                self.reply(error.status, str(error))
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            if not path.exists():
                return
            try:
                for chunk in read_log(path, options, finished):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client stopped following

    return Handler
