"""The checks of a Pending run's spec: every problem they report, in order, from facts; and which facts are read.

The wording is pinned in test_messages.py; here, which problems a spec has and in which order.
"""

from __future__ import annotations

from typing import Any

import pytest

from django_migration_operator import database, messages, validation
from django_migration_operator.database import DatabaseUrl
from django_migration_operator.kube import ClaimState
from django_migration_operator.resource import RunRef
from django_migration_operator.validation import Facts, problems
from tests.operator.test_workflow import spec

RUN = RunRef("shop", "release-9", "uid-9")
URL = DatabaseUrl("postgres://app:secret@db.internal:5432/shop")
DEPLOYMENT: dict[str, Any] = {"spec": {"template": {"spec": {"containers": [{"name": "django", "image": "shop:2"}]}}}}
GIB = 2**30
HOOKS = [{"name": "ops", "urlSecret": {"name": "hooks", "key": "ops"}},
         {"name": "team", "urlSecret": {"name": "hooks", "key": "team"}}]


def facts(**changes: Any) -> Facts:
    """The facts of a cluster and a database where everything the spec names is there, as changed."""
    everything_there: dict[str, Any] = {"deployments": {"web": DEPLOYMENT, "worker": DEPLOYMENT},
                                        "claim": ClaimState("Bound", 10 * GIB), "url": URL, "size_bytes": GIB}
    return Facts(**{**everything_there, **changes})


def test_a_spec_the_cluster_and_the_database_agree_with_has_no_problem() -> None:
    assert problems(RUN, spec(rehearsal={"enabled": True}), facts()) == []


def test_every_problem_before_the_database_in_the_order_of_the_spec() -> None:
    s = spec(window={"start": "0 2 * * *", "duration": "soon"}, notify=HOOKS,
             app={"deployment": "web", "stop": ["worker"], "container": "gunicorn"})
    found = problems(RUN, s, facts(deployments={"web": DEPLOYMENT, "worker": None}, claim=None,
                                   missing_webhook_secrets=frozenset({("hooks", "ops"), ("hooks", "team")}), url=None))
    assert found == [
        "window.duration: 'soon' is not a duration; write it as 2h, 90m or 1h30m",
        "app.container: no container 'gunicorn' in Deployment 'web' (containers: django); set app.container to one "
        "of them",
        messages.deployment_not_found("app.stop", "worker", "shop"),
        messages.claim_not_found("backups", "shop"),
        messages.webhook_secret_not_found("ops", "hooks", "ops", "shop"),
        messages.webhook_secret_not_found("team", "hooks", "team", "shop"),
        messages.url_secret_not_found("db", "url", "shop"),
    ]


def test_every_problem_of_the_database_in_the_order_of_the_spec() -> None:
    found = problems(RUN, spec(rehearsal={"enabled": True}), facts(
        claim=ClaimState("Bound", 100 * 2**20), size_bytes=2 * GIB, createdb_refused="role app may not create "
        "databases (it needs CREATEDB)", missing_tables=("blog_post", "blog_comment")))
    refused = "role app may not create databases (it needs CREATEDB)"
    assert found == [
        messages.claim_too_small("backups", 100 * 2**20, "shop", 2 * GIB),
        messages.restore_impossible(refused),
        messages.rehearsal_impossible(refused),
        messages.table_not_found("blog_post", "shop"),
        messages.table_not_found("blog_comment", "shop"),
    ]


def test_a_missing_app_deployment_is_named_by_its_field() -> None:
    assert problems(RUN, spec(), facts(deployments={"web": None, "worker": DEPLOYMENT})) == [
        messages.deployment_not_found("app.deployment", "web", "shop")]


def test_a_lost_claim_is_refused_and_a_pending_one_is_not() -> None:
    assert problems(RUN, spec(), facts(claim=ClaimState("Lost", None))) == [messages.claim_lost("backups")]
    # Waiting for its first consumer (WaitForFirstConsumer): the backup pod is that consumer.
    assert problems(RUN, spec(), facts(claim=ClaimState("Pending", 10 * GIB))) == []


def test_the_claim_is_not_looked_at_without_a_backup() -> None:
    assert problems(RUN, spec(backup={"enabled": False, "volumeClaim": "backups"}), facts(claim=None)) == []


@pytest.mark.parametrize(("capacity", "size", "too_small"), [
    (100 * 2**20, 1000 * 2**20, False),  # a tenth of the database on disk: a dump fits
    (100 * 2**20, 1000 * 2**20 + 1, True),
    (None, 1000 * GIB, False),  # the claim does not say: only the volume tells
])
def test_a_claim_is_too_small_under_a_tenth_of_the_database(capacity: int | None, size: int, too_small: bool) -> None:
    found = problems(RUN, spec(), facts(claim=ClaimState("Bound", capacity), size_bytes=size))
    assert found == ([messages.claim_too_small("backups", capacity, "shop", size)] if capacity and too_small else [])


