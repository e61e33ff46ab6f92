import logging
import os
import time

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

logger = logging.getLogger(__name__)


def sleep(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Read when the migration runs, not at import: `migrate --plan` must stay fast.
    seconds = float(os.environ.get("DRILL_SLOW_SECONDS", "600"))
    logger.info("drill slow: sleeping %.0f seconds", seconds)
    time.sleep(seconds)


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0002_populate_categories"),
    ]

    # Reversible (no-op) so that a timed-out run can be unapplied once it did finish.
    operations = [
        migrations.RunPython(sleep, migrations.RunPython.noop),
    ]
