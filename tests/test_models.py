"""Session IDs and the ownership queryset."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from mcp_sessions.ids import hash_session_id, is_well_formed, new_session_id, public_ref
from mcp_sessions.models import McpSession, Transport


def test_ids_are_random_well_formed_and_hashed_with_sha256() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_well_formed(i) and len(i) == 43 for i in ids)
    some = next(iter(ids))
    assert hash_session_id(some) == hashlib.sha256(some.encode()).hexdigest()
    assert public_ref(hash_session_id(some)) == hash_session_id(some)[:12]


@pytest.mark.parametrize("bad", ["", "short", "x" * 44, "A" * 42 + "!", "é" * 43, "../../etc/passwd"])
def test_malformed_ids_are_rejected(bad: str) -> None:
    assert not is_well_formed(bad)


@pytest.mark.django_db
def test_for_user_scopes_by_owner(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    session_id = new_session_id()
    McpSession.objects.create(
        user=alice, id_hash=hash_session_id(session_id), server="/mcp/", transport=Transport.SSE, channel_name="c"
    )
    assert McpSession.objects.for_user(alice).with_session_id(session_id).count() == 1
    assert McpSession.objects.for_user(bob).with_session_id(session_id).count() == 0
    assert McpSession.objects.for_user(AnonymousUser()).count() == 0
    assert McpSession.objects.with_session_id("not well formed").count() == 0
