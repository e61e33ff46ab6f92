from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def rollback_changes(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Post = apps.get_model("blog", "Post")
    Post.objects.filter(status="archived").update(status="published")


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0003_add_post_status"),
    ]

    # Reverse is a no-op: which posts were archived is not recorded, and unapplying must stay
    # possible so the schema can be taken back to 0002.
    operations = [
        migrations.RunPython(rollback_changes, migrations.RunPython.noop),
    ]
