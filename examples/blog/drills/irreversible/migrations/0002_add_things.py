from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def add_things(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Thing = apps.get_model("drill_irreversible", "Thing")
    Thing.objects.bulk_create(Thing(name=f"thing {n}") for n in range(1, 4))


class Migration(migrations.Migration):
    dependencies = [
        ("drill_irreversible", "0001_initial"),
    ]

    # No reverse function: applies fine, but `migrate drill_irreversible 0001` is refused
    # with IrreversibleError.
    operations = [
        migrations.RunPython(add_things),
    ]
