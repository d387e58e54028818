from django.apps import AppConfig


class CrawlConfig(AppConfig):
    name = "crawl"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from crawl import hooks, metrics
        from ragsite.metrics import register_database_gauges

        hooks.connect()
        register_database_gauges(metrics.database_gauges)
