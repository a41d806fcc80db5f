"""What the admin's pages of records share: the read-only base, and the user a row names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from .models import AuditEvent, CallRecord, ClientUsage

    # Generic in the type stubs only: Django's classes take no parameters at run time.
    RecordAdmin = admin.ModelAdmin[Any]
else:
    RecordAdmin = admin.ModelAdmin

# Lets long client text wrap anywhere in lists and records (admin.css says why).
ADMIN_CSS = {"all": ("mcp_sessions/admin.css",)}
# How much of a client's text a list shows; the record's page shows all of it.
LIST_TEXT_LENGTH = 40


def shortened(value: object) -> str:
    """``value`` as a list cell shows it: its first :data:`LIST_TEXT_LENGTH` characters."""
    return Truncator(str(value)).chars(LIST_TEXT_LENGTH)


class ReadOnlyAdmin(RecordAdmin):
    """Records the gateway writes: viewable, never added, edited or deleted by hand.

    (Deleting a live session's record would orphan its stream; old records age out with clear_mcp_sessions.)
    """

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def who(obj: AuditEvent | CallRecord | ClientUsage) -> str:
    """The username a row was written with; marked when that user has been deleted since."""
    try:
        user = obj.user
    except ObjectDoesNotExist:  # deleted while the row was being written: the column has no constraint
        user = None
    if user is None:
        return str(_("%(username)s (deleted)") % {"username": obj.username}) if obj.username else "—"
    return obj.username or str(user)
