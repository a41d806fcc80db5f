"""The gateway's receivers of the model app's signals.

:func:`close_revoked_sessions` turns :data:`mcp_sessions.signals.sessions_revoked`
into the worker inbox's ``mcp.close`` message: one per worker, on the channel
layer, which reaches the worker even from another process (the admin's).

:func:`forget_revoked_credentials` turns :data:`mcp_sessions.signals.credentials_revoked`
into ``mcp.forget_credentials``, forgotten in this process at once and sent to
the group every worker's inbox joins before it caches a credential
(:mod:`mcp_gateway.credcache`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from .conf import gateway_settings

if TYPE_CHECKING:
    # The wire and the auth import the models, which this must not at import time (see checks.E004).
    from .wire import CloseMessage, ForgetCredentialsMessage

logger = logging.getLogger("mcp_gateway")


def close_revoked_sessions(sender: Any, *, by_worker: dict[str, list[int]], reason: str, **kwargs: Any) -> None:
    """Tell each worker running some of the revoked sessions to end them: one ``mcp.close`` message per worker.

    A message that cannot be delivered is not retried: the worker finds the
    records closed at its next sweep.
    """
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    for channel, pks in by_worker.items():
        message: CloseMessage = {"type": "mcp.close", "sessions": pks, "reason": reason}
        try:
            async_to_sync(layer.send)(channel, message)
        except ChannelFull:
            pass  # the worker finds the records closed at its next sweep
        except Exception:
            logger.exception("Could not reach a worker to close its MCP sessions; they close at its next sweep")


def forget_revoked_credentials(
    sender: Any,
    *,
    token_hashes: list[str],
    login_hashes: list[str],
    user_pk: str | None,
    keep_tokens: bool,
    **kwargs: Any,
) -> None:
    """Have every worker's cache of verified credentials drop these: this process's now, the others' by broadcast.

    A broadcast that cannot be delivered is not retried: the entries expire
    within ``CREDENTIAL_CACHE_TTL``.
    """
    from .auth import login_fingerprint, token_fingerprint
    from .credcache import credential_cache
    from .wire import CREDENTIALS_GROUP

    message: ForgetCredentialsMessage = {
        "type": "mcp.forget_credentials",
        "fingerprints": [token_fingerprint(h) for h in token_hashes] + [login_fingerprint(h) for h in login_hashes],
        "keep_tokens": keep_tokens,
    }
    if user_pk is not None:
        message["user"] = user_pk
    credential_cache.forget(message)
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(CREDENTIALS_GROUP, message)
    except Exception:
        logger.exception("Could not tell the workers of revoked credentials; their caches drop them within the TTL")
