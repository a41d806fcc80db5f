"""The choices of the OAuth models' fields, shared by the models and their managers."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class ClientKind(models.TextChoices):
    DYNAMIC = "dynamic", _("Dynamic registration (RFC 7591)")
    METADATA_DOCUMENT = "metadata_document", _("Client ID Metadata Document")


class RevokeReason(models.TextChoices):
    USER = "user", _("Withdrawn by the user")
    ADMIN = "admin", _("Revoked by an administrator")
    CLIENT = "client", _("Revoked by the client (RFC 7009)")
    REFRESH_REUSE = "refresh_reuse", _("A used refresh token was presented again")
    CODE_REUSE = "code_reuse", _("A used authorization code was presented again")
    CLIENT_DISABLED = "client_disabled", _("Client disabled")
    USER_CREDENTIALS = "user_credentials", _("The user's password changed, or the user was deactivated")
