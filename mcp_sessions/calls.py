"""The record of every call: one :class:`~mcp_sessions.models.CallRecord` per tools/call, resources/read, prompts/get.

The gateway's middleware (:mod:`mcp_gateway.gatekeeper`) calls :func:`record` once per request, with what it
knows; that only queues the facts (no work on the request's path but an append). A short-lived task then, per
batch and off the request's path:

- builds the rows: the arguments' digest (SHA-256 of their canonical JSON: keys sorted, no spaces, UTF-8), and
  the arguments themselves only when ``MCP_GATEWAY_CALL_ARGUMENTS`` names the site's redaction hook, with what
  the hook returns (``None``: nothing);
- sends :data:`~mcp_sessions.signals.call_recorded` for each (for SIEM shipping; no database needed);
- stores them, one thread hop per batch, unless ``MCP_GATEWAY_CALL_RECORDS`` is off. At most
  ``MCP_GATEWAY_CALL_RECORDS_PER_MINUTE`` rows per user per minute in each worker: a flood is capped, not lost
  silently, the ``mcp_gateway.calls`` log says how many were not stored, for whom.

At most ``MAX_PENDING`` records wait; more are dropped and counted in the log. Records still queued when a worker
is killed are lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.apps import apps
from django.db import connections, models, router, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from mcp_gateway.conf import gateway_settings

from .lengths import NAME_LENGTH, USERNAME_LENGTH
from .managers import OwnedQuerySet
from .signals import call_recorded
from .text import escape

MAX_PENDING = 10_000
FLUSH_DELAY = 0.2

logger = logging.getLogger("mcp_gateway.calls")

# The managers' model (CallRecord, which imports this module): generic in it rather than importing it back.
_M = TypeVar("_M", bound=models.Model)


class CallRecordQuerySet(OwnedQuerySet[_M]):
    """Call records; ``for_user`` gives one user's own (Your MCP access shows them their activity)."""


_CallRecordBaseManager = models.Manager.from_queryset(CallRecordQuerySet)


class CallRecordManager(_CallRecordBaseManager[_M]):
    def clear_expired(self, days: float) -> int:
        """Delete the records older than ``days``; how many."""
        deleted, _ = self.filter(created_at__lt=timezone.now() - timedelta(days=days)).delete()
        return deleted


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON: keys sorted, no whitespace, UTF-8; what the digest is of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the arguments' canonical JSON: equal arguments, equal digests; the values stay unknown."""
    return hashlib.sha256(canonical_json(arguments)).hexdigest()


def _model() -> type[models.Model]:
    """The CallRecord model, looked up when needed: the models import this module."""
    return apps.get_model("mcp_sessions", "CallRecord")


class CallLog:
    """The worker's queue of call records, written in batches (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] = []
        self._writer: asyncio.Task[None] | None = None
        self._minute = 0
        self._counts: Counter[Any] = Counter()
        self._capped: Counter[tuple[Any, str]] = Counter()
        self.capped = 0
        self.dropped = 0

    def record(self, **fields: Any) -> None:
        """Queue one call's facts (the gateway's middleware gives them); nothing else happens on the request path."""
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("%d call record(s) dropped: %d already wait to be written", self.dropped, MAX_PENDING)
            return
        fields["created_at"] = timezone.now()
        self._pending.append(fields)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def _admit(self, user_id: Any, username: str) -> bool:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._counts = minute, Counter()
        self._counts[user_id] += 1
        if self._counts[user_id] > gateway_settings.CALL_RECORDS_PER_MINUTE:
            self.capped += 1
            self._capped[user_id, username] += 1
            return False
        return True

    async def _drain(self) -> None:
        """Build, announce and store what is queued, in batches, until nothing is left; then end."""
        while self._pending:
            await asyncio.sleep(FLUSH_DELAY)
            batch, self._pending = self._pending, []
            rows = [_row(fields) for fields in batch]
            model = _model()
            if call_recorded.has_listeners(model):
                for row in rows:
                    call_recorded.send_robust(model, record=model(**row))
            stored = [row for row in rows if self._admit(row["user_id"], row["username"])]
            for (user_id, username), count in self._capped.items():
                logger.warning(
                    "%d call record(s) of user %s (%s) not stored: over %d per minute (%d in all so far)",
                    count,
                    user_id if user_id is not None else "-",
                    escape(username) or "-",
                    gateway_settings.CALL_RECORDS_PER_MINUTE,
                    self.capped,
                )
            self._capped.clear()
            if not (stored and gateway_settings.CALL_RECORDS):
                continue
            try:
                await database_sync_to_async(_insert)(stored)
            except Exception:
                logger.exception("Could not store %d call record(s)", len(stored))


def _row(fields: dict[str, Any]) -> dict[str, Any]:
    """One record's columns (by attribute name) from the facts the gateway gave."""
    user = fields.pop("user", None)
    arguments: Mapping[str, Any] = fields.pop("arguments")
    duration = fields.pop("duration")
    request_id = fields.pop("request_id", None)
    return {
        **fields,
        "name": fields["name"][:NAME_LENGTH],
        "user_id": getattr(user, "pk", None),
        "username": user.get_username()[:USERNAME_LENGTH] if user is not None else "",
        "arguments_digest": arguments_digest(arguments),
        "arguments": _kept_arguments(fields, arguments, user),
        "duration_ms": round(duration * 1000, 3),
        "request_id": "" if request_id is None else str(request_id)[:40],
    }


# Columns whose values go to the database as they are (text, numbers, a foreign key's pk); others are prepared.
_PLAIN = frozenset({"CharField", "IntegerField", "PositiveIntegerField", "FloatField", "ForeignKey"})


def _insert(rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` in one transaction, one ``executemany``.

    Hand-written rather than ``bulk_create``: making and preparing a model instance per row cost about 70 µs of
    CPU per call (more than the whole budget of the permission check and the record, ``bench/permissions.py``);
    this costs under 20. Values are prepared by the fields themselves where they need it (times, JSON).
    """
    model = _model()
    alias = router.db_for_write(model)
    connection = connections[alias]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    # Only the model's own table and column names, quoted by the backend, are formatted in; the values are parameters.
    columns = ", ".join(quote(str(f.column)) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    values = [
        [
            row[f.attname] if f.get_internal_type() in _PLAIN else f.get_db_prep_save(row[f.attname], connection)
            for f in fields
        ]
        for row in rows
    ]
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        cursor.executemany(sql, values)


def _kept_arguments(fields: Mapping[str, Any], arguments: Mapping[str, Any], user: Any) -> Any:
    """What the site's hook (``MCP_GATEWAY_CALL_ARGUMENTS``) keeps of the arguments; None without one or on failure."""
    path = gateway_settings.CALL_ARGUMENTS
    if not path:
        return None
    try:
        kept = import_string(path)(method=fields["method"], name=fields["name"], arguments=dict(arguments), user=user)
        if kept is not None:
            canonical_json(kept)  # it must be storable
        return kept
    except Exception:
        logger.exception("The call arguments hook %s failed; the record keeps no arguments", path)
        return None


log = CallLog()
record = log.record
