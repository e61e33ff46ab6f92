from django.apps import AppConfig


class DrillConfig(AppConfig):
    name = "drills.irreversible"
    label = "drill_irreversible"
    verbose_name = "Drill: irreversible"
    default_auto_field = "django.db.models.BigAutoField"
