"""Client usage: who calls MCP with which credential and client, counted per worker and saved in batches.

Protocol 2026-07-28 has no sessions, so no session record says who uses the
gateway. Each worker counts requests in memory instead (the gateway's
``mcp_gateway.usage``) and hands its counts here every interval as
:class:`UsageRow` values; :meth:`ClientUsageManager.record_batch` adds them to
one :class:`~mcp_sessions.models.ClientUsage` row per user, credential, client
name, client version and protocol version. No request writes to the database.

A batch is added in one transaction: rows are inserted if missing (a conflict
with another worker's insert is ignored), then their counts are increased and
their first and last seen moved in the database (``F()``, ``Greatest``,
``Least``), never read and written back, so two workers flushing the same rows
at once both count. Rows are always written in the same order (sorted by their
key), so two workers' transactions cannot wait on each other's locks in a
cycle on PostgreSQL. The whole batch commits or none of it does, so a batch
that failed can be retried without counting twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import models, transaction
from django.db.models.functions import Greatest, Least
from django.utils import timezone

from .managers import OwnedQuerySet
from .text import clean_fields

# The managers' model (ClientUsage, which imports this module): generic in it rather than importing it back.
_M = TypeVar("_M", bound=models.Model)

# The columns that name a row (its unique constraint), in the order batches are sorted by.
KEY_FIELDS = ("user_id", "credential_ref", "client_name", "client_version", "protocol_version")

# Rows per INSERT statement: within every database's limit on query parameters.
INSERT_CHUNK = 200


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One worker's counts for one user, credential and client over one interval."""

    user_id: int
    username: str
    credential_kind: str
    credential_ref: str
    token_id: int | None
    client_name: str
    client_version: str
    protocol_version: str
    first_seen: datetime
    last_seen: datetime
    requests: int = 0
    refusals: int = 0


class ClientUsageQuerySet(OwnedQuerySet[_M]):
    def clear_expired(self, days: float) -> int:
        """Delete the rows last seen more than ``days`` ago; how many."""
        deleted, _ = self.filter(last_seen__lt=timezone.now() - timedelta(days=days)).delete()
        return deleted


_ClientUsageBaseManager = models.Manager.from_queryset(ClientUsageQuerySet)


class ClientUsageManager(_ClientUsageBaseManager[_M]):
    def record_batch(self, rows: Iterable[UsageRow]) -> int:
        """Add ``rows`` to the stored counts (see the module docstring); how many rows they touched.

        Values are cleaned first (:mod:`mcp_sessions.text`), as every value a
        client chose; rows that then name the same row are added together.
        """
        merged = _merge(self.model, rows)
        if not merged:
            return 0
        ordered = [merged[key] for key in sorted(merged)]
        with transaction.atomic(using=self.db):
            for start in range(0, len(ordered), INSERT_CHUNK):
                chunk = ordered[start : start + INSERT_CHUNK]
                new = [self.model(**{**fields, "requests": 0, "refusals": 0}) for fields in chunk]
                self.bulk_create(new, ignore_conflicts=True)
            for fields in ordered:
                key = {name: fields[name] for name in KEY_FIELDS}
                updated = self.filter(**key).update(
                    requests=models.F("requests") + fields["requests"],
                    refusals=models.F("refusals") + fields["refusals"],
                    first_seen=Least("first_seen", models.Value(fields["first_seen"], models.DateTimeField())),
                    last_seen=Greatest("last_seen", models.Value(fields["last_seen"], models.DateTimeField())),
                )
                if not updated:  # deleted (clear_expired) between the insert and the update
                    self.create(**fields)
        return len(ordered)


def _merge(model: type[models.Model], rows: Iterable[UsageRow]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The rows' fields, cleaned as ``model`` stores them, by key; those with the same key added together."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        fields = clean_fields(
            model,
            {
                "user_id": row.user_id,
                "username": row.username,
                "credential_kind": row.credential_kind,
                "credential_ref": row.credential_ref,
                "token_id": row.token_id,
                "client_name": row.client_name,
                "client_version": row.client_version,
                "protocol_version": row.protocol_version,
                "first_seen": row.first_seen,
                "last_seen": row.last_seen,
                "requests": row.requests,
                "refusals": row.refusals,
            },
        )
        key = tuple(fields[name] for name in KEY_FIELDS)
        known = merged.get(key)
        if known is None:
            merged[key] = fields
            continue
        known["requests"] += fields["requests"]
        known["refusals"] += fields["refusals"]
        known["first_seen"] = min(known["first_seen"], fields["first_seen"])
        known["last_seen"] = max(known["last_seen"], fields["last_seen"])
    return merged
