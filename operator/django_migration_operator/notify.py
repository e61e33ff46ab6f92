"""Notifications (spec.notify): a JSON message to each webhook when a run is scheduled, waits for approval, stops
the app, succeeds or fails.

Two formats: `Slack` (an incoming webhook's `{"text": ...}`, Slack mrkdwn) and `JSON` (a plain object for any
receiver). A notification is best effort: `post` never raises and never blocks for longer than its timeout per
network operation, so that a broken receiver cannot hold up or fail a run; it returns a short error for the
caller's event and counts it in `djangoops_notifications_failed`.

A webhook's URL often is its credential (Slack's carries the token in the path), so it is read from a Secret by
the caller and never appears in an error, a log line or an event, not even in part.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final

from django_migration_operator import metrics
from django_migration_operator.status import Reason

SLACK: Final = "Slack"
JSON: Final = "JSON"
FORMATS: Final = (SLACK, JSON)

# The moments a run notifies at (Notice.kind).
SCHEDULED: Final = "Scheduled"
AWAITING_APPROVAL: Final = "AwaitingApproval"
STOPPING: Final = "Stopping"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
KINDS: Final = (SCHEDULED, AWAITING_APPROVAL, STOPPING, SUCCEEDED, FAILED)

_EMOJI: Final = {
    SCHEDULED: ":calendar:",
    AWAITING_APPROVAL: ":raised_hand:",
    STOPPING: ":octagonal_sign:",
    SUCCEEDED: ":white_check_mark:",
    FAILED: ":x:",
}
# A failed restore leaves the app stopped on a database in an unknown state: someone must act now.
_EMOJI_RESTORE_FAILED: Final = ":rotating_light:"
# Slack cuts a message's text at 40,000 characters; a status.message with a migration's output tail stays readable
# well below that, and the full message is one `kubectl describe` away.
_SLACK_MESSAGE_CHARS: Final = 1500
_USER_AGENT: Final = "django-migration-operator"


@dataclass(frozen=True)
class Webhook:
    name: str  # spec.notify[].name: in events and the metric's label
    url: str = field(repr=False)  # from a Secret; kept out of repr so that a logged Webhook does not leak it
    format: str  # SLACK or JSON


@dataclass(frozen=True)
class Notice:
    namespace: str
    name: str
    kind: str  # one of KINDS
    phase: str  # the run's phase now
    message: str  # the run's status.message
    downtime_seconds: float | None  # status.downtimeSeconds once the app was started again
    reason: str | None = None  # the Succeeded condition's reason once ended (e.g. RestoreFailed)
    predicted_downtime_seconds: float | None = None  # a rehearsal's prediction, before the app stops
    # When the notice was made; a field rather than a clock read so that body() is pure.
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def command(self) -> str:
        return f"kubectl -n {self.namespace} describe djm {self.name}"


def body(notice: Notice, format: str) -> dict[str, Any]:
    """The JSON body of `notice` in `format` (SLACK or JSON); ValueError for another format."""
    if format == JSON:
        return {
            "run": {"namespace": notice.namespace, "name": notice.name},
            "kind": notice.kind,
            "phase": notice.phase,
            "reason": notice.reason,
            "message": notice.message,
            "downtimeSeconds": notice.downtime_seconds,
            "predictedDowntimeSeconds": notice.predicted_downtime_seconds,
            "command": notice.command,
            "sentAt": _rfc3339(notice.sent_at),
        }
    if format == SLACK:
        return {"text": _slack_text(notice)}
    raise ValueError(f"unknown notification format {format!r}: expected one of {', '.join(FORMATS)}")


def post(webhook: Webhook, notice: Notice, timeout: float) -> str | None:
    """POSTs body(notice, webhook.format) to the webhook: None on a 2xx, else a short error without the URL.

    Never raises. `timeout` bounds each network operation (connect, send, each read), as the standard library's
    sockets do. Redirects are not followed: urllib would turn a POST into a bodiless GET on 301/302/303 and report
    the GET's 2xx as a delivery. A failure is counted in djangoops_notifications_failed{webhook=webhook.name}.
    """
    error = _post(webhook, notice, timeout)
    if error is not None:
        metrics.NOTIFICATIONS_FAILED.labels(webhook.name).inc()
    return error


def _post(webhook: Webhook, notice: Notice, timeout: float) -> str | None:
    try:
        data = json.dumps(body(notice, webhook.format)).encode()
    except ValueError:
        return f"unknown format {webhook.format!r}: expected one of {', '.join(FORMATS)}"
    try:
        parts = urllib.parse.urlsplit(webhook.url)
        # .port raises on a port out of range, which the socket layer would otherwise wrap onto another port.
        valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:
        return "the URL is not valid"
    # urllib also opens file:, ftp: and data: URLs; a webhook is HTTP(S) only.
    if parts.scheme not in ("http", "https"):
        return "the URL is not an http or https URL"
    if not valid:
        return "the URL is not valid"
    request = urllib.request.Request(webhook.url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": _USER_AGENT})
    # Exceptions' own texts are never used: they may quote the URL or its host (an unknown url type, a TLS
    # hostname mismatch, a redirect's Location). Each maps to a fixed phrase.
    try:
        with _OPENER.open(request, timeout=timeout):
            return None  # a 2xx; its body is not needed
    except urllib.error.HTTPError as e:
        return _http_error(e.code)
    except urllib.error.URLError as e:
        return _network_error(e.reason, timeout)
    except OSError as e:  # a timeout or reset while reading the response arrives unwrapped
        return _network_error(e, timeout)
    except http.client.HTTPException as e:  # a malformed or missing status line
        return f"bad HTTP response ({type(e).__name__})"
    except ValueError:  # e.g. a URL with an invalid port or host
        return "the URL is not valid"
    except Exception as e:  # never raise: a notification must not fail the run
        return f"unexpected error ({type(e).__name__})"


def _http_error(code: int) -> str:
    try:
        phrase = HTTPStatus(code).phrase  # the standard phrase, not the server's text
    except ValueError:
        phrase = ""
    text = f"HTTP {code} {phrase}".rstrip()
    if 300 <= code < 400:
        text += " (redirects are not followed)"
    return text


def _network_error(reason: object, timeout: float) -> str:
    if isinstance(reason, http.client.RemoteDisconnected):  # before its base, ConnectionResetError
        return "the server closed the connection without a response"
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return f"timed out after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "the host name did not resolve"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed"
    if isinstance(reason, ssl.SSLError):
        return "TLS error"
    if isinstance(reason, OSError) and reason.errno is not None:
        return f"connection failed ({type(reason).__name__}, errno {reason.errno})"
    return f"connection failed ({type(reason).__name__})"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER: Final = urllib.request.build_opener(_NoRedirect)


def _slack_text(notice: Notice) -> str:
    emoji = _EMOJI.get(notice.kind, ":information_source:")
    if notice.reason == Reason.RESTORE_FAILED:
        emoji = _EMOJI_RESTORE_FAILED
    head = f"{emoji} *{_slack_escape(notice.namespace)}/{_slack_escape(notice.name)}* {_slack_escape(notice.kind)}"
    if notice.phase != notice.kind:  # e.g. Stopping while the phase is ScalingDown; Failed at Failed says it once
        head += f" ({_slack_escape(notice.phase)})"
    message = notice.message.strip()
    if len(message) > _SLACK_MESSAGE_CHARS:
        message = message[:_SLACK_MESSAGE_CHARS - 1].rstrip() + "…"
    facts = [_slack_escape(message)] if message else []
    if notice.downtime_seconds is not None:
        facts.append(f"{_duration(notice.downtime_seconds)} downtime")
    elif notice.predicted_downtime_seconds is not None:
        facts.append(f"predicted downtime {_duration(notice.predicted_downtime_seconds)}")
    text = f"{head}: {', '.join(facts)}" if facts else head
    # Backticks inside a code span would end it; namespaces and names are DNS labels and have none.
    return f"{text} — `{notice.command}`"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions (<!channel>): a migration's output must not ping anyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:  # a naive time is taken as UTC, as the operator's clocks are
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
