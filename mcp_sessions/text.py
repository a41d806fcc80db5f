"""Values from clients, made storable before they reach the database.

A client names itself (``clientInfo``), and its headers carry a user agent,
an origin and, behind a proxy, its address: any of them may hold what a
database refuses, or what breaks logs and the admin. PostgreSQL rejects a NUL
in text and a value longer than its column; a lone surrogate cannot be
encoded at all (PostgreSQL, SQLite and :mod:`json` refuse it); other control
characters and invisible format characters (bidirectional overrides can make
one name display as another) are noise at best. The managers clean every
value they write, so no caller can forget; callers that keep a value in
memory may clean it first, with the same functions, to keep it bounded.

:func:`escape` is for logs and audit rows instead: it keeps every character
but makes the text one printable line, as Django escapes the path in its own
"Not Found" log (``django.utils.log.log_response``), so a request path with
``%0d%0a`` cannot add a forged line.
"""

from __future__ import annotations

import ipaddress
import itertools
import unicodedata
from typing import Any

from django.db import models

# Unicode categories removed: controls (Cc, NUL among them), format characters (Cf) and surrogates (Cs).
REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def clean_text(value: Any, max_length: int | None = None) -> str:
    """``value`` as text without control or format characters or surrogates, at most ``max_length`` long."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # none of the removed categories is printable: the common case costs one scan in C
        return text[:max_length]
    kept = (char for char in text if unicodedata.category(char) not in REMOVED_CATEGORIES)
    return "".join(itertools.islice(kept, max_length))


def escape(value: str) -> str:
    """``value`` with control characters (CR, LF, ...), backslashes and non-ASCII escaped: one printable line."""
    return value.encode("unicode_escape").decode("ascii")


def clean_address(value: Any) -> str | None:
    """``value`` if it is an IP address, else None (an address from ``X-Forwarded-For`` may be anything)."""
    if value is None:
        return None
    text = clean_text(value)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if getattr(address, "scope_id", None) else text  # a zone (``%eth0``) fits no address column


def clean_field(model: type[models.Model], name: str, value: Any) -> Any:
    """``value`` as ``model``'s field ``name`` can store it: text cleaned and cut to the column, addresses checked.

    Values of other fields, and None, are returned unchanged.
    """
    if value is None:
        return None
    field = model._meta.get_field(name)
    if isinstance(field, models.GenericIPAddressField):
        return clean_address(value)
    if isinstance(field, models.CharField | models.TextField):
        return clean_text(value, field.max_length)
    return value


def clean_fields(model: type[models.Model], fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`clean_field` applied to each of ``fields`` (named by field name or attname)."""
    return {name: clean_field(model, name, value) for name, value in fields.items()}
