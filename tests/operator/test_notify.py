"""notify.py: the webhook bodies (Slack and plain JSON), and post() against a real HTTP server on 127.0.0.1.

The server answers by path: /ok/... records the request and answers 200, /fail/... answers 500, /moved/...
redirects, /hang/... never answers (until the fixture's teardown lets it go). Every error post() returns is
checked for the URL's host, port, path and token: a webhook URL is a credential.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import REGISTRY

from django_migration_operator import notify
from django_migration_operator.notify import Notice, Webhook, body, post

TOKEN = "xoxb-s3cr3t-T0k3n"
SENT_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SUCCEEDED = Notice(namespace="shop", name="blog-release-2", kind="Succeeded", phase="Succeeded",
                   message="3 migrations applied", downtime_seconds=4.2, reason="PlanApplied", sent_at=SENT_AT)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    host: str
    port: int
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, kind: str) -> str:
        return f"http://{self.host}:{self.port}/{kind}/services/T0001/B0002/{TOKEN}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server: ThreadingHTTPServer
    state = Receiver("127.0.0.1", 0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            kind = self.path.split("/")[1]
            if kind == "hang":
                state.release.wait(30)  # never answers within any test's timeout
                return
            if kind == "ok":
                state.received.append(Received(self.command, self.path, dict(self.headers.items()), data))
                self.send_response(200)
            elif kind == "moved":
                self.send_response(302)
                self.send_header("Location", f"http://{state.host}:{state.port}/ok/elsewhere/{TOKEN}")
            else:
                self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keeps pytest's output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()  # a hanging handler returns, so that nothing outlives the test
        server.shutdown()
        server.server_close()
        thread.join(5)


def failures(name: str) -> float:
    return REGISTRY.get_sample_value("djangoops_notifications_failed_total", {"webhook": name}) or 0.0


def assert_redacted(error: str | None, url: str) -> str:
    assert error, "expected an error"
    parts = re.match(r"https?://([^:/]+):(\d+)(/.*)", url)
    assert parts
    host, port, path = parts.groups()
    for secret in (url, host, port, path, TOKEN, "services", "T0001", "B0002"):
        assert secret not in error, f"{secret!r} leaked into {error!r}"
    assert len(error) < 120, "a short error, for an event"
    return error


# --- body() ---------------------------------------------------------------------------------------------------


def test_json_body_carries_the_run_its_state_and_the_command() -> None:
    assert body(SUCCEEDED, "JSON") == {
        "run": {"namespace": "shop", "name": "blog-release-2"},
        "kind": "Succeeded",
        "phase": "Succeeded",
        "reason": "PlanApplied",
        "message": "3 migrations applied",
        "downtimeSeconds": 4.2,
        "predictedDowntimeSeconds": None,
        "command": "kubectl -n shop describe djm blog-release-2",
        "sentAt": "2025-01-02T03:04:05Z",
    }


def test_slack_body_is_one_readable_line() -> None:
    assert body(SUCCEEDED, "Slack") == {
        "text": ":white_check_mark: *shop/blog-release-2* Succeeded: 3 migrations applied, 4s downtime"
                " — `kubectl -n shop describe djm blog-release-2`"}


def test_bodies_never_carry_a_url() -> None:
    for format in notify.FORMATS:
        text = json.dumps(body(SUCCEEDED, format))
        assert "://" not in text and TOKEN not in text


def test_each_kind_has_its_own_emoji_and_a_failed_restore_its_alarm() -> None:
    emojis = set()
    for kind in notify.KINDS:
        text = body(Notice("shop", "run", kind, kind, "m", None, sent_at=SENT_AT), "Slack")["text"]
        emojis.add(text.split(" ")[0])
    assert len(emojis) == len(notify.KINDS)
    restore = Notice("shop", "run", "Failed", "Failed", "the restore failed: the app stays stopped", 30,
                     reason="RestoreFailed", sent_at=SENT_AT)
    assert body(restore, "Slack")["text"].startswith(":rotating_light: *shop/run* Failed: the restore failed")


def test_slack_shows_the_phase_when_it_differs_and_the_predicted_downtime_before_the_stop() -> None:
    waiting = Notice("shop", "run", "AwaitingApproval", "AwaitingApproval", "2 migrations to apply", None,
                     predicted_downtime_seconds=125, sent_at=SENT_AT)
    assert body(waiting, "Slack")["text"] == (":raised_hand: *shop/run* AwaitingApproval: 2 migrations to apply,"
                                              " predicted downtime 2m 5s — `kubectl -n shop describe djm run`")
    assert body(waiting, "JSON")["predictedDowntimeSeconds"] == 125
    stopping = Notice("shop", "run", "Stopping", "ScalingDown", "", None, sent_at=SENT_AT)
    assert body(stopping, "Slack")["text"] == (":octagonal_sign: *shop/run* Stopping (ScalingDown)"
                                               " — `kubectl -n shop describe djm run`")


def test_slack_text_escapes_mrkdwn_controls_and_cuts_a_long_message() -> None:
    loud = Notice("shop", "run", "Failed", "Failed", "<!channel> a < b && c > d", None, sent_at=SENT_AT)
    text = body(loud, "Slack")["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; a &lt; b &amp;&amp; c &gt; d" in text
    long = Notice("shop", "run", "Failed", "Failed", "x" * 10_000, None, sent_at=SENT_AT)
    text = body(long, "Slack")["text"]
    assert len(text) < 1700 and "…" in text and text.endswith("`kubectl -n shop describe djm run`")
    assert body(long, "JSON")["message"] == "x" * 10_000, "the plain body keeps the whole message"


@pytest.mark.parametrize(("moment", "expected"), [
    (SENT_AT, "2025-01-02T03:04:05Z"),
    (datetime(2025, 1, 2, 4, 4, 5, 999_999, tzinfo=timezone(timedelta(hours=1))), "2025-01-02T03:04:05Z"),
    (datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05Z"),
])
def test_sent_at_is_rfc3339_in_utc(moment: datetime, expected: str) -> None:
    notice = Notice("shop", "run", "Scheduled", "Scheduled", "", None, sent_at=moment)
    assert body(notice, "JSON")["sentAt"] == expected


def test_sent_at_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    sent = datetime.fromisoformat(body(Notice("shop", "run", "Scheduled", "Scheduled", "", None), "JSON")["sentAt"])
    assert before <= sent <= datetime.now(UTC)


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (4.4, "4s"), (59.6, "1m"), (65, "1m 5s"),
                                               (3600, "1h"), (3720, "1h 2m")])
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    notice = Notice("shop", "run", "Succeeded", "Succeeded", "done", seconds, sent_at=SENT_AT)
    assert f"done, {text} downtime —" in body(notice, "Slack")["text"]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notification format 'Teams'"):
        body(SUCCEEDED, "Teams")


def test_a_webhooks_repr_hides_its_url() -> None:
    webhook = Webhook("slack", f"https://hooks.slack.com/services/{TOKEN}", "Slack")
    assert TOKEN not in repr(webhook) and "hooks.slack.com" not in repr(webhook)


# --- post() against a real server -------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["JSON", "Slack"])
def test_a_2xx_receives_the_exact_json(receiver: Receiver, format: str) -> None:
    name = f"ok-{format}"
    before = failures(name)
    assert post(Webhook(name, receiver.url("ok"), format), SUCCEEDED, timeout=5) is None
    (request,) = receiver.received
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == body(SUCCEEDED, format)
    assert failures(name) == before


def test_a_500_is_an_error_naming_500_and_counted(receiver: Receiver) -> None:
    url = receiver.url("fail")
    before = failures("fails")
    error = assert_redacted(post(Webhook("fails", url, "JSON"), SUCCEEDED, timeout=5), url)
    assert "500" in error
    assert failures("fails") == before + 1


def test_a_receiver_that_never_answers_times_out_within_the_timeout(receiver: Receiver) -> None:
    url = receiver.url("hang")
    start = time.monotonic()
    error = post(Webhook("hangs", url, "Slack"), SUCCEEDED, timeout=1.0)
    elapsed = time.monotonic() - start
    assert "timed out" in assert_redacted(error, url)
    assert 0.9 <= elapsed <= 2.0, elapsed


def test_a_refused_connection_is_an_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on (once closed)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0001/B0002/{TOKEN}"
    start = time.monotonic()
    error = assert_redacted(post(Webhook("refused", url, "JSON"), SUCCEEDED, timeout=5), url)
    assert "refused" in error
    assert time.monotonic() - start < 2
    assert failures("refused") >= 1


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    url = receiver.url("moved")
    error = assert_redacted(post(Webhook("moved", url, "JSON"), SUCCEEDED, timeout=5), url)
    assert "302" in error and "not followed" in error
    assert receiver.received == [], "a POST redirected would arrive as a bodiless GET"


@pytest.mark.parametrize("url", [f"file:///etc/{TOKEN}", f"ftp://127.0.0.1:2121/services/{TOKEN}",
                                 f"http://127.0.0.1:99999/services/{TOKEN}", f"127.0.0.1:8080/services/{TOKEN}",
                                 f"http:///services/{TOKEN}", f"https://[::1/services/{TOKEN}"])
def test_a_url_that_is_not_an_http_url_is_an_error_without_it(url: str) -> None:
    error = post(Webhook("bad-url", url, "JSON"), SUCCEEDED, timeout=1)
    assert error and error.startswith("the URL is not"), error
    assert TOKEN not in error and "127.0.0.1" not in error and "etc" not in error and "99999" not in error


def test_an_unknown_format_is_an_error_not_an_exception(receiver: Receiver) -> None:
    error = post(Webhook("teams", receiver.url("ok"), "Teams"), SUCCEEDED, timeout=1)
    assert error and "Teams" in error
    assert receiver.received == []
