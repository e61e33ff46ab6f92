from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0002_populate_categories"),
    ]

    # Expand/contract: the guide's AddField plus db_default, so the column gets a DEFAULT in the
    # database. Release-1 pods still running during and after the migration do not know the column
    # and omit it from their INSERTs; without the database default those INSERTs would fail NOT NULL.
    operations = [
        migrations.AddField(
            model_name="post",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("published", "Published"),
                    ("archived", "Archived"),
                ],
                default="draft",
                db_default="draft",
                max_length=10,
            ),
        ),
    ]
