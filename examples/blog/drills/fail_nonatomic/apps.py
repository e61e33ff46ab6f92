from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.fail_nonatomic"
    label = "drill_fail_nonatomic"
    verbose_name = "Drill: fail_nonatomic"
    default_auto_field = "django.db.models.BigAutoField"
