"""How a session host ends (:class:`Closing`): its server loop stopped, its streams ended, its record closed.

Split from :mod:`.host`, as a part of :class:`~.host.SessionHost`: closing is
where a session's guarantees meet (what its inbox still holds is answered, an
evicted session's requests in progress are let finish, and a close whose
write failed is retried by the sweep until it is written, the host staying
registered meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio
from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from mcp_sessions import audit
from mcp_sessions.models import CloseReason, McpSession, error_summary

from ..auth import Credential
from .delivery import Delivery
from .site import EVICTION_GRACE, Site
from .streams import SessionStreams

logger = logging.getLogger("mcp_gateway")


class Closing(Delivery):
    """What a :class:`~.host.SessionHost` does to close: from outside its task, or at the end of it."""

    __slots__ = ("_close_reason", "_closed", "_ended", "_ending", "_loop", "_unwritten")
    _close_reason: str | None
    _closed: asyncio.Future[None] | None
    _ended: bool
    _ending: bool
    _loop: asyncio.AbstractEventLoop | None
    _unwritten: str | None
    # The host's, see SessionHost.
    _deadline_timer: asyncio.TimerHandle | None
    _site: Site[Any]
    _task: asyncio.Task[None] | None
    credential: Credential
    layer: BaseChannelLayer
    pk: int
    ref: str
    remote_addr: str | None
    streams: SessionStreams

    def _wake(self) -> None:
        raise NotImplementedError

    def all_activity(self) -> dict[str, Any] | None:
        raise NotImplementedError

    async def close(self, reason: str) -> None:
        """Close the session from outside its task, and wait until it has (trying again a close not yet written)."""
        if self._close_reason is None:
            self._close_reason = reason
        if self._ended:
            await self.retry_close()
            return
        if self._task is None:
            await self._close_now(reason)
        else:
            self._wake()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the session has closed and the close of its record was tried (a failed one is retried)."""
        if self._ended:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    async def _close_now(self, reason: str) -> None:
        """Stop the server loop, end the streams, answer what waits in the inbox, and close the record."""
        if self._ending or not self._site.runs(self):
            return
        self._ending = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()  # never started: the sweep of this loop retries a failed close
        actor_task = self._actor_task
        if actor_task is not None and not actor_task.done() and actor_task is not asyncio.current_task():
            if reason == CloseReason.EVICTED and self.actor is not None:
                # Evicted while busy after all: not refused (the record is closed and the new session counted),
                # but what is in progress is answered first; nothing new is taken meanwhile (not accepting).
                with anyio.move_on_after(EVICTION_GRACE):
                    await self.actor.wait_settled()
            # An anyio cancel scope, not task.cancel(): it keeps cancelling until the server loop has
            # unwound, even if a handler catches one cancellation to answer its request.
            self._actor_scope.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await actor_task
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        outlets = self.streams.close()
        unread = self._mail.take_all()
        try:
            try:
                for outlet in outlets:
                    await outlet.end(reason)
                for message in unread:  # nothing will read them now: answer whoever waits on one
                    self._site.refuse(self.layer, message, "gone")
            except Exception:
                logger.exception("Could not end the streams of MCP session %s", self.ref)
            await self._write_close(reason)
        finally:
            if self._unwritten is None and self._site.runs(self):
                # Cancelled before the record's close was tried: the sweep writes it, as it does a failed one.
                self._unwritten = reason
                self._site.sweep_soon()
            if self.actor is not None:
                with contextlib.suppress(Exception):
                    await self.actor.end()
                # The actor's sink is the streams' router: without it, the session's objects (its buffered
                # events first) are freed now by reference counting, not at the next full collection.
                self.actor.release()
            self._ended = True
            if self._closed is not None:
                self._closed.set_result(None)

    async def _write_close(self, reason: str) -> None:
        """Close the record, with all the activity, and audit it; then, and only then, unregister the host.

        A write that fails leaves the host registered, closing and taking no
        more messages, with the reason kept for the sweep to try again
        (:meth:`retry_close`) until it is written: an unregistered host could
        never close its record, which would hold one of the user's session
        slots, open, for good.
        """
        try:
            # Closed elsewhere already (revoked), the record keeps that time and reason but still learns
            # all the activity: a sweep's write may have been refused because the record had just closed.
            reason = await database_sync_to_async(McpSession.objects.close)(self.pk, reason, self.all_activity())
        except Exception as exc:
            self._unwritten = reason
            logger.error(
                "Could not record the end of MCP session %s (%s); retrying at the next sweep",
                self.ref,
                error_summary(exc),
            )
            self._site.sweep_soon()
            return
        except BaseException:
            self._unwritten = reason  # cancelled: whether it was written is unknown, and writing it again is harmless
            raise
        self._site.forget(self)
        audit.session_closed(
            user=self.credential.user, remote_addr=self.remote_addr, session_ref=self.ref, reason=reason
        )

    @property
    def close_unwritten(self) -> bool:
        """Closed, and the close of its record not written yet (the write failed)."""
        return self._unwritten is not None

    async def retry_close(self) -> None:
        """Write the close that failed when the session closed, if it did (the sweep calls this)."""
        if self._unwritten is None:
            return
        reason, self._unwritten = self._unwritten, None  # taken: a concurrent retry does not write it twice
        await self._write_close(reason)
