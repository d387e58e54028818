from django.apps import AppConfig


class VectorsConfig(AppConfig):
    name = "vectors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ragsite.metrics import register_database_gauges
        from vectors import metrics, readiness, receivers

        readiness.register()
        receivers.connect()
        register_database_gauges(metrics.embedding_cache_gauges)
