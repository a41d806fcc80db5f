"""The Activity section: the user's own recent calls (tools called, resources read, prompts got), newest first.

From :meth:`CallRecord.objects.for_user <mcp_sessions.calls.CallRecordQuerySet.for_user>`, a page at a time
(Django's :class:`~django.core.paginator.Paginator`, ``?page=``). Each row says when, what, how it ended, how long
it took, with which credential (a token by name, a login: this browser's or another, an OAuth app) and in which
protocol era (a session's, or 2026-07-28's, which has none). Never the arguments, even those a site's hook keeps:
they are the admin's to see.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.core.paginator import Page, Paginator
from django.http import HttpRequest
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ..choices import CredentialKind
from ..models import CallRecord

# Calls per page: a screenful, enough to recognise one's own activity (the admin has the full record).
PER_PAGE = 20

WHAT = {"tools/call": _("Tool"), "resources/read": _("Resource"), "prompts/get": _("Prompt")}


class CallRow(NamedTuple):
    """One call as the section shows it."""

    record: CallRecord
    what: str | Promise
    credential: str
    era: str


def credential_of(record: CallRecord, login_hash: str) -> str:
    """The credential a call was made with, in words: the token by name, this browser's login, another login."""
    if record.credential_kind == CredentialKind.TOKEN:
        if record.token is not None:
            return str(_("Token “%(name)s”") % {"name": record.token.name})
        return str(_("A deleted token"))
    if record.credential_kind == CredentialKind.LOGIN:
        here = bool(record.credential_ref) and login_hash.startswith(record.credential_ref)
        return str(_("This browser") if here else _("Another login"))
    if record.client_id:
        return str(_("The app “%(client)s”") % {"client": record.client_id})
    return str(record.get_credential_kind_display())


def era_of(record: CallRecord) -> str:
    """The protocol era: a session's (handshake: initialize) or 2026-07-28's (a request of its own, no session)."""
    if record.session_ref:
        return str(_("Session %(ref)s") % {"ref": record.session_ref})
    return str(_("2026-07-28, no session"))


def activity_page(request: HttpRequest, login_hash: str) -> Page[CallRow]:
    """The page of the user's calls ``?page=`` asks for (the last one past the end, the first for nonsense)."""
    records = (
        CallRecord.objects.for_user(request.user)
        .select_related("token")
        .defer("arguments", "arguments_digest")
        .order_by("-created_at", "-pk")
    )
    page: Page[Any] = Paginator(records, PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = [
        CallRow(record, WHAT.get(record.method, record.method), credential_of(record, login_hash), era_of(record))
        for record in page.object_list
    ]
    return page
