from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0002_populate_categories"),
    ]

    operations = [
        migrations.CreateModel(
            name="Entry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
            ],
        ),
    ]
