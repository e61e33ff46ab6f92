"""The same work as the run, alone, as local processes on copies of a database in the same state: pg_dump (as the
operator runs it, and plain), pg_restore --list, manage.py migrate, and the restores: the physical limits the run is
set against."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from demo.stack import create_database, drop_database
from devcluster.cluster import Cluster, postgres_bin
from devcluster.config import REPO_ROOT
from django_migration_operator import jobs

BLOG_DIR = REPO_ROOT / "examples" / "blog"


# --- the same work alone, as local processes ----------------------------------------------------------------


@dataclass
class AloneResult:
    dump_archive: list[float] = field(default_factory=list)
    dump_plain: list[float] = field(default_factory=list)
    restore_list: list[float] = field(default_factory=list)
    migrate: list[float] = field(default_factory=list)
    size_archive: list[int] = field(default_factory=list)
    size_plain: list[int] = field(default_factory=list)
    restore_archive: list[float] = field(default_factory=list)
    restore_plain: list[float] = field(default_factory=list)
    restore_source: str = ""
    notes: list[str] = field(default_factory=list)


def run_quiet(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              stdout: Any = subprocess.DEVNULL) -> float:
    """Runs a command and returns its wall time; a failure never shows the command line (it holds the URL)."""
    started = time.perf_counter()
    result = subprocess.run(list(command), env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} {command[1] if len(command) > 1 else ''} failed "
                           f"({result.returncode}): {result.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def archive_bytes(archive: Path) -> int:
    """An archive's size: the sum of a directory archive's files, or the file's (custom format, before 2026-12-07)."""
    return sum(p.stat().st_size for p in archive.iterdir()) if archive.is_dir() else archive.stat().st_size


def blog_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BLOG_RELEASE", "BLOG_DRILLS")}
    return {**env, "DATABASE_URL": database_url, "BLOG_RELEASE": "2", "PYTHONUNBUFFERED": "1"}


def manage(cluster: Cluster, database: str, *arguments: str) -> float:
    return run_quiet([sys.executable, "manage.py", *arguments], env=blog_env(cluster.database_url(database)),
                     cwd=BLOG_DIR)


def scalar(cluster: Cluster, database: str, sql: str) -> Any:
    with psycopg.connect(cluster.database_url(database)) as connection:
        row = connection.execute(sql.encode()).fetchone()
        return row[0] if row else None


def settle(cluster: Cluster) -> None:
    """A CHECKPOINT before a timed step: it never pays for the writes of the step before it (at 10M posts, the
    first restore after the alone migrate took 2.9x the second)."""
    with psycopg.connect(cluster.database_url("postgres"), autocommit=True) as connection:
        connection.execute("CHECKPOINT")


def alone(cluster: Cluster, base: str, posts: int, repeat: int, workdir: Path, created: list[str],
          operator_dump: Path | None, say: Callable[[str], None]) -> AloneResult:
    result = AloneResult()
    # The binaries the tools image runs on devcluster, not Debian's /usr/bin wrapper (a Perl script that costs
    # 13 ms per call, 4% of a 1M-post dump).
    tools = {**os.environ, "PATH": f"{postgres_bin()}:{os.environ['PATH']}"}
    template = f"{base}_state0002"
    say(f"alone: database {template} at blog 0002 with {posts} posts (local manage.py, BLOG_RELEASE=2)")
    created.append(template)
    create_database(cluster, template)
    manage(cluster, template, "migrate", "blog", "0002_populate_categories", "--noinput")
    manage(cluster, template, "seed_blog", "--posts", str(posts))
    result.notes.append(f"state copied for every repetition: {template} (blog 0002, "
                        f"{scalar(cluster, template, 'SELECT count(*) FROM blog_post')} posts)")
    for number in range(repeat):
        name = f"{base}_alone{number}"
        created.append(name)
        create_database(cluster, name, template=template)
        url = cluster.database_url(name)
        archive, plain = workdir / f"alone{number}.dump", workdir / f"alone{number}.sql"
        # Alternated, so that neither dump always profits from the other's warm cache.
        for kind in (("archive", "plain") if number % 2 == 0 else ("plain", "archive")):
            settle(cluster)
            if kind == "archive":  # the operator's own dump function (jobs.py): the same options and compression
                result.dump_archive.append(run_quiet(["sh", "-c", jobs.DUMP_FUNCTIONS + 'dump "$1"', "sh",
                                                      str(archive)], env={**tools, "DATABASE_URL": url}))
            else:
                with plain.open("wb") as output:  # the migration guide's `pg_dump > backup.sql`
                    result.dump_plain.append(run_quiet(["pg_dump", f"--dbname={url}"], env=tools, stdout=output))
        result.size_archive.append(archive_bytes(archive))
        result.size_plain.append(plain.stat().st_size)
        result.restore_list.append(run_quiet(["pg_restore", "--list", str(archive)], env=tools))
        settle(cluster)
        result.migrate.append(manage(cluster, name, "migrate", "--noinput"))
        latest = scalar(cluster, name, "SELECT max(name) FROM django_migrations WHERE app = 'blog'")
        if number == 0:
            result.notes.append(f"alone migrate ends at blog {latest}")
        drop_database(cluster, name)
        say(f"alone {number + 1}/{repeat}: the operator's pg_dump {result.dump_archive[-1]:.2f}s, "
                 f"plain {result.dump_plain[-1]:.2f}s, migrate {result.migrate[-1]:.2f}s")

    source = operator_dump if operator_dump and operator_dump.exists() else workdir / "alone0.dump"
    result.restore_source = (f"the operator's dump ({source.name}, {archive_bytes(source)} bytes)"
                             if source == operator_dump else f"an alone dump ({source.name}; the operator's "
                             "was not found)")
    for number in range(repeat):
        # Alternated, as the dumps are.
        for kind in (("archive", "plain") if number % 2 == 0 else ("plain", "archive")):
            name = f"{base}_{'restore' if kind == 'archive' else 'psql'}{number}"
            created.append(name)
            create_database(cluster, name)
            url = cluster.database_url(name)
            settle(cluster)
            if kind == "archive":
                result.restore_archive.append(run_quiet(["pg_restore", "--single-transaction", "--exit-on-error",
                                                        "--no-owner", f"--dbname={url}", str(source)],
                                                       env=tools))
                if number == 0:
                    restored = scalar(cluster, name, "SELECT count(*) FROM blog_post")
                    result.notes.append(f"the restored archive holds {restored} posts")
            else:
                result.restore_plain.append(run_quiet(["psql", "--no-psqlrc", "--quiet", "--single-transaction",
                                                       "--set=ON_ERROR_STOP=1", f"--dbname={url}",
                                                       f"--file={workdir / 'alone0.sql'}"], env=tools))
            drop_database(cluster, name)
        say(f"restore {number + 1}/{repeat}: pg_restore {result.restore_archive[-1]:.2f}s, "
                 f"psql {result.restore_plain[-1]:.2f}s")
    drop_database(cluster, template)
    return result

