"""Keeping secrets out of logs.

Session IDs and stream tickets travel in query strings, and credentials in
``Cookie`` and ``Authorization`` headers. :func:`redact` blanks their values
in any text; :class:`RedactSecretsFilter` applies it to every log record a
handler emits (attach it in ``LOGGING``); :mod:`mcp_gateway.daphne` applies
it to daphne's access log, which bypasses :mod:`logging`.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.core.signals import setting_changed

SECRET_PARAMETERS = ("session_id", "ticket", "token", "access_token", "code")
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrftoken", "mcp-session-id")
REDACTED = "[redacted]"


# Any ``name=value`` pair, the name possibly percent-encoded: the query parser decodes names (``session%5Fid`` is
# ``session_id`` to it), so names are decoded the same way before they are compared.
_PAIR = re.compile(r"(?<![\w%.~+-])((?:[\w.~+-]|%[0-9A-Fa-f]{2})+)=[^&;\s\"',]+")


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[frozenset[str], re.Pattern[str], re.Pattern[str]]:
    """The secret parameter names (the site's cookie names among them) and the header and bearer patterns."""
    cookie_names = (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME)
    names = frozenset(n.lower() for n in (*SECRET_PARAMETERS, *cookie_names))
    header = re.compile(rf"(?i)(?<![\w-])({'|'.join(CREDENTIAL_HEADERS)})([\"']?\s*[:=]\s*[\"']?)[^\"'\n]+")
    bearer = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
    return names, header, bearer


def _forget_patterns(**kwargs: Any) -> None:
    _patterns.cache_clear()


setting_changed.connect(_forget_patterns, dispatch_uid="mcp_gateway.redaction.forget_patterns")


def parameter_name(raw: str) -> str:
    """A query parameter's name as :func:`urllib.parse.parse_qs` (the gateway's parser) reads it."""
    return unquote_plus(raw)


def redact(text: str) -> str:
    """``text`` with secret query values, credential headers and bearer tokens blanked."""
    names, header, bearer = _patterns()

    def pair(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{name}={REDACTED}" if parameter_name(name).lower() in names else match.group(0)

    text = _PAIR.sub(pair, text)
    text = header.sub(rf"\1\2{REDACTED}", text)
    return bearer.sub(rf"\1 {REDACTED}", text)


class RedactSecretsFilter(logging.Filter):
    """Rewrite each record's message without secrets; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
