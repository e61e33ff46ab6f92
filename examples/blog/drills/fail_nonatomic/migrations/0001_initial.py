from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def insert_then_fail(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Thing = apps.get_model("drill_fail_nonatomic", "Thing")
    Thing.objects.create(name="written before the failure")
    raise RuntimeError("drill: non-atomic migration fails half-way")


class Migration(migrations.Migration):
    # Not atomic: every statement autocommits, so the failure leaves the table
    # drill_fail_nonatomic_thing and its one row behind while the migration stays unapplied.
    # Re-running then fails on "relation already exists": only a restore cleans this up.
    atomic = False

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
        migrations.RunPython(insert_then_fail, migrations.RunPython.noop),
    ]
