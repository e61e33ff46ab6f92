"""`manage.py seed_blog --posts N`: top the blog up to N deterministic posts."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction

# Seeded posts are dated in the past, so posts written through the API list before them.
SEED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def seed_rows(first: int, last: int, category_ids: list[int | None]) -> Iterator[tuple[Any, ...]]:
    """Posts `first`..`last` (title, body, category_id, created_at), generated as COPY consumes them."""
    for number in range(first, last + 1):
        yield (
            f"Seed post {number:05d}",
            f"Deterministic body of seed post {number}.",
            category_ids[number % len(category_ids)],
            SEED_EPOCH + timedelta(minutes=number),
        )


class Command(BaseCommand):
    help = "Create deterministic demo posts until the blog holds N of them (1 in 5 without a category)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--posts", type=int, default=200, help="total number of posts wanted (default 200)")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted: int = options["posts"]
        if wanted < 0:
            raise CommandError("--posts must be >= 0")
        # Plain SQL naming only the columns of migration 0001: this works on the release-1 schema
        # (no status column) and on release 2's (status gets its database default), whatever
        # BLOG_RELEASE this command runs with.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT id FROM blog_category ORDER BY name")
            category_ids: list[int | None] = [row[0] for row in cursor.fetchall()]
            if not category_ids:
                raise CommandError("no categories: apply blog 0002_populate_categories first")
            # One extra slot of None leaves every fifth post without a category: work for 0005.
            category_ids.append(None)
            cursor.execute("SELECT count(*) FROM blog_post")
            existing: int = cursor.fetchone()[0]
            inserted = max(wanted - existing, 0)
            if inserted:
                # COPY, not INSERTs: one statement streams every row (a million in seconds, where executemany
                # took half a minute), and the rows come from a generator, so memory stays flat at any N.
                # The ids come from the column's identity in stream order, as the INSERTs' did.
                # connection.cursor() is Django's wrapper; .cursor is the psycopg 3 cursor, which has copy().
                with cursor.cursor.copy("COPY blog_post (title, body, category_id, created_at) FROM STDIN") as copy:
                    for row in seed_rows(existing + 1, wanted, category_ids):
                        copy.write_row(row)
        self.stdout.write(f"seed_blog: {existing} posts existed, inserted {inserted}, total {existing + inserted}")
