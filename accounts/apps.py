from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "API keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the API-key scheme with drf-spectacular (an extension registers on import).
        from accounts import openapi  # noqa: F401
