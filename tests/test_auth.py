"""The authentication step and the CSRF rule, in-process on real Django sessions."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from mcp_gateway.auth import Credential, authenticate
from mcp_gateway.csrf import check_csrf
from mcp_gateway.exceptions import AuthenticationRequired, CsrfFailed
from mcp_gateway.http import GatewayRequest

from .asgi_helpers import http_scope
from .conftest import login_headers

pytestmark = pytest.mark.django_db(transaction=True)


def request_with(headers: dict[str, str], method: str = "GET") -> GatewayRequest:
    return GatewayRequest(http_scope(method, headers=list(headers.items())))


async def test_login_cookie_identifies_the_user(alice: Any, alice_headers: dict[str, str]) -> None:
    credential = await authenticate(request_with(alice_headers))
    assert credential.user.pk == alice.pk
    assert credential.ambient and credential.scheme == "session"


@pytest.mark.parametrize(
    "spoil",
    ["deactivate", "change-password", "delete-user", "flush-login"],
)
async def test_login_that_no_longer_holds_is_refused(spoil: str, alice: Any, alice_headers: dict[str, str]) -> None:
    def apply() -> None:
        if spoil == "deactivate":
            alice.is_active = False
            alice.save()
        elif spoil == "change-password":
            alice.set_password("new password")
            alice.save()
        elif spoil == "delete-user":
            alice.delete()
        else:
            from django.contrib.sessions.models import Session

            Session.objects.all().delete()

    await sync_to_async(apply)()
    with pytest.raises(AuthenticationRequired) as refusal:
        await authenticate(request_with(alice_headers))
    assert refusal.value.status == 401
    assert b"Cookie realm" in dict(refusal.value.headers)[b"www-authenticate"]


async def test_no_cookie_is_refused() -> None:
    with pytest.raises(AuthenticationRequired):
        await authenticate(request_with({}))


def credential_for(user: Any) -> Credential:
    return Credential(user=user, scheme="session", ambient=True)


CSRF_CASES = [
    ("token-matches", lambda h: h, {}, True),
    ("no-token", lambda h: {"Cookie": h["Cookie"]}, {}, False),
    ("token-mismatch", lambda h: {**h, "X-CSRFToken": "y" * 32}, {}, False),
    ("foreign-origin", lambda h: {**h, "Origin": "http://evil.example"}, {}, False),
    ("same-origin", lambda h: {**h, "Origin": "http://127.0.0.1:8000"}, {}, True),
    (
        "trusted-origin",
        lambda h: {**h, "Origin": "https://trusted.example"},
        {"CSRF_TRUSTED_ORIGINS": ["https://trusted.example"]},
        True,
    ),
]


@pytest.mark.parametrize(("headers", "settings", "passes"), [c[1:] for c in CSRF_CASES], ids=[c[0] for c in CSRF_CASES])
def test_csrf_rules_are_djangos(alice: Any, headers: Any, settings: dict[str, Any], passes: bool) -> None:
    request = request_with(headers(login_headers(alice)), method="POST")
    with override_settings(**settings):
        if passes:
            check_csrf(request, credential_for(alice))
        else:
            with pytest.raises(CsrfFailed):
                check_csrf(request, credential_for(alice))


def test_non_ambient_credentials_need_no_csrf_token(alice: Any) -> None:
    check_csrf(request_with({}, method="POST"), Credential(user=alice, scheme="bearer", ambient=False))


def test_a_remembered_csrf_verdict_covers_only_the_same_request(alice: Any) -> None:
    headers = {**login_headers(alice), "Origin": "https://trusted.example"}
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://trusted.example"]):
        check_csrf(request_with(headers, method="POST"), credential_for(alice))
        check_csrf(request_with(headers, method="POST"), credential_for(alice))  # remembered
        for changed in (
            {"Origin": "http://evil.example"},
            {"X-CSRFToken": "y" * 32},
            {"Cookie": headers["Cookie"].rsplit("=", 1)[0] + "=" + "z" * 32},
        ):
            with pytest.raises(CsrfFailed):
                check_csrf(request_with({**headers, **changed}, method="POST"), credential_for(alice))
    # The trusted origin is gone: the remembered verdict goes with the settings.
    with pytest.raises(CsrfFailed):
        check_csrf(request_with(headers, method="POST"), credential_for(alice))


def test_a_reused_login_builds_a_django_request_only_when_one_is_read(alice: Any) -> None:
    """A cached credential attaches its login session and user when the CSRF check reads them, and not before."""
    from mcp_gateway.auth import reuse

    headers = login_headers(alice)
    remembered = request_with(headers, method="POST")
    reuse(remembered, credential_for(alice))
    check_csrf(remembered, credential_for(alice))  # its verdict, now remembered
    again = request_with(headers, method="POST")
    reuse(again, credential_for(alice))
    check_csrf(again, credential_for(alice))
    assert "django_request" not in again.__dict__
    assert again.django_request.user == alice
    assert again.django_request.session.session_key == remembered.cookies["sessionid"]
    with override_settings(CSRF_USE_SESSIONS=True):  # no verdict is remembered: the session is read, and is there
        late = request_with({**headers, "X-CSRFToken": "x" * 32}, method="POST")
        reuse(late, credential_for(alice))
        with pytest.raises(CsrfFailed):
            check_csrf(late, credential_for(alice))
        assert late.django_request.session.session_key == remembered.cookies["sessionid"]
