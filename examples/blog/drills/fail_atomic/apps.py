from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.fail_atomic"
    label = "drill_fail_atomic"
    verbose_name = "Drill: fail_atomic"
    default_auto_field = "django.db.models.BigAutoField"