@pytest.mark.parametrize(("top_level", "expected"), [
    ({}, ["restore"]),
    ({"onFailure": "Keep"}, []),
    ({"rehearsal": {"enabled": True}, "onFailure": "Keep"}, ["rehearsal"]),
    ({"backup": {"enabled": False}}, []),
    ({"backup": {"enabled": False}, "rehearsal": {"enabled": True}}, ["rehearsal"]),
])
def test_a_role_without_createdb_is_refused_where_a_database_must_be_created(top_level: dict[str, Any],
                                                                             expected: list[str]) -> None:
    refused = "role app may not create databases (it needs CREATEDB)"
    wording = {"restore": messages.restore_impossible(refused), "rehearsal": messages.rehearsal_impossible(refused)}
    assert problems(RUN, spec(**top_level), facts(createdb_refused=refused)) == [wording[w] for w in expected]


@pytest.mark.parametrize(("url", "unreachable", "last"), [
    (None, None, messages.url_secret_not_found("db", "url", "shop")),
    (DatabaseUrl("mysql://db/shop"), None, messages.url_invalid("db", "url", "is not a postgres:// URL")),
    (DatabaseUrl("postgres://db.internal:5432/"), None,
     messages.url_invalid("db", "url", "names no database (postgres://user:password@host:port/DATABASE)")),
    (URL, "connection refused", messages.cannot_connect("db", "shop", "connection refused")),
])
def test_nothing_is_said_of_the_database_until_its_url_is_valid_and_it_answers(
        url: DatabaseUrl | None, unreachable: str | None, last: str) -> None:
    found = problems(RUN, spec(), facts(deployments={"web": DEPLOYMENT, "worker": None}, url=url,
                                        unreachable=unreachable, size_bytes=100 * GIB, createdb_refused="no",
                                        missing_tables=("blog_post",)))
    assert found == [messages.deployment_not_found("app.stop", "worker", "shop"), last]


# --- read_facts: what is read, and what is not asked -------------------------------------------------------------


class SecretsKube:
    """The reads of validation: the Deployments and the claim are there, Secrets as given."""

    def __init__(self, secrets: dict[tuple[str, str], str]) -> None:
        self.secrets = secrets

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return DEPLOYMENT

    def claim(self, namespace: str, name: str) -> ClaimState | None:
        return ClaimState("Bound", GIB)

    def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((name, key))


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What is asked of the database: the connection fails when the URL's host is 'down'."""
    calls: list[str] = []

    def answer(name: str, value: Any) -> None:
        def call(url: DatabaseUrl, *_: Any) -> Any:
            calls.append(name)
            return value(url) if callable(value) else value
        monkeypatch.setattr(database, name, call)

    answer("connection_problem", lambda url: "refused" if "@down" in url.url else None)
    answer("database_size", 2 * GIB)
    answer("createdb_problem", None)
    answer("missing_tables", ["blog_comment"])
    return calls


def read(secrets: dict[tuple[str, str], str], **top_level: Any) -> Facts:
    return validation.read_facts(SecretsKube(secrets), RUN, spec(notify=HOOKS, **top_level))  # type: ignore[arg-type]


def test_the_facts_of_a_reachable_database(asked: list[str]) -> None:
    found = read({("db", "url"): URL.url, ("hooks", "team"): "https://hooks.example/team"})
    assert found == Facts(deployments={"web": DEPLOYMENT, "worker": DEPLOYMENT}, claim=ClaimState("Bound", GIB),
                          missing_webhook_secrets=frozenset({("hooks", "ops")}), url=URL, size_bytes=2 * GIB,
                          missing_tables=("blog_comment",))
    assert asked == ["connection_problem", "database_size", "createdb_problem", "missing_tables"]


def test_a_missing_or_invalid_url_is_never_connected_to(asked: list[str]) -> None:
    assert read({}).url is None
    assert read({("db", "url"): "mysql://db/shop"}).url == DatabaseUrl("mysql://db/shop")
    assert asked == []


def test_a_database_that_does_not_answer_is_asked_nothing_more(asked: list[str]) -> None:
    found = read({("db", "url"): "postgres://app:secret@down:5432/shop"})
    assert found.unreachable == "refused" and found.size_bytes is None and found.missing_tables == ()
    assert asked == ["connection_problem"]


def test_the_size_and_createdb_are_asked_only_when_a_check_needs_them(asked: list[str]) -> None:
    read({("db", "url"): URL.url}, backup={"enabled": False})
    assert asked == ["connection_problem", "missing_tables"]
