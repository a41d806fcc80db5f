"""Your MCP access, for a site's URLconf: ``path("account/mcp/", include("mcp_sessions.urls"))``.

Its names are in the ``mcp_account`` namespace: ``{% url "mcp_account:index" %}`` links to the page.
"""

from __future__ import annotations

from django.urls import path

from .account import views

app_name = "mcp_account"

urlpatterns = [
    path("", views.index, name="index"),
    path("sessions/<int:pk>/end/", views.end_session, name="end_session"),
    path("sessions/end-others/", views.end_other_sessions, name="end_other_sessions"),
    path("tokens/new/", views.new_token, name="new_token"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="revoke_token"),
]
