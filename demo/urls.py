from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="demo/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/mcp/", include("mcp_sessions.urls")),
    path("admin/", admin.site.urls),
    # The site as the OAuth authorization server of its MCP servers (metadata at /.well-known/…).
    path("", include("mcp_oauth.urls")),
]
