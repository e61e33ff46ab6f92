from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.slow"
    label = "drill_slow"
    verbose_name = "Drill: slow"
    default_auto_field = "django.db.models.BigAutoField"
