"""The gateway's receivers of the model app's signals.

:func:`close_revoked_sessions` turns :data:`mcp_sessions.signals.sessions_revoked`
into the worker inbox's ``mcp.close`` message: one per worker, on the channel
layer, which reaches the worker even from another process (the admin's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from .conf import gateway_settings

if TYPE_CHECKING:
    from .wire import CloseMessage  # the wire imports the models, which this must not (see checks.E004)

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
