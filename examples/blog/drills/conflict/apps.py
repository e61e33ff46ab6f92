from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.conflict"
    label = "drill_conflict"
    verbose_name = "Drill: conflict"
    default_auto_field = "django.db.models.BigAutoField"
