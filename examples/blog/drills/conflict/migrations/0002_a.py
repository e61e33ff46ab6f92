from django.db import migrations, models


class Migration(migrations.Migration):
    # 0002_a and 0002_b both follow 0001, as when two branches each add a migration: two leaf
    # nodes, so `migrate` stops with "Conflicting migrations detected" before touching anything.
    dependencies = [
        ("drill_conflict", "0001_initial"),
    ]

    operations = [
        migrations.AddField(model_name="thing", name="field_a", field=models.IntegerField(default=0)),
    ]
