from django.db import migrations, models


class Migration(migrations.Migration):
    # Expand: an index the listing (newest first) uses; release 2 does not notice it.
    dependencies = [
        ("blog", "0006_post_subtitle"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="post",
            index=models.Index(fields=["-created_at", "-id"], name="blog_post_newest_idx"),
        ),
    ]
