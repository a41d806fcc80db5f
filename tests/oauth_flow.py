"""Helpers driving the authorization server the way an MCP client does, with Django's test client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.test import Client as DjangoClient

# authlib refuses plain http but on loopback (RFC 8252): the test client speaks as 127.0.0.1.
HOST = "127.0.0.1"
ISSUER = f"http://{HOST}"
RESOURCE = f"http://{HOST}/mcp"
REDIRECT = "http://127.0.0.1:33418/callback"


def Client(**defaults: Any) -> DjangoClient:
    """Django's test client, on the loopback host."""
    return DjangoClient(HTTP_HOST=HOST, **defaults)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(client: DjangoClient, **metadata: Any) -> dict[str, Any]:
    body = {"client_name": "Test client", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    body.update(metadata)
    response = client.post("/oauth/register", body, content_type="application/json")
    assert response.status_code == 201, response.content
    result: dict[str, Any] = response.json()
    return result


@dataclass
class Authorization:
    client_id: str
    verifier: str
    state: str
    redirect_uri: str = REDIRECT
    resource: str = RESOURCE

    def params(self, **overrides: Any) -> dict[str, str]:
        _, challenge = pkce()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": self.state,
            "resource": self.resource,
            "scope": "mcp",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}


def start(client_id: str, **fields: Any) -> Authorization:
    verifier, _ = pkce()
    return Authorization(client_id=client_id, verifier=verifier, state=secrets.token_urlsafe(8), **fields)


def authorize_url(auth: Authorization, **overrides: Any) -> str:
    return "/oauth/authorize?" + urlencode(auth.params(**overrides))


def allow(browser: DjangoClient, auth: Authorization, *, remember: bool = False, **overrides: Any) -> Any:
    """GET the consent page as the logged-in ``browser``, then POST "Allow" with its CSRF token."""
    url = authorize_url(auth, **overrides)
    page = browser.get(url)
    assert page.status_code == 200, (page.status_code, page.content[:500])
    data = {"csrfmiddlewaretoken": page.context["csrf_token"], "decision": "allow"}
    if remember:
        data["remember"] = "1"
    return browser.post(url, data)


def callback_params(response: Any) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.content[:500])
    location = response["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(client: DjangoClient, auth: Authorization, issued_code: str, **overrides: Any) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": issued_code,
        "redirect_uri": auth.redirect_uri,
        "client_id": auth.client_id,
        "code_verifier": auth.verifier,
        "resource": auth.resource,
    }
    data.update(overrides)
    return client.post("/oauth/token", {k: v for k, v in data.items() if v is not None})


def refresh(client: DjangoClient, client_id: str, refresh_token: str, **overrides: Any) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    data.update(overrides)
    return client.post("/oauth/token", data)


def full_flow(
    browser: DjangoClient, client: DjangoClient, client_id: str, **fields: Any
) -> tuple[Authorization, dict[str, Any]]:
    """Authorize with "Allow" and exchange the code: the authorization and the token response."""
    auth = start(client_id, **fields)
    params = callback_params(allow(browser, auth))
    response = exchange(client, auth, params["code"])
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return auth, result
