from django.apps import AppConfig, apps


class McpGatewayConfig(AppConfig):
    name = "mcp_gateway"
    verbose_name = "MCP gateway"

    def ready(self) -> None:
        from mcp_sessions.scoping import offer_scopes
        from mcp_sessions.signals import credentials_revoked, sessions_revoked

        from . import checks  # noqa: F401  (registers the system checks)
        from .receivers import close_revoked_sessions, connect_permission_signals, forget_revoked_credentials
        from .scopes import offered

        sessions_revoked.connect(close_revoked_sessions, dispatch_uid="mcp_gateway.close_revoked_sessions")
        credentials_revoked.connect(forget_revoked_credentials, dispatch_uid="mcp_gateway.forget_revoked_credentials")
        offer_scopes(offered)  # what Your MCP access lets a user limit a token to
        if apps.is_installed("django.contrib.auth"):
            connect_permission_signals()
