from typing import Any

from django.apps import AppConfig, apps


def offered_scopes(user: Any) -> list[str]:
    """What Your MCP access lets ``user`` limit a token to (:func:`mcp_gateway.scopes.offered`).

    Imported when first asked, not in ``ready()``: that module reaches the models, which may not be installed
    (system check E004 says so) and must not be imported while the registry is loading.
    """
    from .scopes import offered

    return offered(user)


class McpGatewayConfig(AppConfig):
    name = "mcp_gateway"
    verbose_name = "MCP gateway"

    def ready(self) -> None:
        from mcp_sessions.scoping import offer_scopes
        from mcp_sessions.signals import credentials_revoked, sessions_revoked

        from . import checks  # noqa: F401  (registers the system checks)
        from .receivers import close_revoked_sessions, connect_permission_signals, forget_revoked_credentials

        sessions_revoked.connect(close_revoked_sessions, dispatch_uid="mcp_gateway.close_revoked_sessions")
        credentials_revoked.connect(forget_revoked_credentials, dispatch_uid="mcp_gateway.forget_revoked_credentials")
        offer_scopes(offered_scopes)
        if apps.is_installed("django.contrib.auth"):
            connect_permission_signals()
