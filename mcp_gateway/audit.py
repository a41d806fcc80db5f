# TEMPORARY re-export: the audit trail moved to mcp_sessions.audit; other branches still import it from here.
"""The audit trail's old import path: see :mod:`mcp_sessions.audit`."""

from mcp_sessions.audit import record, record_refusal, record_refusal_after_answer, security_logger, trail

__all__ = ["record", "record_refusal", "record_refusal_after_answer", "security_logger", "trail"]
