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

from django.conf import settings

SECRET_PARAMETERS = ("session_id", "ticket", "token", "access_token", "code")
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrftoken")
REDACTED = "[redacted]"


@functools.cache
def _patterns(cookie_names: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    names = "|".join(re.escape(n) for n in (*SECRET_PARAMETERS, *cookie_names))
    parameter = re.compile(rf"(?i)(?<![\w-])({names})=[^&;\s\"',]+")
    header = re.compile(rf"(?i)(?<![\w-])({'|'.join(CREDENTIAL_HEADERS)})([\"']?\s*[:=]\s*[\"']?)[^\"'\n]+")
    bearer = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
    return parameter, header, bearer


def redact(text: str) -> str:
    """``text`` with secret query values, credential headers and bearer tokens blanked."""
    cookies = (settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME)
    parameter, header, bearer = _patterns(cookies)
    text = parameter.sub(rf"\1={REDACTED}", text)
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
