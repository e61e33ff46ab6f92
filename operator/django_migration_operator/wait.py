"""`python -m django_migration_operator.wait NAME`: waits until a DjangoMigration ends, printing its progress.

Helm waits for hook Jobs, not for custom resources: the Helm hook (charts/django-migration-hook) runs this in a Job
after creating the DjangoMigration, so the Job ends with the run and a failed run fails the upgrade before the
Deployment is touched. It also serves CI scripts: `kubectl wait` says nothing while it waits and nothing about why
a run failed.

It watches the one object (list, then watch from that resourceVersion; a fresh list after 410 Gone), prints every
phase change with status.message and exits with

    0  the run Succeeded
    1  the run Failed: the message says why and where the app and the data are
    2  timed out (the run goes on), the object is missing or was deleted, or the API refused us

Needs get, list and watch on djangomigrations in the namespace, nothing else.

That watch, `watch_run`, is also how the demo, the e2e tests and the bench follow a run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django_migration_operator.resource import GROUP, PLURAL, VERSION
from django_migration_operator.status import ConditionType, RunStatus, condition

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_UNKNOWN = 2  # timed out, missing, deleted, or not readable

DEFAULT_TIMEOUT_SECONDS = 3600
# Each watch request ends after this at the latest and is opened again: a silently dropped connection is noticed.
WATCH_SECONDS = 60
RETRY_SECONDS = 2.0
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


# --- what to say and when to stop: pure -------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    lines: tuple[str, ...] = ()
    exit_code: int | None = None  # None: keep waiting


def _compact(message: str) -> str:
    """A message on the way, on one line: a failing Job's output tail (Restoring) is shown in full at the end."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} [... {len(lines) - 2} more lines ...] {lines[-1]}"


class Progress:
    """What the waiter has shown so far. `see` takes the run's latest status and says what to print and whether
    to stop; the other methods word the endings that do not come from the status."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self.phase = ""
        self.message = ""
        self._shown: tuple[str, str] | None = None

    @property
    def ref(self) -> str:
        return f"DjangoMigration {self.namespace}/{self.name}"

    @property
    def _describe(self) -> str:
        return f"kubectl -n {self.namespace} describe djangomigration {self.name}"

    def see(self, status: RunStatus | None) -> Report:
        status = status or RunStatus()
        self.phase = str(status.get("phase") or "")
        self.message = str(status.get("message") or "")
        if (self.phase, self.message) == self._shown:
            return Report()
        self._shown = (self.phase, self.message)
        if not self.phase:
            return Report((f"{self.ref}: created, waiting for the operator to start it",))
        if self.phase == "Succeeded":
            return Report((f"{self.ref}: Succeeded: {self.message}",), EXIT_SUCCEEDED)
        if self.phase == "Failed":
            reason = condition(status, ConditionType.SUCCEEDED).get("reason") or \
                status.get("failure", {}).get("reason")
            facts = [f"reason {reason}"] if reason else []
            rolled_back = condition(status, ConditionType.ROLLED_BACK).get("status")
            if rolled_back:
                facts.append(f"RolledBack={rolled_back}")
            summary = f"{self.ref} failed ({', '.join(facts)})" if facts else f"{self.ref} failed"
            return Report((f"{self.ref}: Failed: {self.message}",
                           f"{summary}: the migration did not succeed, so the release must not roll out. "
                           f"Details: {self._describe}"), EXIT_FAILED)
        message = _compact(self.message)
        return Report((f"{self.ref}: {self.phase}: {message}" if message else f"{self.ref}: {self.phase}",))

    def timed_out(self, seconds: float) -> Report:
        if self.phase:
            where = f"still in phase {self.phase}" + (f" ({_compact(self.message)})" if self.message else "")
            hint = "the run goes on without this waiter"
        else:
            where = "the operator has not started it"
            hint = f"is the operator running and watching namespace {self.namespace}?"
        stop = " " if hint.endswith("?") else ". "
        return Report((f"{self.ref}: timed out after {seconds:.0f}s, {where}; {hint}{stop}Follow it with "
                       f"`kubectl -n {self.namespace} get djangomigration {self.name} -w`",), EXIT_UNKNOWN)

    def missing(self) -> Report:
        return Report((f"{self.ref} not found: nothing to wait for",), EXIT_UNKNOWN)

    def deleted(self) -> Report:
        where = f" in phase {self.phase}" if self.phase else ""
        return Report((f"{self.ref} was deleted{where} before it ended: its result is unknown",), EXIT_UNKNOWN)

    def refused(self, error: str) -> Report:
        return Report((f"{self.ref}: cannot read it: {error}",), EXIT_UNKNOWN)


# --- the watcher: list, watch, list again after 410; the waiter's loop on it ------------------------------------


class Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


class Transient(Exception):
    """The API server restarting, a connection reset, a 5xx or 429: look again, do not fail the upgrade."""


class Source(Protocol):
    def get(self) -> tuple[dict[str, Any] | None, str]:
        """The object (None when missing) and the resourceVersion to watch from."""

    def events(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events of the object after `resource_version`, ending within `timeout_seconds`."""


