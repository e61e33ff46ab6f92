from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor


def populate_categories(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Category = apps.get_model("blog", "Category")
    categories = [
        "Technology",
        "Science",
        "Business",
        "Health",
    ]
    for name in categories:
        Category.objects.create(name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0001_initial"),
    ]

    # No reverse function, as in the guide: this migration is irreversible on purpose
    # (`migrate blog 0001` is refused), and the operator's tests rely on that.
    operations = [
        migrations.RunPython(populate_categories),
    ]
