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
def _patterns() -> tuple[frozenset[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The secret parameter names (the site's cookie names among them), and the parameter, header and bearer patterns.

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
    return names, parameter, header, bearer


def _forget_patterns(**kwargs: Any) -> None:
    _patterns.cache_clear()


setting_changed.connect(_forget_patterns, dispatch_uid="mcp_gateway.redaction.forget_patterns")


def redact(text: str) -> str:
    """``text`` with secret query values, credential headers and bearer tokens blanked.

    Each pattern runs only where the character it cannot match without is present (``=`` for a parameter, ``%``
    too for an encoded name, ``:`` or ``=`` for a header, the word ``bearer``): an access-log line such as
    ``GET /mcp/sse`` costs a few substring tests, no regular expression.
    """
    has_pair = "=" in text
    if not has_pair and ":" not in text and "bearer" not in text.lower():
        return text
    names, parameter, header, bearer = _patterns()

    def encoded(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if unquote_plus(name).lower() in names:  # the name as parse_qs, the gateway's parser, reads it
            return f"{name}={REDACTED}"
        return f"{name}={_ENCODED_PAIR.sub(encoded, value)}"  # a secret may stand inside the value

    if has_pair:
        text = parameter.sub(rf"\1={REDACTED}", text)
        if "%" in text:
            text = _ENCODED_PAIR.sub(encoded, text)
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
