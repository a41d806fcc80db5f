from django.apps import AppConfig


class McpSessionsConfig(AppConfig):
    name = "mcp_sessions"
    verbose_name = "MCP sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import receivers

        receivers.connect()
