"""The "Revoke" button of a session's and a token's admin page: the changelist's action on one object, as guarded."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mcp_sessions.ids import hash_session_id, new_session_id
from mcp_sessions.models import AccessToken, AuditEvent, AuditKind, McpSession, Transport

pytestmark = pytest.mark.django_db(transaction=True)

# Who visits: the permissions of each (a superuser has them all).
STAFF = {
    "root": None,
    "session-revoker": ("view_mcpsession", "revoke_mcpsession"),
    "session-viewer": ("view_mcpsession",),
    "token-changer": ("change_accesstoken",),
    "token-viewer": ("view_accesstoken",),
}


@pytest.fixture
def staff(make_user: Any) -> dict[str, Client]:
    clients = {}
    for name, permissions in STAFF.items():
        user = make_user(name, is_staff=True, is_superuser=permissions is None)
        user.user_permissions.add(*Permission.objects.filter(codename__in=permissions or ()))
        clients[name] = Client()
        clients[name].force_login(user)
    return clients


@pytest.fixture
def objects(make_user: Any) -> dict[str, Any]:
    """An open and a closed session, an active and a revoked token; the active token opened the open session."""
    carol = make_user("carol")
    token, _ = AccessToken.objects.issue(carol, "agent")
    revoked, _ = AccessToken.objects.issue(carol, "old")
    AccessToken.objects.filter(pk=revoked.pk).revoke()
    common = {"user": carol, "server": "/mcp/", "transport": Transport.SSE, "channel_name": "specific.x!y"}
    return {
        "session": McpSession.objects.create(id_hash=hash_session_id(new_session_id()), token=token, **common),
        "closed-session": McpSession.objects.create(
            id_hash=hash_session_id(new_session_id()), closed_at=timezone.now(), close_reason="terminated", **common
        ),
        "token": token,
        "revoked-token": AccessToken.objects.get(pk=revoked.pk),
    }


def url(name: str, obj: Any) -> str:
    return reverse(f"admin:mcp_sessions_{obj._meta.model_name}_{name}", args=[obj.pk])


def revoked(obj: Any) -> bool:
    obj.refresh_from_db()
    return obj.closed_at is not None if isinstance(obj, McpSession) else obj.revoked_at is not None


# (id, who, object, request: "get" / "post" / "post-without-csrf", status, whether it is revoked after)
CASES = [
    ("root-revokes-a-session", "root", "session", "post", 302, True),
    ("revoker-revokes-a-session", "session-revoker", "session", "post", 302, True),
    ("viewer-may-not-revoke-a-session", "session-viewer", "session", "post", 403, False),
    ("token-changer-may-not-revoke-a-session", "token-changer", "session", "post", 403, False),
    ("get-only-asks-to-confirm-a-session", "root", "session", "get", 200, False),
    ("a-session-post-without-csrf-is-refused", "root", "session", "post-without-csrf", 403, False),
    ("root-revokes-a-token", "root", "token", "post", 302, True),
    ("changer-revokes-a-token", "token-changer", "token", "post", 302, True),
    ("viewer-may-not-revoke-a-token", "token-viewer", "token", "post", 403, False),
    ("session-revoker-may-not-revoke-a-token", "session-revoker", "token", "post", 403, False),
    ("get-only-asks-to-confirm-a-token", "root", "token", "get", 200, False),
    ("a-token-post-without-csrf-is-refused", "root", "token", "post-without-csrf", 403, False),
]


@pytest.mark.parametrize(("who", "target", "how", "status", "after"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_revoke_page_revokes_only_on_a_permitted_confirmed_post(
    staff: dict[str, Client], objects: dict[str, Any], who: str, target: str, how: str, status: int, after: bool
) -> None:
    obj = objects[target]
    client = staff[who]
    if how == "post-without-csrf":
        client = Client(enforce_csrf_checks=True)
        client.cookies = staff[who].cookies
    response = client.get(url("revoke", obj)) if how == "get" else client.post(url("revoke", obj), {"post": "yes"})
    assert response.status_code == status
    assert revoked(obj) is after
    session = objects["session"]  # the token's session goes with the token, as under the changelist action
    assert revoked(session) is after
    rows = AuditEvent.objects.filter(kind=AuditKind.SESSION_REVOKED, session_ref=session.ref)
    assert rows.count() == (1 if after else 0)
    if status == 302:
        assert response["Location"] == url("change", obj)
    if how == "get":
        assert "Yes, revoke" in response.content.decode()


# (id, who, object, whether its change page shows the button)
BUTTONS = [
    ("open-session-root", "root", "session", True),
    ("open-session-revoker", "session-revoker", "session", True),
    ("open-session-viewer", "session-viewer", "session", False),
    ("closed-session", "root", "closed-session", False),
    ("active-token-root", "root", "token", True),
    ("active-token-changer", "token-changer", "token", True),
    ("active-token-viewer", "token-viewer", "token", False),
    ("revoked-token", "root", "revoked-token", False),
]


@pytest.mark.parametrize(("who", "target", "shown"), [c[1:] for c in BUTTONS], ids=[c[0] for c in BUTTONS])
def test_the_button_shows_only_where_there_is_something_to_revoke_and_permission_to(
    staff: dict[str, Client], objects: dict[str, Any], who: str, target: str, shown: bool
) -> None:
    obj = objects[target]
    response = staff[who].get(url("change", obj))
    assert response.status_code == 200
    page = response.content.decode()
    assert ('id="mcp-revoke-link"' in page) is shown
    assert (f'href="{url("revoke", obj)}"' in page) is shown


@pytest.mark.parametrize("target", ["closed-session", "revoked-token"])
def test_revoking_what_is_already_revoked_changes_nothing(
    staff: dict[str, Client], objects: dict[str, Any], target: str
) -> None:
    obj = objects[target]
    before = AuditEvent.objects.count()
    response = staff["root"].post(url("revoke", obj), {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == url("change", obj)
    assert AuditEvent.objects.count() == before
    assert not revoked(objects["session"])
