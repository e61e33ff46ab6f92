"""The demo blog's seed_blog, run for real against a throwaway PostgreSQL: the rows it writes are the product's data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.pgserver import create_database, throwaway_postgres

BLOG = Path(__file__).resolve().parents[2] / "examples" / "blog"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    if not (BLOG / "manage.py").exists():
        pytest.skip(f"the demo project is missing: {BLOG}")
    with throwaway_postgres() as (server_url, _):
        yield server_url


def manage(url: str, release: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "BLOG_RELEASE": release, "BLOG_DRILLS": ""}
    return subprocess.run([sys.executable, "manage.py", *arguments], cwd=BLOG, env=env, capture_output=True,
                          text=True, check=False, timeout=120)


def expected(numbers: range, categories: list[int | None]) -> list[tuple[object, ...]]:
    """The rows of the INSERTs seed_blog used to run, which its COPY must reproduce exactly."""
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    return [(number, f"Seed post {number:05d}", f"Deterministic body of seed post {number}.",
             categories[number % len(categories)], epoch + timedelta(minutes=number)) for number in numbers]


@pytest.mark.parametrize("release", ["1", "2"])
def test_seed_tops_up_to_n_deterministic_posts(server: str, release: str) -> None:
    url = create_database(server, f"seed_release{release}")
    # Release 1 stops at 0002: the schema without status, which seed_blog must still fill.
    assert manage(url, release, "migrate", "--noinput").returncode == 0
    first = manage(url, release, "seed_blog", "--posts", "12")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "seed_blog: 0 posts existed, inserted 12, total 12"
    again = manage(url, release, "seed_blog", "--posts", "30")
    assert again.stdout.strip() == "seed_blog: 12 posts existed, inserted 18, total 30"
    assert manage(url, release, "seed_blog", "--posts", "5").stdout.strip() == (
        "seed_blog: 30 posts existed, inserted 0, total 30")
    with psycopg.connect(url) as connection:
        categories: list[int | None] = [row[0] for row in connection.execute(
            "SELECT id FROM blog_category ORDER BY name")]
        rows = connection.execute("SELECT id, title, body, category_id, created_at FROM blog_post ORDER BY id"
                                  ).fetchall()
        statuses = connection.execute(
            "SELECT array_agg(DISTINCT status) FROM blog_post" if release == "2" else "SELECT NULL").fetchone()
    assert rows == expected(range(1, 31), [*categories, None])
    assert statuses == ((["draft"] if release == "2" else None),)  # release 2: the column's database default
