from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def fail(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    raise RuntimeError("drill: atomic migration fails")


class Migration(migrations.Migration):
    # Atomic (the default): PostgreSQL rolls the CreateModel back with the failure, so the table
    # drill_fail_atomic_thing must not exist afterwards and nothing is recorded.
    dependencies = [
        ("blog", "0002_populate_categories"),
    ]

    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        migrations.RunPython(fail, migrations.RunPython.noop),
    ]
