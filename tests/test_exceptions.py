"""The refusal exceptions: Django's where they mean the same, their answers unchanged, and our JSON-RPC code."""

from __future__ import annotations

import mcp_types
import pytest
from django.core.exceptions import BadRequest, DisallowedHost, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404

from mcp_gateway import exceptions
from mcp_gateway.exceptions import EVENTS_LOST, TOO_MANY_REQUESTS, GatewayError

# Every refusal's (status, reason, JSON-RPC code) as they were before the classes gained Django's bases (and the
# one added since).
ANSWERS = {
    "BadRequest": (400, "bad_request", -32600),
    "ParseError": (400, "parse_error", -32700),
    "BodyNotAllowed": (400, "body_not_allowed", -32600),
    "InvalidMessage": (400, "invalid_message", -32600),
    "MissingSessionId": (400, "missing_session_id", -32600),
    "MalformedSessionId": (400, "malformed_session_id", -32600),
    "InvalidEventId": (400, "invalid_event_id", -32600),
    "BatchNotSupported": (400, "batch_not_supported", -32600),
    "InitializeRequired": (400, "initialize_required", -32600),
    "UnsupportedProtocolVersion": (400, "unsupported_protocol_version", -32600),
    # New with protocol 2026-07-28: the class's defaults; each instance carries the SDK's code and status.
    "ProtocolRejection": (400, "protocol_rejected", -32600),
    "AuthenticationRequired": (401, "authentication_required", -32600),
    "InvalidToken": (401, "invalid_token", -32600),
    "InvalidTicket": (401, "invalid_ticket", -32600),
    "TicketRequired": (401, "ticket_required", -32600),
    "Forbidden": (403, "forbidden", -32600),
    "OriginNotAllowed": (403, "origin_not_allowed", -32600),
    "InsufficientScope": (403, "insufficient_scope", -32600),
    "CsrfFailed": (403, "csrf_failed", -32600),
    "SessionNotFound": (404, "session_not_found", -32600),
    "NotFound": (404, "not_found", -32600),
    "MethodNotAllowed": (405, "method_not_allowed", -32600),
    "NotAcceptable": (406, "not_acceptable", -32600),
    "RequestTimeout": (408, "request_timeout", -32600),
    "StreamConflict": (409, "stream_conflict", -32600),
    "PayloadTooLarge": (413, "payload_too_large", -32600),
    "UnsupportedMediaType": (415, "unsupported_media_type", -32600),
    "MisdirectedRequest": (421, "host_not_allowed", -32600),
    "TooManyRequests": (429, "rate_limited", -32600),
    "TooManySessions": (429, "session_limit", -32600),
    "ServiceUnavailable": (503, "unavailable", -32603),
}


def refusal_classes() -> list[type[GatewayError]]:
    return [c for c in vars(exceptions).values() if isinstance(c, type) and issubclass(c, GatewayError)]


def test_every_refusal_answers_as_before() -> None:
    answers = {c.__name__: (c.status, c.reason, c.jsonrpc_code) for c in refusal_classes() if c is not GatewayError}
    assert answers == ANSWERS


@pytest.mark.parametrize(
    ("refusal", "django_class"),
    [
        ("ParseError", BadRequest),
        ("MalformedSessionId", BadRequest),
        ("UnsupportedProtocolVersion", BadRequest),
        ("OriginNotAllowed", PermissionDenied),
        ("CsrfFailed", PermissionDenied),
        ("SessionNotFound", Http404),
        ("NotFound", Http404),
        ("MisdirectedRequest", DisallowedHost),
        ("MisdirectedRequest", SuspiciousOperation),
        ("PayloadTooLarge", RequestDataTooBig),
    ],
)
def test_refusals_are_djangos_exceptions_where_they_mean_the_same(refusal: str, django_class: type) -> None:
    assert issubclass(getattr(exceptions, refusal), django_class)


def test_the_other_refusals_claim_no_django_meaning() -> None:
    """401, 405, 406, 409, 415, 429 and 503 have no Django exception; they stay plain GatewayErrors."""
    for name in ("InvalidToken", "TicketRequired", "MethodNotAllowed", "StreamConflict", "TooManyRequests"):
        assert not issubclass(getattr(exceptions, name), (BadRequest, PermissionDenied, SuspiciousOperation, Http404))


def test_too_many_requests_has_a_code_of_its_own() -> None:
    """In the implementation-defined server-error range, and none the SDK defines (it was the SDK's REQUEST_TIMEOUT)."""
    sdk_codes = {
        v for k, v in vars(mcp_types).items() if k.isupper() and isinstance(v, int) and not isinstance(v, bool)
    }
    assert mcp_types.REQUEST_TIMEOUT in sdk_codes
    assert -32019 <= TOO_MANY_REQUESTS <= -32000
    assert TOO_MANY_REQUESTS not in sdk_codes | {-32002}  # -32002: retired by the spec, never reused


def test_events_lost_has_a_code_of_its_own() -> None:
    """Not -32002, which the 2026-07-28 specification retired, nor any code the SDK defines, nor TOO_MANY_REQUESTS."""
    sdk_codes = {
        v for k, v in vars(mcp_types).items() if k.isupper() and isinstance(v, int) and not isinstance(v, bool)
    }
    assert -32019 <= EVENTS_LOST <= -32000
    assert EVENTS_LOST not in sdk_codes | {-32002, TOO_MANY_REQUESTS}


def test_a_protocol_rejection_answers_with_the_sdks_code_status_and_data() -> None:
    data = {"supported": ["2026-07-28"], "requested": "2099-01-01"}
    refusal = exceptions.ProtocolRejection(mcp_types.UNSUPPORTED_PROTOCOL_VERSION, "Unsupported", data, status=400)
    assert (refusal.status, refusal.jsonrpc_code, refusal.error_data()) == (400, -32022, data)
    assert exceptions.ProtocolRejection(mcp_types.METHOD_NOT_FOUND, "no", status=404).error_data() == {
        "reason": "protocol_rejected"
    }
