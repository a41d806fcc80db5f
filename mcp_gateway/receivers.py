"""The gateway's receivers of the model app's signals.

:func:`close_revoked_sessions` turns :data:`mcp_sessions.signals.sessions_revoked`
into the worker inbox's ``mcp.close`` message: one per worker, on the channel
layer, which reaches the worker even from another process (the admin's).

:func:`forget_revoked_credentials` turns :data:`mcp_sessions.signals.credentials_revoked`
into ``mcp.forget_credentials``, forgotten in this process at once and sent to
the group every worker's inbox joins before it caches a credential
(:mod:`mcp_gateway.credcache`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from .conf import gateway_settings

if TYPE_CHECKING:
    # The wire and the auth import the models, which this must not at import time (see checks.E004).
    from .wire import CloseMessage, ForgetCredentialsMessage, ForgetPermissionsMessage

logger = logging.getLogger("mcp_gateway")


def close_revoked_sessions(sender: Any, *, by_worker: dict[str, list[int]], reason: str, **kwargs: Any) -> None:
    """Tell each worker running some of the revoked sessions to end them: one ``mcp.close`` message per worker.

    A message that cannot be delivered is not retried: the worker finds the
    records closed at its next sweep.
    """
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    for channel, pks in by_worker.items():
        message: CloseMessage = {"type": "mcp.close", "sessions": pks, "reason": reason}
        try:
            async_to_sync(layer.send)(channel, message)
        except ChannelFull:
            pass  # the worker finds the records closed at its next sweep
        except Exception:
            logger.exception("Could not reach a worker to close its MCP sessions; they close at its next sweep")


def forget_revoked_credentials(
    sender: Any,
    *,
    token_hashes: list[str],
    login_hashes: list[str],
    user_pk: str | None,
    keep_tokens: bool,
    **kwargs: Any,
) -> None:
    """Have every worker's cache of verified credentials drop these: this process's now, the others' by broadcast.

    A broadcast that cannot be delivered is not retried: the entries expire
    within ``CREDENTIAL_CACHE_TTL``.
    """
    from .auth import login_fingerprint, token_fingerprint
    from .credcache import credential_cache
    from .wire import CREDENTIALS_GROUP

    message: ForgetCredentialsMessage = {
        "type": "mcp.forget_credentials",
        "fingerprints": [token_fingerprint(h) for h in token_hashes] + [login_fingerprint(h) for h in login_hashes],
        "keep_tokens": keep_tokens,
    }
    if user_pk is not None:
        message["user"] = user_pk
    credential_cache.forget(message)
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(CREDENTIALS_GROUP, message)
    except Exception:
        logger.exception("Could not tell the workers of revoked credentials; their caches drop them within the TTL")


def forget_permissions(user_pk: str | None) -> None:
    """Have every worker drop a user's cached permissions (None: everyone's) once the transaction commits.

    This process's cache at once, the other workers' by broadcast; a broadcast that cannot be delivered is not
    retried: the entries expire within ``PERMISSION_CACHE_TTL`` (:mod:`mcp_gateway.permcache`).
    """
    transaction.on_commit(lambda: _forget_permissions_now(user_pk))


def _forget_permissions_now(user_pk: str | None) -> None:
    from .permcache import permission_cache
    from .wire import CREDENTIALS_GROUP

    permission_cache.forget(user_pk)
    layer = get_channel_layer(gateway_settings.CHANNEL_LAYER)
    if layer is None:
        return
    message: ForgetPermissionsMessage = {"type": "mcp.forget_permissions"}
    if user_pk is not None:
        message["user"] = user_pk
    try:
        async_to_sync(layer.group_send)(CREDENTIALS_GROUP, message)
    except Exception:
        logger.exception("Could not tell the workers of changed permissions; their caches drop them within the TTL")


def user_changed(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """A user saved or deleted: their permissions (is_active, is_superuser) may have changed."""
    if not raw:
        forget_permissions(str(instance.pk))


def everyone_changed(sender: Any, raw: bool = False, **kwargs: Any) -> None:
    """A group or a permission saved or deleted: anyone's permissions may have changed."""
    if not raw:
        forget_permissions(None)


def memberships_changed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    """A user's groups or permissions, or a group's permissions, changed (``m2m_changed``)."""
    if not action.startswith("post_"):
        return
    user_model = get_user_model()
    forget_permissions(str(instance.pk) if isinstance(instance, user_model) else None)


def connect_permission_signals() -> None:
    """Connect the receivers above to the user model's, groups' and permissions' signals (at app ready)."""
    from django.contrib.auth.models import Group, Permission

    user_model = get_user_model()
    for signal in (post_save, post_delete):
        signal.connect(user_changed, sender=user_model, dispatch_uid="mcp_gateway.permissions.user")
        for model in (Group, Permission):
            signal.connect(everyone_changed, sender=model, dispatch_uid=f"mcp_gateway.permissions.{model.__name__}")
    throughs = [Group.permissions.through]
    throughs += [
        getattr(user_model, name).through for name in ("groups", "user_permissions") if hasattr(user_model, name)
    ]
    for through in throughs:
        m2m_changed.connect(
            memberships_changed, sender=through, dispatch_uid=f"mcp_gateway.permissions.{through.__name__}"
        )
