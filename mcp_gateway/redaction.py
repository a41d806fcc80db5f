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

from django.conf import global_settings, settings
from django.core.signals import setting_changed

from .conf import settings_available

SECRET_PARAMETERS = ("session_id", "ticket", "token", "access_token", "code")
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrftoken", "mcp-session-id")
REDACTED = "[redacted]"


# A ``name=value`` pair whose name is percent-encoded: the query parser decodes names (``session%5Fid`` is
# ``session_id`` to it), so such names are decoded the same way before they are compared.
_ENCODED_PAIR = re.compile(
    r"(?<![\w%.~+-])((?:[\w.~+-]|%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]{2}(?:[\w.~+-]|%[0-9A-Fa-f]{2})*)=([^&;\s\"',]+)"
)


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[frozenset[str], tuple[str, ...], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The secret parameter names (the site's cookie names among them), each followed by ``=``, and the parameter,
    header and bearer patterns.

    The parameter pattern finds a secret name anywhere it stands before ``=``, inside another pair's value too
    (``next=/mcp/sse?ticket=…``), and wherever a name character other than ``-`` or a word character precedes it
    (``a.token=…``): in a log, blanking too much is the safe mistake. Without Django settings (any ASGI application
    under the launcher) the cookie names are Django's defaults.
    """
    source = settings if settings_available() else global_settings
    cookie_names = (source.SESSION_COOKIE_NAME, source.CSRF_COOKIE_NAME)
    names = frozenset(n.lower() for n in (*SECRET_PARAMETERS, *cookie_names))
    parameter = re.compile(rf"(?i)(?<![\w-])({'|'.join(re.escape(n) for n in sorted(names))})=[^&;\s\"',]+")
    header = re.compile(rf"(?i)(?<![\w-])({'|'.join(CREDENTIAL_HEADERS)})([\"']?\s*[:=]\s*[\"']?)[^\"'\n]+")
    bearer = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
    return names, tuple(f"{n}=" for n in names), parameter, header, bearer


def _forget_patterns(**kwargs: Any) -> None:
    _patterns.cache_clear()


setting_changed.connect(_forget_patterns, dispatch_uid="mcp_gateway.redaction.forget_patterns")


def redact(text: str) -> str:
    """``text`` with secret query values, credential headers and bearer tokens blanked.

    Each pattern runs only where what it cannot match without is present (a secret name and ``=`` for a parameter,
    ``%`` and ``=`` for an encoded name, a credential header's name, the word ``bearer``), looked for in the
    case-folded text as the patterns ignore case: an access-log line such as ``GET /mcp/sse`` or
    ``POST /mcp/messages/?session_id=…`` costs a few substring tests and the one pattern it needs.
    """
    has_pair = "=" in text
    if not has_pair and ":" not in text and "bearer" not in text.casefold():
        return text
    names, pairs, parameter, header, bearer = _patterns()
    folded = text.casefold()

    def encoded(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if unquote_plus(name).lower() in names:  # the name as parse_qs, the gateway's parser, reads it
            return f"{name}={REDACTED}"
        return f"{name}={_ENCODED_PAIR.sub(encoded, value)}"  # a secret may stand inside the value

    if has_pair:
        if any(pair in folded for pair in pairs):
            text = parameter.sub(rf"\1={REDACTED}", text)
        if "%" in text:
            text = _ENCODED_PAIR.sub(encoded, text)
    if any(name in folded for name in _HEADER_WORDS):
        text = header.sub(rf"\1\2{REDACTED}", text)
    if "bearer" in folded:
        text = bearer.sub(rf"\1 {REDACTED}", text)
    return text


# What every credential header's name contains (CREDENTIAL_HEADERS): the header pattern runs only on text with one.
_HEADER_WORDS = ("authorization", "cookie", "x-csrftoken", "mcp-session-id")


class RedactSecretsFilter(logging.Filter):
    """Rewrite each record's message without secrets; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
