from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run in a transaction. A build that fails (here: it gives up waiting for
    # an open transaction) leaves an INVALID index behind, which an online run drops before it tries again.
    atomic = False

    dependencies = [
        ("drill_concurrent_index", "0001_initial"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="entry",
            index=models.Index(fields=["name"], name="drill_entry_name_idx"),
        ),
    ]
