"""The authorization server's URLs; include them at the site's root: ``path("", include("mcp_oauth.urls"))``.

The metadata must be at ``/.well-known/oauth-authorization-server`` of the
issuer's origin (RFC 8414), so the include belongs at the root.
"""

from django.urls import path

from . import account, views

app_name = "mcp_oauth"

urlpatterns = [
    path(".well-known/oauth-authorization-server", views.server_metadata, name="metadata"),
    path("oauth/authorize", views.authorize, name="authorize"),
    path("oauth/token", views.token, name="token"),
    path("oauth/revoke", views.revoke, name="revoke"),
    path("oauth/register", views.register, name="register"),
    path("oauth/connections/", views.connections, name="connections"),
    # The "Revoke access" of Your MCP access's "Connected apps" (mcp_oauth.account), with the rest of this app.
    path("oauth/apps/<int:pk>/revoke/", account.revoke_app, name="revoke_app"),
]
