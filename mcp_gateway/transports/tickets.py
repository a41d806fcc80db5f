"""``POST <prefix>tickets``: the endpoint that issues stream tickets (see :mod:`mcp_gateway.tickets`)."""

from __future__ import annotations

from http import HTTPStatus

from channels.exceptions import StopConsumer

from ..conf import gateway_settings
from ..http import Message, json_bytes, send_response
from ..tickets import issue_ticket
from .base import GatewayConsumer


class TicketsConsumer(GatewayConsumer):
    """``POST <prefix>tickets``: issue a stream ticket to an authenticated caller (201)."""

    async def http_request(self, message: Message) -> None:
        if message.get("more_body"):
            return  # the body carries nothing; the guards bound its size
        caller = await self.identify()
        ticket = await issue_ticket(self.request, caller.credential)
        body = {"ticket": ticket, "expires_in": gateway_settings.TICKET_LIFETIME}
        await send_response(self.send, HTTPStatus.CREATED, json_bytes(body))
        raise StopConsumer()
