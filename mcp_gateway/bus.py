"""The ``SubscriptionBus`` of the gateway (2026-07-28): listen events across every worker, on the channel layer.

The SDK's ``ListenHandler`` serves a ``subscriptions/listen`` stream from a
``SubscriptionBus``; its in-memory default reaches only the process that
publishes. :class:`ChannelLayerBus` publishes instead with one ``group_send``
to :data:`~mcp_gateway.wire.LISTEN_EVENTS_GROUP`, which every worker's inbox
joins, and each worker hands what arrives to its own listeners
(:class:`~mcp_gateway.listeners.LocalFanout`). Publishing works from any
process with the channel layer (a management command, the admin's), and the
publishing worker receives its own events as the others do, in the same order.

Events may be for one user: :meth:`ChannelLayerBus.publish_for`. A listen
stream reads the bus through :meth:`ChannelLayerBus.for_user`, a view that
subscribes for its owner, so that a per-user event never reaches another
user's stream; the SDK's filter (``event_matches``) still applies on top.
:data:`bus` is the one the gateway serves listen streams from; pass it to
``MCPServer(subscriptions=bus)`` so that the tools' ``ctx.notify_*`` reach
every worker too.

Delivery is at most once, as the SDK's: a ``group_send`` that fails is logged
and the event is lost (clients refetch when they re-listen); a worker whose
inbox is full misses it (Channels drops it silently).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from channels.layers import BaseChannelLayer, get_channel_layer
from mcp.shared.subscriptions import ServerEvent

from .conf import gateway_settings
from .listeners import LocalFanout, event_message
from .wire import LISTEN_EVENTS_GROUP
from .worker import worker

logger = logging.getLogger("mcp_gateway")


class ChannelLayerBus:
    """A ``SubscriptionBus`` over the channel layer; see the module docstring.

    ``layer`` is the channel layer to publish on (default: the gateway's,
    ``MCP_GATEWAY_CHANNEL_LAYER``, looked up at each publish, so the bus can
    be made at import time); ``fanout`` the local listeners subscribing here
    (default: this process's worker's).
    """

    def __init__(self, *, layer: BaseChannelLayer | None = None, fanout: LocalFanout | None = None) -> None:
        self._layer = layer
        self._fanout = fanout

    @property
    def layer(self) -> BaseChannelLayer | None:
        """The layer events are published on, or None if the site has none."""
        if self._layer is not None:
            return self._layer
        layer: BaseChannelLayer | None = get_channel_layer(gateway_settings.CHANNEL_LAYER)
        return layer

    @property
    def fanout(self) -> LocalFanout:
        return self._fanout if self._fanout is not None else worker.listens.fanout

    async def publish(self, event: ServerEvent) -> None:
        """Send ``event`` to every user's listen streams, on every worker (``SubscriptionBus.publish``)."""
        await self.publish_for(event, None)

    async def publish_for(self, event: ServerEvent, user: str | None) -> bool:
        """Send ``event`` to ``user``'s listen streams (the user's pk as text; None: everyone's), on every worker.

        Whether it was handed to the channel layer: a failure is logged, never raised, so that no publisher (a
        tool, a model's save) fails for it.
        """
        layer = self.layer
        if layer is None:
            logger.warning("No channel layer %r: a listen event was dropped", gateway_settings.CHANNEL_LAYER)
            return False
        try:
            await layer.group_send(LISTEN_EVENTS_GROUP, event_message(event, user))
        except Exception:
            logger.exception("Could not publish a listen event; listen streams miss it")
            return False
        return True

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Listen to the events for everyone (never a user's own) in this worker (``SubscriptionBus.subscribe``)."""
        return self.fanout.subscribe(listener, user=None)

    def for_user(self, user: str) -> UserBus:
        """The bus as ``user``'s listen streams see it: their events and everyone's."""
        return UserBus(self, user)


class UserBus:
    """A ``SubscriptionBus`` view for one user's listen stream: it subscribes for that user's events too."""

    def __init__(self, bus: ChannelLayerBus, user: str) -> None:
        self._bus = bus
        self.user = user

    async def publish(self, event: ServerEvent) -> None:
        """Send ``event`` to this user's streams only."""
        await self._bus.publish_for(event, self.user)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        return self._bus.fanout.subscribe(listener, user=self.user)


bus = ChannelLayerBus()
"""The gateway's bus: listen streams are served from it, and :mod:`mcp_gateway.events` publishes on it."""
