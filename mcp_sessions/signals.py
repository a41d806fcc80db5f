"""Signals the model app sends; its own receivers (logout, password, user, token) are in :mod:`mcp_sessions.receivers`.

``sessions_revoked`` tells whatever runs the sessions that their records were
just closed: the gateway receives it (``mcp_gateway.receivers``) and ends the
live sessions in their workers. ``credentials_revoked`` tells it that
credentials stopped holding, whether or not a session of theirs is open, so
that no worker goes on trusting a check it made a moment ago. The model app
knows nothing of how.
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

credentials_revoked = Signal()
"""Sent once a transaction that revoked credentials has committed (at once in autocommit).

Sent by :func:`mcp_sessions.managers.announce_credentials_revoked`, with
``sender`` the :class:`~mcp_sessions.models.AccessToken` class and the keyword
arguments (each may be empty):

- ``token_hashes``: ``list[str]``, the hashes of tokens revoked or deleted;
- ``login_hashes``: ``list[str]``, the :func:`~mcp_sessions.revocation.login_session_hash`
  of logins ended;
- ``user_pk``: ``str | None``, a user all of whose credentials stopped
  holding (deactivated, deleted), or with ``keep_tokens`` all but their tokens
  (a password change ends their logins).

A receiver must not raise (:func:`~django.dispatch.Signal.send_robust`).
"""

call_recorded = Signal()
"""Sent for each ``tools/call``, ``resources/read`` and ``prompts/get`` the gateway served (:mod:`mcp_sessions.calls`).

Sent with ``sender`` the :class:`~mcp_sessions.models.CallRecord` class and ``record``, the row (unsaved: it is
stored after the signal, unless ``MCP_GATEWAY_CALL_RECORDS`` is off or the per-minute cap was reached, and then
never), from the worker's event loop, in batches, after the answers went out: a receiver shipping records
elsewhere (a SIEM) should hand them to a queue of its own rather than block. A receiver must not raise
(:func:`~django.dispatch.Signal.send_robust`: a failure is logged).
"""
