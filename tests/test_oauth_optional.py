"""OAuth is optional: a site without mcp_oauth loads, routes and checks without authlib ever being imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import django
django.setup()
from django.core.management import call_command
import mcp_gateway.routing, mcp_gateway.auth, mcp_gateway.identity
call_command("check", "--tag", "mcp_gateway")
import tests.asgi
assert "authlib" not in sys.modules and "mcp_oauth" not in sys.modules, sorted(m for m in sys.modules if "oauth" in m)
print("clean")
"""


def test_a_site_without_oauth_never_imports_it(tmp_path: Path) -> None:
    (tmp_path / "without_oauth.py").write_text(
        "from tests.settings import *  # noqa: F403\n"
        "INSTALLED_APPS = [app for app in INSTALLED_APPS if app != 'mcp_oauth']  # noqa: F405\n"
        "MCP_GATEWAY_AUTHENTICATORS = ['mcp_gateway.auth.BearerTokenAuthenticator', "
        "'mcp_gateway.auth.SessionCookieAuthenticator']\n"
        "ROOT_URLCONF = 'without_oauth_urls'\n"
    )
    (tmp_path / "without_oauth_urls.py").write_text("urlpatterns = []\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "without_oauth", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr
