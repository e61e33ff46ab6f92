from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.drop_posts"
    label = "drill_drop_posts"
    verbose_name = "Drill: drop_posts"
    default_auto_field = "django.db.models.BigAutoField"
