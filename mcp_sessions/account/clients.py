"""What a new token's page gives to copy: each client's configuration, with the site's real URL filled in.

The same configurations as the client how-to (``docs/howto/clients.md``), clients by clients, so that what
the page says is what the documentation says and the tests check (``tests/test_account_clients.py`` compares
them). Where the how-to keeps the token out of a file (an environment variable, VS Code's password prompt),
so does the page; only Claude Desktop's configuration carries it, in ``env``, as the how-to's does.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import get_script_prefix
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from mcp_gateway.conf import gateway_settings

# The HTTP+SSE endpoint below a mount's prefix: mcp_gateway.mounts.SSE_PATH, which this app may not import.
SSE_PATH = "sse"
# What the configurations call the server, as the how-to does.
SERVER_NAME = "my-site"


@dataclass(frozen=True)
class Endpoints:
    """The absolute URLs of the gateway's default mount on this site: Streamable HTTP, and HTTP+SSE."""

    url: str
    sse_url: str


def endpoints(request: HttpRequest) -> Endpoints:
    """The site's MCP URLs as the browser reached the site (its validated host and scheme), below its script prefix."""
    mount = get_script_prefix().rstrip("/") + gateway_settings.PREFIX
    return Endpoints(request.build_absolute_uri(mount), request.build_absolute_uri(mount + SSE_PATH))


@dataclass(frozen=True)
class ClientConfig:
    """One client's configuration: what it is, where it goes, and the text to copy."""

    slug: str
    name: str | Promise
    where: str | Promise
    language: str
    text: str


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def client_configs(site: Endpoints, secret: str) -> list[ClientConfig]:
    """The configurations of the clients the how-to covers, for ``site`` and the token ``secret``."""
    url = shlex.quote(site.url)
    bearer_from_env = "Authorization: Bearer ${MCP_TOKEN}"
    return [
        ClientConfig(
            "claude-desktop",
            _("Claude Desktop (through mcp-remote)"),
            _("In claude_desktop_config.json (Settings → Developer → Edit Config), then restart Claude Desktop."),
            "json",
            _json(
                {
                    "mcpServers": {
                        SERVER_NAME: {
                            "command": "npx",
                            "args": [
                                "-y",
                                "mcp-remote",
                                site.url,
                                "--transport",
                                "http-only",
                                "--header",
                                "Authorization:${MCP_AUTHORIZATION}",
                            ],
                            "env": {"MCP_AUTHORIZATION": f"Bearer {secret}"},
                        }
                    }
                }
            ),
        ),
        ClientConfig(
            "claude-code",
            _("Claude Code"),
            _("In a shell where MCP_TOKEN holds the token (above)."),
            "sh",
            f'claude mcp add --transport http {SERVER_NAME} {url} \\\n  --header "{bearer_from_env}"',
        ),
        ClientConfig(
            "cursor",
            _("Cursor"),
            _("In ~/.cursor/mcp.json (or a project's .cursor/mcp.json); start Cursor where MCP_TOKEN holds the token."),
            "json",
            _json(
                {
                    "mcpServers": {
                        SERVER_NAME: {"url": site.url, "headers": {"Authorization": "Bearer ${env:MCP_TOKEN}"}}
                    }
                }
            ),
        ),
        ClientConfig(
            "vscode",
            _("VS Code (GitHub Copilot agent mode)"),
            _("In .vscode/mcp.json (or the user profile's mcp.json); VS Code asks for the token once and stores it."),
            "json",
            _json(
                {
                    "inputs": [
                        {
                            "type": "promptString",
                            "id": "mcp-token",
                            "description": "MCP access token (mcp_…)",
                            "password": True,
                        }
                    ],
                    "servers": {
                        SERVER_NAME: {
                            "type": "http",
                            "url": site.url,
                            "headers": {"Authorization": "Bearer ${input:mcp-token}"},
                        }
                    },
                }
            ),
        ),
        ClientConfig(
            "inspector",
            _("MCP Inspector (command line, Node 22)"),
            _("In a shell where MCP_TOKEN holds the token (above); it lists the server's tools."),
            "sh",
            f"npx -y @modelcontextprotocol/inspector@2 --cli {url} --transport http \\\n"
            f'  --header "{bearer_from_env}" --method tools/list',
        ),
    ]


def token_export(secret: str) -> str:
    """The shell line that puts the token where the commands read it."""
    return f"export MCP_TOKEN={shlex.quote(secret)}"
