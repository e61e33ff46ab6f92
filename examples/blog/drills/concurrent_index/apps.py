from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.concurrent_index"
    label = "drill_concurrent_index"
    verbose_name = "Drill: concurrent_index"
    default_auto_field = "django.db.models.BigAutoField"
