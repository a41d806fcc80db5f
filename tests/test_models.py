"""Session IDs, the ownership queryset, and what the session records store."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from mcp_sessions.ids import hash_session_id, is_well_formed, new_session_id, public_ref
from mcp_sessions.models import CloseReason, McpSession, Transport
from mcp_sessions.text import clean_field, clean_text


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
    id_hash = hash_session_id(session_id)
    assert McpSession.objects.for_user(alice).filter(id_hash=id_hash).count() == 1
    assert McpSession.objects.for_user(bob).filter(id_hash=id_hash).count() == 0
    assert McpSession.objects.for_user(AnonymousUser()).count() == 0


# Values from clients, cleaned before they reach the database


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain name 1.0", "plain name 1.0"),
        ("évian ✓ 名前", "évian ✓ 名前"),
        ("a\x00b", "ab"),
        ("\x00\x01\x1f tab\tnew\nline\r\x7f\x85\x9b", " tabnewline"),
        ("left\u202eright\u200b\ufeff", "leftright"),  # bidirectional override, zero-width space, BOM
        ("lone \ud800 surrogate \udfff", "lone  surrogate "),
    ],
)
def test_client_text_loses_control_and_format_characters_and_surrogates(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_client_text_is_cut_after_cleaning() -> None:
    assert clean_text("\x00" * 10 + "abcdef", 4) == "abcd"
    assert clean_text("abcdef", 4) == "abcd"
    assert clean_text(12345, 3) == "123"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "::ffff:10.0.0.1"), ("evil\x00", None), ("fe80::1%eth0", None)],
)
def test_client_addresses_are_kept_only_when_they_are_addresses(raw: str, clean: str | None) -> None:
    assert clean_field(McpSession, "remote_addr", raw) == clean


def _max_length(name: str) -> int:
    max_length = McpSession._meta.get_field(name).max_length
    assert max_length is not None
    return max_length


@pytest.mark.django_db(transaction=True)
def test_every_write_of_a_session_record_stores_client_text_cleaned_and_cut_to_its_column(alice: Any) -> None:
    """``open_for``, ``record_activity`` and ``close`` clean what they write, whoever calls them.

    A NUL breaks the write on PostgreSQL and a lone surrogate on every database; a value longer than its
    column breaks it on PostgreSQL.
    """
    record = McpSession.objects.open_for(
        alice,
        limit=None,
        lease=45,
        id_hash=hash_session_id(new_session_id()),
        server="/mcp/",
        transport=Transport.SSE,
        channel_name="c",
        user_agent="agent\x00/1.0" + "u" * 1000,
        origin="https://evil.example\ud800",
        remote_addr="not an address\x00",
    )
    record.refresh_from_db()
    assert record.user_agent == ("agent/1.0" + "u" * 1000)[: _max_length("user_agent")]
    assert (record.origin, record.remote_addr) == ("https://evil.example", None)

    still_open, written = McpSession.objects.record_activity(
        {
            record.pk: {
                "client_name": "bad\x00name\x01\u202e" + "n" * 500,
                "client_version": "1.0\ud800",
                "messages_in": 1,
            }
        }
    )
    assert still_open == written == {record.pk}
    record.refresh_from_db()
    assert record.client_name == ("badname" + "n" * 500)[: _max_length("client_name")]
    assert (record.client_version, record.messages_in) == ("1.0", 1)

    changes = {"client_name": "\x00closing\x00", "protocol_version": "2025-11-25\x00" + "9" * 100, "messages_in": 2}
    assert McpSession.objects.close(record.pk, CloseReason.CLIENT_DISCONNECT, changes) == CloseReason.CLIENT_DISCONNECT
    record.refresh_from_db()
    assert (record.client_name, record.messages_in) == ("closing", 2)
    assert record.protocol_version == ("2025-11-25" + "9" * 100)[: _max_length("protocol_version")]


@pytest.mark.django_db(transaction=True)
def test_one_sessions_failed_activity_write_does_not_stop_the_others(
    alice: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A row that refuses its write is left out of those written (retried later) and still counts as open."""
    records = [
        McpSession.objects.create(
            user=alice,
            id_hash=hash_session_id(new_session_id()),
            server="/mcp/",
            transport=Transport.SSE,
            channel_name="c",
        )
        for _ in range(3)
    ]
    first, bad, last = (record.pk for record in records)
    # A negative count breaks the column's check constraint on every database: a real failure of one row's write.
    changes = {first: {"messages_in": 5}, bad: {"messages_in": -1}, last: {"messages_in": 7}}
    with caplog.at_level(logging.ERROR, logger="mcp_gateway"):
        still_open, written = McpSession.objects.record_activity(changes)
    assert still_open == {first, bad, last}
    assert written == {first, last}
    assert dict(McpSession.objects.values_list("pk", "messages_in")) == {first: 5, bad: 0, last: 7}
    assert records[1].ref in caplog.text and records[1].id_hash not in caplog.text


@pytest.mark.django_db
def test_one_rule_says_which_tokens_are_active(make_user: Any) -> None:
    """The queryset, the instance, the admin's filter and the ticket check agree (the rule was written four times)."""
    from datetime import timedelta

    from django.utils import timezone

    from mcp_sessions.models import AccessToken, TokenState

    alice, gone = make_user("alice"), make_user("gone", is_active=False)
    now = timezone.now()
    tokens = {
        "no expiry": AccessToken.objects.issue(alice, "a")[0],
        "expires later": AccessToken.objects.issue(alice, "b", expires_at=now + timedelta(hours=1))[0],
        "expired": AccessToken.objects.issue(alice, "c", expires_at=now - timedelta(seconds=1))[0],
        "revoked": AccessToken.objects.issue(alice, "d")[0],
        "revoked and expired": AccessToken.objects.issue(alice, "e", expires_at=now - timedelta(hours=1))[0],
        "inactive owner": AccessToken.objects.issue(gone, "f")[0],
    }
    AccessToken.objects.filter(name__in=["d", "e"]).update(revoked_at=now)
    tokens = {label: AccessToken.objects.get(pk=token.pk) for label, token in tokens.items()}
    expected = {
        "no expiry": TokenState.ACTIVE,
        "expires later": TokenState.ACTIVE,
        "expired": TokenState.EXPIRED,
        "revoked": TokenState.REVOKED,
        "revoked and expired": TokenState.REVOKED,
        "inactive owner": TokenState.ACTIVE,  # the token is; its owner cannot authenticate (usable)
    }
    assert {label: token.state for label, token in tokens.items()} == expected
    for state in TokenState:
        in_state = set(AccessToken.objects.in_state(state).values_list("pk", flat=True))
        assert in_state == {tokens[label].pk for label, s in expected.items() if s == state}, state
    active = set(AccessToken.objects.active().values_list("pk", flat=True))
    assert active == {token.pk for token in tokens.values() if token.is_active}
    usable = set(AccessToken.objects.usable().values_list("pk", flat=True))
    assert usable == active - {tokens["inactive owner"].pk}


def test_every_close_reason_is_a_member() -> None:
    """The stream-end reasons the gateway gives its outlets are spelled once, in CloseReason, with their old values."""
    assert (CloseReason.COMPLETE, CloseReason.REPLACED, CloseReason.BUSY) == ("complete", "replaced", "busy")
    assert all(len(reason) <= McpSession._meta.get_field("close_reason").max_length for reason in CloseReason.values)
