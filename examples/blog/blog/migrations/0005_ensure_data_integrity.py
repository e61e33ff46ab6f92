from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def ensure_data_integrity(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Post = apps.get_model("blog", "Post")
    Category = apps.get_model("blog", "Category")

    # Ensure all posts have a category
    default_category = Category.objects.first()
    Post.objects.filter(category__isnull=True).update(category=default_category)


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0004_rollback"),
    ]

    # Reverse is a no-op: the posts that had no category are not recorded.
    operations = [
        migrations.RunPython(ensure_data_integrity, migrations.RunPython.noop),
    ]
