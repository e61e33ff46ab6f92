from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.clash"
    label = "drill_clash"
    verbose_name = "Drill: clash"
    default_auto_field = "django.db.models.BigAutoField"
