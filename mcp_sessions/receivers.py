"""Receivers of Django's signals that end a user's live MCP sessions when their credentials stop holding.

- logging out ends the sessions opened with that login;
- a password change ends the sessions opened with a login cookie (as Django
  logs out the user's other logins); token-opened ones keep their token;
- stream tickets go with the credential that asked for them, the same way;
- deactivating or deleting a user ends all of their sessions;
- revoking a token ends the sessions opened with it; deleting one is announced too.

Each also announces the credential revoked (:data:`~mcp_sessions.signals.credentials_revoked`).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from .managers import announce_credentials_revoked
from .models import AccessToken
from .revocation import revoke, revoke_for_user, revoke_login


def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        revoke_login(session_key, user)


def remember_credential_state(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """Before a user is saved, note what the save changes (compared after it)."""
    update_fields = kwargs.get("update_fields")
    if raw or instance.pk is None or (update_fields is not None and not {"is_active", "password"} & set(update_fields)):
        return
    before = sender._default_manager.filter(pk=instance.pk).values("is_active", "password").first()
    if before is not None:
        instance._mcp_was_active = before["is_active"]
        instance._mcp_old_password = before["password"]


def end_sessions_after_user_change(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    if getattr(instance, "_mcp_was_active", False) and not instance.is_active:
        revoke_for_user(instance)
    elif getattr(instance, "_mcp_old_password", None) not in (None, instance.password):
        revoke_for_user(instance, cookie_only=True)
    instance.__dict__.pop("_mcp_was_active", None)
    instance.__dict__.pop("_mcp_old_password", None)


def end_sessions_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoke_for_user(instance)


def end_sessions_of_revoked_token(sender: Any, instance: AccessToken, raw: bool = False, **kwargs: Any) -> None:
    if not raw and instance.revoked_at is not None:
        announce_credentials_revoked(token_hashes=[instance.token_hash])
        revoke(instance.sessions.all())


def forget_deleted_token(sender: Any, instance: AccessToken, **kwargs: Any) -> None:
    announce_credentials_revoked(token_hashes=[instance.token_hash])


def connect() -> None:
    user_model = get_user_model()
    user_logged_out.connect(on_logout, dispatch_uid="mcp_sessions.on_logout")
    pre_save.connect(remember_credential_state, sender=user_model, dispatch_uid="mcp_sessions.user_pre_save")
    post_save.connect(end_sessions_after_user_change, sender=user_model, dispatch_uid="mcp_sessions.user_post_save")
    pre_delete.connect(end_sessions_of_deleted_user, sender=user_model, dispatch_uid="mcp_sessions.user_pre_delete")
    post_save.connect(end_sessions_of_revoked_token, sender=AccessToken, dispatch_uid="mcp_sessions.token_post_save")
    post_delete.connect(forget_deleted_token, sender=AccessToken, dispatch_uid="mcp_sessions.token_post_delete")
