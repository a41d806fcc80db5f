"""Log hygiene: escaped client text, and the MCP SDK's client errors logged as such, not as server failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from mcp_gateway.logs import SdkClientErrorFilter, escape

from .clients import TRANSPORTS, mcp_client


def test_escape_keeps_one_printable_line() -> None:
    assert escape("/a\r\nb\tc\\d") == "/a\\r\\nb\\tc\\\\d"
    assert escape("/plain/path?x=1") == "/plain/path?x=1"


class Captured(logging.Handler):
    """What reaches a handler configured as the README says (the filter on the handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(SdkClientErrorFilter())
        self.lines: list[tuple[int, str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage(), record.exc_info is not None))


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("mcp")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


prompts = MCPServer("prompts")


@prompts.prompt()
def greet(name: str) -> str:
    """A prompt with a required argument."""
    return f"Hello {name}"


@prompts.prompt()
def broken() -> str:
    """A prompt whose own code fails: a server error."""
    raise RuntimeError("the site's bug")


@pytest.mark.parametrize(
    ("name", "arguments"), [("missing", None), ("greet", None)], ids=["unknown-prompt", "missing-argument"]
)
async def test_client_errors_are_one_line_warnings(captured: Captured, name: str, arguments: Any) -> None:
    async with Client(prompts) as client:
        with pytest.raises(MCPError):
            await client.get_prompt(name, arguments)
    [(level, message, has_traceback)] = [line for line in captured.lines if line[0] >= logging.WARNING]
    assert (level, has_traceback) == (logging.WARNING, False)
    assert "client error" in message


async def test_server_errors_keep_their_level_and_traceback(captured: Captured) -> None:
    async with Client(prompts) as client:
        with pytest.raises(MCPError):
            await client.get_prompt("broken")
    assert [line for line in captured.lines if line[0] >= logging.WARNING] == [
        (logging.ERROR, "request handler raised", True)
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unknown_prompt_logs_no_error_or_traceback_in_the_launcher(
    start_daphne: Any, alice_headers: dict[str, str], transport: str
) -> None:
    server = start_daphne()
    async with mcp_client(server.url, alice_headers, transport=transport) as client:
        with pytest.raises(MCPError):
            await client.get_prompt("no-such-prompt")
        assert (await client.call_tool("echo", {"text": "after"})).structured_content == {"result": "after"}
    server.stop()
    log = server.log()
    assert "no-such-prompt" in log, "the client error was expected in the log, as a warning"
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