@dataclass(frozen=True)
class Sighting:
    """The run as one list or one watch event showed it."""

    run: dict[str, Any] | None  # None: not there (a list found no such object, or a watch saw it deleted)
    deleted: bool = False  # a watch saw it deleted


def watch_run(source: Source, timeout: float, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep,
              on_retry: Callable[[Transient], None] = lambda _: None) -> Iterator[Sighting]:
    """The run at each look for `timeout` seconds (math.inf: until the caller stops): a list, then every event of
    watches from the last resourceVersion seen; a list again after 410 Gone, and after an error a retry may cure
    (`on_retry` hears of it first), after a pause. The caller stops once it saw what it waits for: the iteration
    ends only at the timeout."""
    deadline = clock() + timeout
    resource_version: str | None = None
    while (remaining := deadline - clock()) > 0:
        try:
            if resource_version is None:
                run, resource_version = source.get()
                yield Sighting(run)
                continue
            for kind, body in source.events(resource_version, max(1, int(min(WATCH_SECONDS, remaining)))):
                resource_version = str((body.get("metadata") or {}).get("resourceVersion") or resource_version)
                if kind == "DELETED":
                    yield Sighting(None, deleted=True)
                elif kind != "BOOKMARK":
                    yield Sighting(body)
        except Gone:
            resource_version = None
        except Transient as error:
            on_retry(error)
            sleep(min(RETRY_SECONDS, max(0.0, deadline - clock())))
            resource_version = None


def follow(source: Source, progress: Progress, timeout: float, write: Callable[[str], None],
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """Reports the run's progress until it ends or `timeout` seconds passed; returns the exit code."""

    def say(report: Report) -> int | None:
        for line in report.lines:
            write(line)
        return report.exit_code

    for seen in watch_run(source, timeout, clock, sleep):
        if seen.run is None:
            return say(progress.deleted() if seen.deleted else progress.missing()) or EXIT_UNKNOWN
        code = say(progress.see(seen.run.get("status")))
        if code is not None:
            return code
    return say(progress.timed_out(timeout)) or EXIT_UNKNOWN


# --- the Kubernetes side ----------------------------------------------------------------------------------------


class KubeSource:
    """The DjangoMigration through the API: one list by name, then watches of that name. Without `api_client`, the
    pod's service account in a cluster, else the default kubeconfig."""

    def __init__(self, namespace: str, name: str, api_client: Any = None) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.name = name
        self.api = client.CustomObjectsApi(api_client or _api_client())

    def get(self) -> tuple[dict[str, Any] | None, str]:
        with _transient_errors():
            listing: dict[str, Any] = self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, field_selector=f"metadata.name={self.name}")
        items: list[dict[str, Any]] = listing.get("items") or []
        return (items[0] if items else None), str(listing["metadata"]["resourceVersion"])

    def events(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        from kubernetes import watch

        stream = watch.Watch()
        try:
            with _transient_errors():
                for event in stream.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                           PLURAL, field_selector=f"metadata.name={self.name}",
                                           resource_version=resource_version, allow_watch_bookmarks=True,
                                           timeout_seconds=timeout_seconds, _request_timeout=timeout_seconds + 15):
                    yield str(event["type"]), dict(event["raw_object"])
        finally:
            stream.stop()


@contextlib.contextmanager
def _transient_errors() -> Iterator[None]:
    """410 becomes Gone; what a retry may cure becomes Transient; anything else (403, 404) goes up as it is."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as error:
        if error.status == 410:
            raise Gone() from error
        if error.status in (429, 500, 502, 503, 504):
            raise Transient(f"HTTP {error.status}") from error
        raise
    except (HTTPError, ConnectionError) as error:
        raise Transient(str(error)) from error


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def default_namespace() -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else default."""
    if IN_CLUSTER_NAMESPACE.is_file():
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts()
        return str((active or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # no kubeconfig: the API call will say so
        return "default"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m django_migration_operator.wait",
        description="Waits until a DjangoMigration ends. Exit code 0: Succeeded, 1: Failed, "
                    "2: timed out, missing, deleted or not readable.")
    parser.add_argument("name", help="the DjangoMigration's name")
    parser.add_argument("--namespace", "-n", help="its namespace (default: the pod's, or the kubeconfig context's)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="give up after this many seconds, exit code 2 (default: %(default)s)")
    args = parser.parse_args(argv)
    namespace = args.namespace or default_namespace()
    progress = Progress(namespace, args.name)

    def write(line: str) -> None:
        print(line, flush=True)

    from kubernetes.client.exceptions import ApiException

    try:
        return follow(KubeSource(namespace, args.name), progress, args.timeout, write)
    except ApiException as error:
        for line in progress.refused(f"HTTP {error.status} {error.reason}").lines:
            write(line)
        return EXIT_UNKNOWN
    except Exception as error:  # no kubeconfig, bad certificate, ...: a clear line rather than a traceback
        for line in progress.refused(f"{type(error).__name__}: {error}").lines:
            write(line)
        return EXIT_UNKNOWN


if __name__ == "__main__":
    sys.exit(main())
