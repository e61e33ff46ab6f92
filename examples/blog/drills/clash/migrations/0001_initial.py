from django.db import migrations, models


class Migration(migrations.Migration):
    # Two expand operations, atomic: the second creates a table whose name is taken ("relation already
    # exists"), so PostgreSQL rolls back the first too: drill_clash_note must not exist afterwards.
    dependencies = [
        ("blog", "0002_populate_categories"),
    ]

    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False))],
        ),
        migrations.CreateModel(
            name="Clash",
            fields=[("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False))],
            options={"db_table": "blog_post"},
        ),
    ]
