"""The new token's page gives each client the configuration the client how-to gives, with the site's URL in it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mcp_sessions.account.clients import Endpoints, client_configs, token_export

HOWTO = (Path(__file__).resolve().parent.parent / "docs" / "howto" / "clients.md").read_text()
DOCS_URL = "https://mcp.example.com/mcp/"
SITE = Endpoints("https://tools.example.org/sub/mcp/", "https://tools.example.org/sub/mcp/sse")
SECRET = "mcp_" + "A1b2-" * 8 + "xyz"


def first_block(anchor: str, fence: str) -> str:
    """The first code block under the how-to's heading ``(anchor)=`` that opens with ``fence``."""
    section = HOWTO[HOWTO.index(f"({anchor})=") :]
    section = section[: section.index("\n(", 1)] if "\n(" in section[1:] else section
    match = re.search(rf"^{re.escape(fence)}[^\n]*\n(?::[^\n]*\n)*\n?(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match, f"no {fence} block under ({anchor})="
    return match.group(1).strip()


def configs() -> dict[str, str]:
    return {config.slug: config.text for config in client_configs(SITE, SECRET)}


@pytest.mark.parametrize(
    ("slug", "anchor"),
    [
        pytest.param("claude-desktop", "clients-claude-desktop", id="claude-desktop"),
        pytest.param("cursor", "clients-cursor", id="cursor"),
        pytest.param("vscode", "clients-vscode", id="vscode"),
    ],
)
def test_each_json_configuration_is_the_howtos(slug: str, anchor: str) -> None:
    documented = first_block(anchor, "```json").replace(DOCS_URL, SITE.url).replace("Bearer mcp_…", f"Bearer {SECRET}")
    assert json.loads(configs()[slug]) == json.loads(documented)


@pytest.mark.parametrize(
    ("slug", "anchor", "fence", "changes"),
    [
        pytest.param("claude-code", "clients-claude-code", "```sh", {DOCS_URL: SITE.url}, id="claude-code"),
        pytest.param(
            "inspector",
            "clients-inspector",
            "```{code-block} sh",
            # Any site's server lists its tools; the how-to calls the demo's whoami.
            {'"$MCP_URL"': SITE.url, "--method tools/call --tool-name whoami": "--method tools/list"},
            id="inspector",
        ),
    ],
)
def test_each_command_is_the_howtos(slug: str, anchor: str, fence: str, changes: dict[str, str]) -> None:
    documented = first_block(anchor, fence)
    for old, new in changes.items():
        assert old in documented
        documented = documented.replace(old, new)
    assert configs()[slug] == documented


def test_only_claude_desktop_carries_the_secret_as_the_howto_does() -> None:
    assert [slug for slug, text in configs().items() if SECRET in text] == ["claude-desktop"]


@pytest.mark.parametrize(
    ("url", "quoted"),
    [
        pytest.param("http://127.0.0.1:8000/mcp/", "http://127.0.0.1:8000/mcp/", id="plain"),
        pytest.param("http://[::1]:8000/mcp/", "'http://[::1]:8000/mcp/'", id="brackets-quoted-for-the-shell"),
    ],
)
def test_commands_quote_the_url_for_the_shell(url: str, quoted: str) -> None:
    text = {c.slug: c.text for c in client_configs(Endpoints(url, url + "sse"), SECRET)}["claude-code"]
    assert f"my-site {quoted} \\" in text


def test_the_export_line_quotes_the_token() -> None:
    assert token_export(SECRET) == f"export MCP_TOKEN={SECRET}"
    assert token_export("a b") == "export MCP_TOKEN='a b'"
