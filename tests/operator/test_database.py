"""database.py against a real PostgreSQL of its own: what Verifying reads, on one connection."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from django_migration_operator import database
from django_migration_operator.database import DatabaseUrl, Unreachable, connection_problem, verification
from tests.pgserver import create_database, throwaway_postgres


def test_verification_reads_the_counts_the_applied_migrations_and_the_checks_on_one_connection() -> None:
    with throwaway_postgres() as (server_url, _):
        url = create_database(server_url, "shop")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE blog_post (id int, category_id int)")
            connection.execute("INSERT INTO blog_post VALUES (1, 1), (2, NULL)")
            connection.execute("CREATE TABLE django_migrations (app text, name text)")
            connection.execute("INSERT INTO django_migrations VALUES ('blog', '0001_initial')")
        checks = {"uncategorised": "SELECT count(*) FROM blog_post WHERE category_id IS NULL",
                  "writes": "DELETE FROM blog_post", "empty": "SELECT 1 WHERE false"}
        before = _connections(server_url)
        found = verification(DatabaseUrl(url), ("blog_post",), checks)
        assert _connections(server_url) == before + 1, "one connection for all of it"
        assert found.row_counts == {"blog_post": 2}
        assert found.applied == frozenset({("blog", "0001_initial")})
        assert found.check_results["uncategorised"] == "1" and found.check_results["empty"] == ""
        assert found.check_results["writes"].startswith("error: ") and "read-only" in found.check_results["writes"]
        assert verification(DatabaseUrl(server_url), (), {}).applied == frozenset(), "no django_migrations table"


def _connections(server_url: str) -> int:
    """Sessions the server has accepted on the database shop so far (pg_stat_database, counted as each ends)."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute("SELECT sum(sessions) FROM pg_stat_database WHERE datname = 'shop'").fetchone()
    return int(str(row[0])) if row else 0


def test_a_busy_server_is_unreachable_for_now_and_a_wrong_url_is_a_problem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with throwaway_postgres() as (server_url, _):
        url = create_database(server_url, "shop")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE ROLE limited LOGIN CONNECTION LIMIT 1")
        limited = DatabaseUrl(url.replace("postgres@", "limited@"))
        assert connection_problem(limited) is None
        # That check's backend ends after its client closed: until then it holds the role's one connection.
        with psycopg.connect(url, autocommit=True) as connection:
            deadline = time.monotonic() + 10
            while connection.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'limited'").fetchone() \
                    != (0,):
                assert time.monotonic() < deadline, "the check's connection never ended"
                time.sleep(0.01)
        with psycopg.connect(limited.url), pytest.raises(Unreachable, match="too many connections for role"):
            connection_problem(limited)
        problem = connection_problem(DatabaseUrl(url.replace("/shop", "/nowhere")))
        assert problem is not None and 'database "nowhere" does not exist' in problem
    # A server that accepts the connection and never answers: the handshake times out.
    monkeypatch.setattr(database, "CONNECT_TIMEOUT_SECONDS", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(Unreachable, match="timeout"):
            connection_problem(DatabaseUrl(f"postgres://postgres@127.0.0.1:{port}/shop"))
