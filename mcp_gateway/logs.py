"""Log hygiene besides redaction: client-supplied text escaped, and the SDK's client errors demoted.

- :func:`escape` (from :mod:`mcp_sessions.text`) turns what a client sent (a path, a header value) into one
  printable line, as Django escapes the path in its own "Not Found" log
  (``django.utils.log.log_response``): a request path with ``%0d%0a`` must
  not add a forged line to a log or an audit row.
- :class:`SdkClientErrorFilter` (attach it to the handler that receives the
  ``mcp`` loggers, with :class:`~mcp_gateway.redaction.RedactSecretsFilter`):
  the MCP SDK answers some ordinary client mistakes, such as ``prompts/get``
  with an unknown name or without a required argument, by raising a plain
  ``ValueError`` in its own code, which its dispatcher then logs at ERROR
  with a traceback, as if the server had failed. The filter rewrites those
  records to a one-line WARNING; everything else (an exception raised by the
  site's own prompt, tool or resource code, or of any other type) keeps its
  level and traceback.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

import mcp

from mcp_sessions.text import escape  # defined with the other client-text helpers: the audit trail uses it too

__all__ = ["SdkClientErrorFilter", "escape"]

_SDK_DIR = os.path.dirname(os.path.abspath(mcp.__file__)) + os.sep


def _innermost(exc: BaseException) -> BaseException:
    """The first exception of a chain the SDK built with ``raise ... from``."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def _raised_in_sdk(traceback: TracebackType | None) -> bool:
    """Whether the frame that raised (the traceback's last) is the SDK's own code."""
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(_SDK_DIR)


def is_sdk_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the SDK refusing a request (a plain ``ValueError`` it raised itself), not a failure."""
    first = _innermost(exc)
    return type(first) is ValueError and _raised_in_sdk(first.__traceback__)


class SdkClientErrorFilter(logging.Filter):
    """Demote the ``mcp`` SDK's tracebacks for client errors to a one-line WARNING; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == "mcp" or record.name.startswith("mcp.")) or record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_sdk_client_error(exc):
            return True
        record.msg, record.args = f"{record.getMessage()}: {escape(str(exc))} (a client error)", None
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text = None, None
        return True
