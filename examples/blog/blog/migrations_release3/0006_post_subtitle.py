from django.db import migrations, models


class Migration(migrations.Migration):
    # Expand: nullable, so release 2, which never writes it, keeps working beside it.
    dependencies = [
        ("blog", "0005_ensure_data_integrity"),
    ]

    operations = [
        migrations.AddField(
            model_name="post",
            name="subtitle",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
    ]
