"""When a user's credentials stop holding (password changed, deactivated, deleted), so do their OAuth grants.

The model app announces it (:data:`mcp_sessions.signals.credentials_revoked`
with a ``user_pk``) after ending the user's sessions; the grants are revoked
here, so that no client goes on refreshing tokens obtained with the old login.
"""

from __future__ import annotations

from typing import Any

from mcp_sessions.signals import credentials_revoked


def revoke_grants_of_user(sender: Any, *, user_pk: str | None = None, **kwargs: Any) -> None:
    if user_pk is None:
        return
    from .models import Grant, RevokeReason

    Grant.objects.filter(user_id=user_pk).revoke(RevokeReason.USER_CREDENTIALS)


def connect() -> None:
    credentials_revoked.connect(revoke_grants_of_user, dispatch_uid="mcp_oauth.revoke_grants_of_user")
