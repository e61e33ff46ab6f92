from django.db import migrations


class Migration(migrations.Migration):
    # Contract: release 3 no longer uses status, release 2 does. The column has a database default
    # (0003), so release 3's inserts, which leave it out, work until it is dropped.
    dependencies = [
        ("blog", "0007_post_created_index"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="post",
            name="status",
        ),
    ]
