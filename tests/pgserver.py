"""A PostgreSQL server of the tests' own, in a temporary folder, for the scripts that must meet a real database."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql


@contextmanager
def throwaway_postgres() -> Iterator[tuple[str, str]]:
    """A PostgreSQL server of its own in a temporary folder: (URL of the `postgres` database, its bin folder).

    Skips the test when the server binaries are missing.
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not bins:
        pytest.skip("no PostgreSQL server under /usr/lib/postgresql/*/bin (apt-get install postgresql): "
                    "the scripts are tested against a real database")
    bin_dir = str(Path(bins[-1]).parent)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    folder = tempfile.mkdtemp(prefix="djangoops-pg-")
    if as_postgres:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = f"{folder}/data"
    try:
        subprocess.run([*as_postgres, f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                        "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
        subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{folder}/log", "-w",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        try:
            yield f"postgres://postgres@127.0.0.1:{port}/postgres", bin_dir
        finally:
            subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                           check=False, capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """Creates database `name` on the server and returns its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server_url.rsplit("/", 1)[0] + "/" + quote(name)


@contextmanager
def stopped(server_url: str, bin_dir: str) -> Iterator[Callable[[], None]]:
    """Stops the throwaway server ("fast": clients are cut off); the callable starts it again, as the block's end does.

    Started with the options it ran with, read from the server before the stop.
    """
    with psycopg.connect(server_url) as connection:
        data, port, sockets = (str(connection.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
                               for name in ("data_directory", "port", "unix_socket_directories"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], check=True,
                   capture_output=True)
    running = False
    # A test may start it from a timer thread while the block ends: the second caller waits for the first's start
    # (pg_ctl -w returns a little after the server answers), and never starts a second postmaster.
    starting = threading.Lock()

    def start() -> None:
        nonlocal running
        with starting:
            if not running:
                subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{Path(data).parent}/log",
                                "-w", "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start"],
                               check=True, capture_output=True)
                running = True

    try:
        yield start
    finally:
        start()
