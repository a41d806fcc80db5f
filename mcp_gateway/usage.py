"""Who uses MCP: each worker counts requests per user, credential and client, and saves the counts in batches.

Protocol 2026-07-28 has no sessions, so no session record names the client a
user calls with. The transport counts each request instead, with one call::

    worker.usage.count(caller.credential, verdict.client_info, verdict.protocol_version)

(``refused=True`` for one it refused after it knew the caller). Counting
touches only a dict in memory: no database work on the request path. The
worker's :class:`UsageCounter` saves what it counted every
``USAGE_FLUSH_INTERVAL`` seconds, from one task, in one thread hop and one
transaction (:meth:`~mcp_sessions.usage.ClientUsageManager.record_batch`),
and once more when the worker shuts down (:meth:`Worker.close_all
<mcp_gateway.worker.Worker.close_all>`). The task runs only while there is
something to save.

The client's name and version come from the wire, so they are cleaned as the
table stores them (:mod:`mcp_sessions.text`) before they become a key, and
their length is bounded before they are scanned. The number of distinct keys
in one interval is bounded too (``USAGE_MAX_CLIENTS``): requests of any
further client are only counted as a total and logged at the next save, so a
caller inventing client names cannot grow a worker's memory. A batch that
could not be saved is kept for the next interval (within the same bound);
what a killed worker had not saved yet is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from mcp_sessions.ids import public_ref
from mcp_sessions.models import ClientUsage, CredentialKind, UsageRow
from mcp_sessions.text import clean_field

from .conf import gateway_settings

if TYPE_CHECKING:
    from .auth import Credential

logger = logging.getLogger("mcp_gateway")

# Characters of a client's name or version looked at, at most: more than any column holds (200), so that a 4 MB
# name costs no 4 MB scan. Cleaning happens after the cut, so a name padded with invisible characters ends early.
SCANNED_LENGTH = 1024

# What names a count: user pk, credential kind, credential reference, token pk, client name, client version,
# protocol version.
UsageKey = tuple[Any, str, str, int | None, str, str, str]


@dataclass(slots=True)
class _Tally:
    username: str
    first: float
    last: float
    requests: int = 0
    refusals: int = 0


def credential_ref(credential: Credential) -> tuple[str, str]:
    """The credential's kind and a short, non-secret reference to it.

    A login is named by the start of its ``login_session_hash`` (what its
    sessions store too); any other credential by the start of the digest in
    its fingerprint (:func:`mcp_gateway.auth.token_fingerprint`), never by
    the secret itself.
    """
    if credential.token_id is not None:
        kind = CredentialKind.TOKEN
    elif credential.login_session_hash:
        return CredentialKind.LOGIN, public_ref(credential.login_session_hash)
    else:
        kind = CredentialKind.OTHER
    return kind, public_ref(credential.fingerprint.rpartition(":")[2])


def client_text(field: str, value: Any) -> str:
    """``value`` as ``ClientUsage.<field>`` stores it: "" unless text, cut, then cleaned (:func:`clean_field`)."""
    if not isinstance(value, str):
        return ""
    cleaned: str = clean_field(ClientUsage, field, value[:SCANNED_LENGTH])
    return cleaned


def _client_info_field(client_info: Any, name: str) -> Any:
    """``client_info[name]``, for the wire's dict or an SDK ``Implementation``; None if there is none."""
    if isinstance(client_info, dict):
        return client_info.get(name)
    return getattr(client_info, name, None)


class UsageCounter:
    """One worker's usage counts for the current interval, and the task that saves them (see the module docstring)."""

    def __init__(self, *, start: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]) -> None:
        self._start = start
        self._window: dict[UsageKey, _Tally] = {}
        self._overflow = 0
        self._retry: list[UsageRow] = []
        self._task: asyncio.Task[None] | None = None
        _counters.add(self)

    def _forget(self) -> None:
        """Start afresh: in a process forked from this one, the counts are the parent's to save, not its."""
        self._window, self._overflow, self._retry, self._task = {}, 0, [], None

    def count(self, credential: Credential, client_info: Any, protocol_version: Any, *, refused: bool = False) -> None:
        """Count one request of ``credential``'s user with this client (``refused``: one the gateway refused).

        In memory only, in constant time; ``client_info`` and
        ``protocol_version`` are the request's, as the client sent them.
        """
        user = credential.user
        kind, ref = credential_ref(credential)
        key: UsageKey = (
            user.pk,
            kind,
            ref,
            credential.token_id,
            client_text("client_name", _client_info_field(client_info, "name")),
            client_text("client_version", _client_info_field(client_info, "version")),
            client_text("protocol_version", protocol_version),
        )
        now = time.time()
        tally = self._window.get(key)
        if tally is None:
            if len(self._window) >= gateway_settings.USAGE_MAX_CLIENTS:
                self._overflow += 1
                self._ensure_saving()
                return
            tally = self._window[key] = _Tally(username=user.get_username(), first=now, last=now)
        tally.last = now
        tally.requests += 1
        if refused:
            tally.refusals += 1
        self._ensure_saving()

    @property
    def pending(self) -> int:
        """Distinct keys counted and not saved yet (the retried batch's included)."""
        return len(self._window) + len(self._retry)

    def take(self) -> list[UsageRow]:
        """The counts of the interval as rows, and a new interval begun; logs the requests beyond the bound."""
        window, self._window = self._window, {}
        overflow, self._overflow = self._overflow, 0
        if overflow:
            logger.warning(
                "Client usage: %d request(s) not recorded, from clients beyond the %d this worker counts per "
                "interval (MCP_GATEWAY_USAGE_MAX_CLIENTS)",
                overflow,
                gateway_settings.USAGE_MAX_CLIENTS,
            )
        return [
            UsageRow(
                user_id=user_id,
                username=tally.username,
                credential_kind=kind,
                credential_ref=ref,
                token_id=token_id,
                client_name=name,
                client_version=version,
                protocol_version=protocol,
                first_seen=datetime.fromtimestamp(tally.first, UTC),
                last_seen=datetime.fromtimestamp(tally.last, UTC),
                requests=tally.requests,
                refusals=tally.refusals,
            )
            for (user_id, kind, ref, token_id, name, version, protocol), tally in window.items()
        ]

    async def flush(self) -> int:
        """Save what was counted (and a batch that failed before), in one thread hop; how many rows it touched.

        A batch that fails is kept for the next save, up to the bound, and
        the error raised.
        """
        rows, self._retry = self._retry + self.take(), []
        if not rows:
            return 0
        try:
            saved: int = await database_sync_to_async(ClientUsage.objects.record_batch)(rows)
        except BaseException:
            limit = gateway_settings.USAGE_MAX_CLIENTS
            if len(rows) > limit:
                logger.error("Client usage: %d row(s) that could not be saved are dropped", len(rows) - limit)
            self._retry = rows[:limit]
            raise
        return saved

    def _ensure_saving(self) -> None:
        """Have the saving task running on this loop (it ends once nothing is left to save)."""
        task = self._task
        if task is not None and not task.done():
            try:
                if task.get_loop() is asyncio.get_running_loop():
                    return
            except RuntimeError:
                return  # counted outside an event loop: the next flush saves it
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = self._start(self._run())

    async def _run(self) -> None:
        while self._window or self._overflow or self._retry:
            await asyncio.sleep(gateway_settings.USAGE_FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:
                logger.exception("Could not save this worker's client usage counts; retrying")


_counters: weakref.WeakSet[UsageCounter] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for counter in list(_counters):
        counter._forget()


os.register_at_fork(after_in_child=_forget_after_fork)
