from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from documents import files, filestore, metrics, signals, tasks  # noqa: F401
        from ragsite.metrics import register_database_gauges

        signals.connect()
        tasks.connect()
        register_database_gauges(metrics.database_gauges)
        filestore.readiness_register()
