from django.db import migrations


class Migration(migrations.Migration):
    # Runs after the whole blog chain, so it is the last step of a release-2 plan.
    dependencies = [
        ("blog", "0005_ensure_data_integrity"),
    ]

    # Succeeds, but silently loses data: deletes the older half of blog_post (floor(n/2) rows).
    # Only a verification that compares row counts catches it. The no-op reverse keeps it
    # "reversible" to Django while the rows stay gone, as in a real bad data migration.
    operations = [
        migrations.RunSQL(
            # Starts with DELETE so that `migrate --plan` shows what it does.
            sql=(
                "DELETE FROM blog_post WHERE id IN "
                "(SELECT id FROM blog_post ORDER BY id LIMIT (SELECT count(*) / 2 FROM blog_post))"
            ),
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
