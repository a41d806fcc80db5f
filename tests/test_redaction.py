"""No session ID, ticket, cookie, token or message body in any log line."""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import pytest

from mcp_gateway.redaction import RedactSecretsFilter, redact

from .clients import INITIALIZE, closed_session, handshake, jsonrpc, raw_stream

REDACT_CASES = [
    ("access-log-session-id", '"POST /mcp/messages/?session_id=abcDEF123_-x HTTP/1.1"', "abcDEF123_-x"),
    ("ticket-among-params", "GET /mcp/sse?x=1&ticket=T0p-Secret&y=2", "T0p-Secret"),
    ("cookie-header", "Cookie: sessionid=s3cr3t; csrftoken=c5rf", "s3cr3t"),
    ("cookie-in-dict-repr", "{'cookie': 'sessionid=s3cr3t', 'accept': '*/*'}", "s3cr3t"),
    ("authorization-header", "Authorization: Bearer tok.en-value", "tok.en-value"),
    ("bare-bearer", "sent Bearer abc.def.ghi upstream", "abc.def.ghi"),
    ("session-cookie-pair", "sessionid=s3cr3t", "s3cr3t"),
    ("csrf-header", "X-CSRFToken: c5rfc5rf", "c5rfc5rf"),
    ("session-id-header", "{'mcp-session-id': 'abcDEF123_-x', 'accept': '*/*'}", "abcDEF123_-x"),
    # Names the query parser decodes (parse_qs: unquote_plus) are secret names too.
    ("encoded-session-id-name", "POST /mcp/messages/?session%5Fid=abcDEF123_-x HTTP/1.1", "abcDEF123_-x"),
    ("encoded-ticket-name", "GET /mcp/sse?x=1&tick%65t=T0p-Secret HTTP/1.1", "T0p-Secret"),
    ("all-encoded-name", "GET /mcp/sse?%74%6F%6B%65%6E=T0k3n HTTP/1.1", "T0k3n"),
    ("encoded-cookie-name", "GET /?session%69d=s3cr3t", "s3cr3t"),
    # A secret pair inside another pair's value, or after a name character the parser would join to it.
    ("inside-a-value", "uri=/mcp/messages/?session_id=abcDEF123_-x", "abcDEF123_-x"),
    ("inside-a-next-url", "next=/mcp/sse?ticket=T0p-Secret x", "T0p-Secret"),
    ("after-a-dot", "a.token=T0k3n", "T0k3n"),
    ("encoded-inside-an-encoded-value", "x%41=/mcp/sse?tick%65t=T0p-Secret", "T0p-Secret"),
]


@pytest.mark.parametrize(("text", "secret"), [c[1:] for c in REDACT_CASES], ids=[c[0] for c in REDACT_CASES])
def test_redact(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "GET /mcp/sse?page=2 200; user 5 opened session 3f2a9c0d1e2b (sse)"
    assert redact(text) == text
    # Names that only resemble a secret one, encoded or not, are not secret to the parser either.
    for text in ("GET /x?xsession_id=1&session_idx=2", "GET /x?session%5Fidx=3&ticket%2B=4"):
        assert redact(text) == text


@pytest.mark.django_db(transaction=True)
async def test_access_log_redacts_encoded_parameter_names(
    daphne: Any, http: httpx2.AsyncClient, alice_headers: dict[str, str]
) -> None:
    async with raw_stream(http, f"{daphne.url}/mcp/sse", alice_headers) as stream:
        session_id = stream.session_id
        # The parser reads session%5Fid as session_id: the message is accepted.
        url = f"{daphne.url}/mcp/messages/?session%5Fid={session_id}"
        assert (await http.post(url, json=INITIALIZE, headers=alice_headers)).status_code == 202
    ticket = "T1cket-marker-5b0e9a"
    assert (await http.get(f"{daphne.url}/mcp/sse?tick%65t={ticket}")).status_code == 401
    log = daphne.log()
    assert "/mcp/messages/?session%5Fid=[redacted]" in log and "/mcp/sse?tick%65t=[redacted]" in log
    assert session_id not in log and ticket not in log


def test_filter_rewrites_the_formatted_message() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "POST %s", ("/m/?session_id=SECRET",), None)
    assert RedactSecretsFilter().filter(record) is True
    assert record.getMessage() == "POST /m/?session_id=[redacted]"


@pytest.mark.django_db(transaction=True)
async def test_daphne_output_holds_no_secrets(
    start_daphne: Any, http: httpx2.AsyncClient, alice: Any, alice_headers: dict[str, str], bob_headers: dict[str, str]
) -> None:
    # Verbose, so that daphne and Django log all they would at INFO and DEBUG.
    server = start_daphne(overrides={"LOGGING": {"version": 1, "disable_existing_loggers": False,
        "filters": {"r": {"()": "mcp_gateway.redaction.RedactSecretsFilter"}},
        "handlers": {"h": {"class": "logging.StreamHandler", "filters": ["r"]}},
        "root": {"handlers": ["h"], "level": "DEBUG"}}})  # fmt: skip
    marker = "body-marker-8c1f0e"
    async with raw_stream(http, f"{server.url}/mcp/sse", alice_headers) as stream:
        await handshake(http, server.url, stream, alice_headers)
        call = jsonrpc("tools/call", {"name": "echo", "arguments": {"text": marker}}, id=3)
        assert (await http.post(server.url + stream.endpoint, json=call, headers=alice_headers)).status_code == 202
        assert (await stream.next_message())["id"] == 3
        # Refusals log too: a foreign POST, a CSRF failure, an unknown session.
        await http.post(server.url + stream.endpoint, json=call, headers=bob_headers)
        await http.post(server.url + stream.endpoint, json=call, headers={"Cookie": alice_headers["Cookie"]})
        session_id = stream.session_id
    await closed_session(user=alice)
    server.stop()
    log = server.log()
    assert "/mcp/messages/?session_id=[redacted]" in log, "the access log was expected to show the request"
    secrets = {
        "session id": session_id,
        "login cookie": alice_headers["Cookie"].split(";")[0].split("=", 1)[1],
        "other login cookie": bob_headers["Cookie"].split(";")[0].split("=", 1)[1],
        "csrf token": alice_headers["X-CSRFToken"],
        "message body": marker,
    }
    leaked = [name for name, secret in secrets.items() if secret in log]
    assert not leaked, f"{leaked} found in daphne's output"


def test_text_no_pattern_can_match_runs_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # An access-log line without "=", ":" or "bearer" (most request lines) is returned as it is, patterns unbuilt.
    def unbuilt() -> None:
        raise AssertionError("the patterns were asked for")

    monkeypatch.setattr("mcp_gateway.redaction._patterns", unbuilt)
    assert redact("POST /mcp/messages/ HTTP/1.1") == "POST /mcp/messages/ HTTP/1.1"
