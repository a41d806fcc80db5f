"""The sections of the "Your MCP access" page: each one a template and what it shows the user asking.

:data:`SECTIONS` is the page's table of contents, in order; the page renders each section's template with
the context its function returns for the request (as ``data``, next to ``section``). Another app adds a section
of its own with :func:`register_section`, from its ``AppConfig.ready`` (``mcp_oauth`` adds "Connected apps"), so
that this app never imports it: the section is on the page only where that app is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.http import HttpRequest
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from mcp_gateway.conf import gateway_settings

from ..models import AccessToken, McpSession
from ..revocation import login_session_hash
from ..scoping import describe_scope
from .activity import activity_page

# Recently ended sessions shown under the open ones: enough to see what was just ended, not a history.
RECENTLY_ENDED = 10


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor (``id``), heading, template, and the context it renders with."""

    slug: str
    title: str | Promise
    template: str
    context: Callable[[HttpRequest], dict[str, Any]]
    shown: Callable[[], bool] = lambda: True


class SessionRow(NamedTuple):
    """An open session, and whether this browser's login opened it (the page's "this browser" marker)."""

    session: McpSession
    this_browser: bool


def current_login_hash(request: HttpRequest) -> str:
    """The login hash of this browser's session, as the gateway stores it on the sessions the login opens."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    return login_session_hash(session_key) if session_key else ""


def sessions_context(request: HttpRequest) -> dict[str, Any]:
    """The user's open sessions (of every transport: listen streams too), and the last few ended ones."""
    mine = McpSession.objects.for_user(request.user).select_related("token")
    here = current_login_hash(request)
    open_sessions = [
        SessionRow(session, bool(here) and session.login_session_hash == here)
        for session in mine.open().order_by("-last_seen_at", "-pk")
    ]
    return {
        "open_sessions": open_sessions,
        "others": sum(not row.this_browser for row in open_sessions),
        "ended_sessions": mine.closed().order_by("-closed_at", "-pk")[:RECENTLY_ENDED],
    }


class TokenRow(NamedTuple):
    """A token, and what it is limited to, in words (empty: all its user may use)."""

    token: AccessToken
    limits: list[str]


def limits_of(token: AccessToken) -> list[str]:
    """What ``token`` is limited to, each scope in words; empty when it is not limited."""
    return [describe_scope(scope) for scope in token.scopes or ()]


def tokens_context(request: HttpRequest) -> dict[str, Any]:
    """The user's tokens, newest first, whatever their state (a revoked one stays as a record), with their limits."""
    tokens = AccessToken.objects.for_user(request.user).order_by("-created_at", "-pk")
    return {"tokens": [TokenRow(token, limits_of(token)) for token in tokens]}


def activity_context(request: HttpRequest) -> dict[str, Any]:
    """A page of the user's own calls, newest first (:mod:`mcp_sessions.account.activity`)."""
    return {"calls": activity_page(request, current_login_hash(request))}


SECTIONS: tuple[Section, ...] = (
    Section("sessions", _("Sessions"), "mcp_sessions/account/sessions.html", sessions_context),
    Section("tokens", _("Personal access tokens"), "mcp_sessions/account/tokens.html", tokens_context),
    # Without stored call records (MCP_GATEWAY_CALL_RECORDS off, the signal only) there is no activity to show.
    Section(
        "activity",
        _("Activity"),
        "mcp_sessions/account/activity.html",
        activity_context,
        shown=lambda: bool(gateway_settings.CALL_RECORDS),
    ),
)


# The sections other apps registered, after the built-in ones, in the order they registered.
_registered: dict[str, Section] = {}


def register_section(section: Section) -> None:
    """Add ``section`` to the page, after the built-in ones; registering its slug again replaces it (not twice)."""
    if any(builtin.slug == section.slug for builtin in SECTIONS):
        raise ValueError(f"The page has a section {section.slug!r} of its own")
    _registered[section.slug] = section


def all_sections() -> tuple[Section, ...]:
    """Every section, built-in then registered, whether shown or not."""
    return (*SECTIONS, *_registered.values())


def render_sections(request: HttpRequest) -> list[tuple[Section, dict[str, Any]]]:
    """Each section shown, with its context for ``request``, in page order."""
    return [(section, section.context(request)) for section in all_sections() if section.shown()]
