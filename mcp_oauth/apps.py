from django.apps import AppConfig


class McpOAuthConfig(AppConfig):
    name = "mcp_oauth"
    verbose_name = "MCP OAuth"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import account, receivers

        receivers.connect()
        account.register()
