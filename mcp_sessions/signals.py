"""Signals the model app sends; its own receivers (logout, password, user, token) are in :mod:`mcp_sessions.receivers`.

``sessions_revoked`` tells whatever runs the sessions that their records were
just closed: the gateway receives it (``mcp_gateway.receivers``) and ends the
live sessions in their workers. The model app knows nothing of how.
"""

from __future__ import annotations

from django.dispatch import Signal

sessions_revoked = Signal()
"""Sent once a transaction that closed open session records has committed (at once in autocommit).

Sent by :func:`mcp_sessions.revocation.revoke`, with ``sender`` the
:class:`~mcp_sessions.models.McpSession` class and the keyword arguments:

- ``by_worker``: ``dict[str, list[int]]``, the pks of the closed records by the
  channel-layer address of the worker that runs them (``McpSession.channel_name``);
- ``reason``: ``str``, the :class:`~mcp_sessions.models.CloseReason` they were closed for.

A receiver must not raise: :func:`~django.dispatch.Signal.send_robust` is used
and a failure is logged, and each worker still finds its records closed at its
next sweep.
"""
