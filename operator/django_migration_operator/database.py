"""Every PostgreSQL call of the operator (psycopg): connection checks, row counts, django_migrations, checks.

The database URL comes from the run's Secret. It is passed to psycopg and nowhere else: error messages are
built from psycopg's text with the URL's password removed, so a secret never reaches status, events or logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

CONNECT_TIMEOUT_SECONDS = 5

Connection = psycopg.Connection[tuple[object, ...]]


class Unreachable(Exception):
    """The server did not answer, or the connection broke mid-way: a later attempt may get through.

    Its text is psycopg's first line with the password removed.
    """


@dataclass(frozen=True)
class DatabaseUrl:
    url: str

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.url).path.lstrip("/"))

    @property
    def identity(self) -> str:
        """host:port/name: what makes two runs touch the same database (no credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5432}/{self.name}"

    def problem(self) -> str | None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("postgres", "postgresql"):
            return "is not a postgres:// URL"
        if not self.name:
            return "names no database (postgres://user:password@host:port/DATABASE)"
        return None

    def with_name(self, name: str) -> DatabaseUrl:
        """The same server, credentials and options, another database."""
        return DatabaseUrl(urlunsplit(urlsplit(self.url)._replace(path="/" + quote(name))))

    def redact(self, text: str) -> str:
        password = urlsplit(self.url).password
        for secret in filter(None, {password, unquote(password or "")}):
            text = text.replace(secret, "****")
        return text


# A server too busy to finish the handshake in time, or out of connection slots: it is there and the URL is right, so a
# later look gets through (bench/scale.py: 50 runs checked at once on 2 busy cores, a dozen failed as bad input). The
# slots' refusal comes as libpq's text, without a SQLSTATE.
_OUT_OF_SLOTS = ("too many clients already", "too many connections for")


def connection_problem(database: DatabaseUrl) -> str | None:
    """Why the URL does not lead to its database (refused, unknown host, wrong password, no such database); None
    when it does. A busy server raises Unreachable: the run waits for it, as for an outage later on."""
    try:
        with psycopg.connect(database.url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        if isinstance(error, psycopg.errors.ConnectionTimeout) or any(text in str(error) for text in _OUT_OF_SLOTS):
            raise Unreachable(_describe(database, error)) from error
        return _describe(database, error)
    return None


def createdb_problem(database: DatabaseUrl) -> str | None:
    """Why the URL's role could not create a database (a restore recreates it, a rehearsal makes a copy)."""
    with _connect(database) as connection:
        row = connection.execute("SELECT rolsuper OR rolcreatedb, current_user FROM pg_roles "
                                 "WHERE rolname = current_user").fetchone()
    if row and not row[0]:
        return f"role {row[1]} may not create databases (it needs CREATEDB)"
    return None


def server_major(database: DatabaseUrl) -> int:
    """The server's major version, 17 for 17.2 (server_version_num 170002)."""
    with _connect(database) as connection:
        row = connection.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    return int(str(row[0])) if row else 0


def database_size(database: DatabaseUrl) -> int:
    """pg_database_size in bytes: tables, indexes and catalogs on disk."""
    with _connect(database) as connection:
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(str(row[0])) if row else 0


def database_exists(database: DatabaseUrl, name: str) -> bool:
    with _connect(database.with_name("postgres")) as connection:
        return connection.execute("SELECT FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def drop_database(database: DatabaseUrl, name: str) -> None:
    """DROP DATABASE IF EXISTS name WITH (FORCE), from the server's maintenance database."""
    with _connect(database.with_name("postgres")) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def missing_tables(database: DatabaseUrl, tables: tuple[str, ...]) -> list[str]:
    with _connect(database) as connection:
        return [t for t in tables if connection.execute("SELECT to_regclass(%s)", (t,)).fetchone() == (None,)]


def row_counts(database: DatabaseUrl, tables: tuple[str, ...]) -> dict[str, int]:
    with _connect(database) as connection:
        return _row_counts(connection, tables)


@dataclass(frozen=True)
class Verification:
    row_counts: dict[str, int]
    applied: frozenset[tuple[str, str]]  # (app, name) rows of django_migrations
    check_results: dict[str, str]  # check name -> the value its SQL returned, or "error: ..."


def verification(database: DatabaseUrl, tables: tuple[str, ...], checks: dict[str, str]) -> Verification:
    """The row counts, django_migrations and the checks, on one connection: the app is stopped while this runs, and
    each connection costs a round of authentication."""
    with _connect(database) as connection:
        return Verification(_row_counts(connection, tables), _applied_migrations(connection),
                            _run_checks(connection, database, checks))


def _row_counts(connection: Connection, tables: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
        row = connection.execute(query).fetchone()
        counts[table] = int(str(row[0])) if row else 0
    return counts


def _applied_migrations(connection: Connection) -> frozenset[tuple[str, str]]:
    if connection.execute("SELECT to_regclass('django_migrations')").fetchone() == (None,):
        return frozenset()
    rows = connection.execute("SELECT app, name FROM django_migrations").fetchall()
    return frozenset((str(app), str(name)) for app, name in rows)


def _run_checks(connection: Connection, database: DatabaseUrl, checks: dict[str, str]) -> dict[str, str]:
    """Each check's SQL in a read-only transaction: its first column of the first row, as text."""
    results: dict[str, str] = {}
    for name, query in checks.items():
        try:
            with connection.transaction():
                connection.execute("SET TRANSACTION READ ONLY")
                row = connection.execute(query.encode()).fetchone()
            results[name] = "" if row is None or row[0] is None else str(row[0])
        except psycopg.Error as error:
            if connection.broken:
                raise  # the server went away: not the check's answer
            results[name] = f"error: {database.redact(str(error).strip())}"
    return results


@contextmanager
def _connect(database: DatabaseUrl) -> Iterator[Connection]:
    """A connection that raises Unreachable when the server does not answer or the connection breaks.

    Any other error (a query the server refused) stays psycopg's.
    """
    try:
        connection = psycopg.connect(database.url, connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)
    except psycopg.OperationalError as error:
        raise Unreachable(_describe(database, error)) from error
    try:
        with connection:
            yield connection
    except psycopg.OperationalError as error:
        if connection.broken:
            raise Unreachable(_describe(database, error)) from error
        raise


def _describe(database: DatabaseUrl, error: psycopg.Error) -> str:
    text = str(error).strip()
    return database.redact(text.splitlines()[0] if text else type(error).__name__)
