"""Who may use which tool, resource, resource template and prompt: Django permissions on a mount's server.

A requirement is one or more permission names (``"app.codename"``: all of them are needed, as with
``PermissionRequiredMixin``) and/or callables ``(user) -> bool`` (sync or async). Attach one with the decorator,
under the SDK's own::

    from mcp_gateway.permissions import require

    @mcp.tool()
    @require("notes.view_note")
    async def list_notes() -> list[str]: ...

    @mcp.resource("notes://mine")
    @require(lambda user: user.is_staff)
    def my_notes() -> str: ...

or by name, for any server (a low-level ``Server`` has no function per tool)::

    protect(server, tools={"delete_note": "notes.delete_note"}, resource_templates={"notes://{pk}": is_owner})

Nothing without a requirement is restricted. What a user may not use is left out of ``tools/list``,
``resources/list``, ``resources/templates/list`` and ``prompts/list``, and a call, read or get of it answers
exactly as the server answers for a name it does not know (:mod:`mcp_gateway.gatekeeper`).

Permissions are Django's: ``user.has_perm`` with the site's authentication backends, so groups, superusers, inactive
users and object-permission backends behave as everywhere on the site. They are decided **per request**, on a copy
of the user read again from the database with each request that needs one (one thread hop: the user, then its
permissions, cached on that copy for the rest of the request), so a permission removed in the admin applies to the
next call of an open session. A sync callable runs in that same thread (it may query the database); an async one
is awaited on the event loop.
"""

from __future__ import annotations

import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from mcp.server.mcpserver import MCPServer
from mcp.shared.uri_template import UriTemplate

from .modern import sdk
from .permcache import permission_cache
from .worker import worker

Check = Callable[[Any], "bool | Awaitable[bool]"]
Rule = str | Sequence[str] | Check
F = TypeVar("F", bound=Callable[..., Any])

KINDS = ("tools", "resources", "resource_templates", "prompts")
_MARK = "__mcp_gateway_requirement__"
# Asked of a user when the thing requested has no requirement of its own: every call on a guarded mount costs the
# same permission lookup, so a name that exists but is refused cannot be told by its timing from one that does not.
_DECOY = "mcp_gateway.use_mcp"


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a user needs: every permission of ``perms`` and every check of ``checks`` true."""

    perms: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()


def requirement(*rules: Rule) -> Requirement:
    """A :class:`Requirement` from permission names, sequences of them and callables."""
    perms: list[str] = []
    checks: list[Check] = []
    for rule in rules:
        if isinstance(rule, str):
            perms.append(rule)
        elif callable(rule):
            checks.append(rule)
        else:
            nested = requirement(*rule)
            perms.extend(nested.perms)
            checks.extend(nested.checks)
    if not (perms or checks):
        raise ValueError("A requirement needs at least one permission or check")
    return Requirement(tuple(perms), tuple(checks))


def require(*rules: str | Check) -> Callable[[F], F]:
    """Decorator: only users with every permission (``"app.codename"``) and passing every check may use this.

    Goes *under* ``@mcp.tool()``, ``@mcp.resource(...)`` or ``@mcp.prompt()`` (it marks the function they register).
    """
    needed = requirement(*rules)

    def mark(fn: F) -> F:
        setattr(fn, _MARK, needed)
        return fn

    return mark


_protected: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Requirement]]] = weakref.WeakKeyDictionary()


def protect(
    server: Any,
    *,
    tools: Mapping[str, Rule] | None = None,
    resources: Mapping[str, Rule] | None = None,
    resource_templates: Mapping[str, Rule] | None = None,
    prompts: Mapping[str, Rule] | None = None,
) -> None:
    """Requirements by name for ``server`` (an ``MCPServer`` or a low-level ``Server``), added to earlier ones.

    Tools and prompts by name, resources by URI, templates by URI template (a URI matching it is covered).
    """
    given = {"tools": tools, "resources": resources, "resource_templates": resource_templates, "prompts": prompts}
    rules = _protected.setdefault(server, {kind: {} for kind in KINDS})
    for kind, mapping in given.items():
        for name, rule in (mapping or {}).items():
            rules[kind][name] = rule if isinstance(rule, Requirement) else requirement(rule)


@dataclass(frozen=True)
class Rules:
    """A mount's requirements: by kind, by name; templates in the order a URI is matched against them."""

    tools: Mapping[str, Requirement] = field(default_factory=dict)
    resources: Mapping[str, Requirement] = field(default_factory=dict)
    resource_templates: Mapping[str, Requirement] = field(default_factory=dict)
    prompts: Mapping[str, Requirement] = field(default_factory=dict)
    # Every template known, guarded or not, in matching order (an MCPServer's; a low-level server's guarded ones).
    template_order: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any((self.tools, self.resources, self.resource_templates, self.prompts))

    @cached_property
    def _matchers(self) -> list[tuple[str, UriTemplate]]:
        return [(template, UriTemplate.parse(template)) for template in self.template_order]

    def template_of(self, uri: str) -> str | None:
        """The template a URI is read through (none if it is a resource of its own, or matches no template)."""
        if uri in self.resources:
            return None
        for template, matcher in self._matchers:
            if matcher.match(uri) is not None:
                return template
        return None

    def of(self, kind: str, name: str) -> Requirement | None:
        """The requirement of a thing; a URI (kind ``resources``) falls back on the template it matches."""
        if kind == "resources" and name not in self.resources:
            template = self.template_of(name)
            return None if template is None else self.resource_templates.get(template)
        found: Requirement | None = getattr(self, kind).get(name)
        return found


def rules_for(server: Any) -> Rules:
    """The requirements declared for ``server``: its ``@require`` marks (an ``MCPServer``'s) and :func:`protect`."""
    found: dict[str, dict[str, Requirement]] = {kind: {} for kind in KINDS}
    order: list[str] = []
    if isinstance(server, MCPServer):
        for kind, entries in sdk.registered_functions(server).items():
            for name, fn in entries:
                needed = getattr(fn, _MARK, None)
                if isinstance(needed, Requirement):
                    found[kind][name] = needed
                if kind == "resource_templates":
                    order.append(name)
    for kind, mapping in _protected.get(server, {}).items():
        found[kind].update(mapping)
    order.extend(t for t in found["resource_templates"] if t not in order)
    return Rules(**found, template_order=tuple(order))


def declared_names(server: Any) -> dict[str, list[str]]:
    """The names ``server`` declares by kind: all an ``MCPServer`` registers, else those :func:`protect` names."""
    if isinstance(server, MCPServer):
        return {kind: [name for name, _ in entries] for kind, entries in sdk.registered_functions(server).items()}
    rules = _protected.get(server, {})
    return {kind: list(rules.get(kind, {})) for kind in KINDS}


def templates_matching(mount: Any, uri: str) -> list[str]:
    """The template of ``mount`` a URI is read through, as a list (empty when none)."""
    template = mount.rules.template_of(uri)
    return [] if template is None else [template]


Meets = Callable[[Requirement | None], Awaitable[bool]]


async def current_user(user: Any) -> Any | None:
    """``user`` as the database has it (None if gone): this worker's copy while unchanged, else read again.

    See :mod:`mcp_gateway.permcache`: a change to the user, their groups or permissions drops the copy from every
    worker; it is kept only while this worker hears of such changes (its inbox is in the revocation group).
    """
    pk: Any = getattr(user, "pk", None)
    if pk is None:
        return None
    cached = permission_cache.get(str(pk)) if permission_cache.enabled() else None
    if cached is not None:
        return cached
    epoch, read_at = permission_cache.epoch, time.monotonic()
    fresh = await get_user_model()._default_manager.filter(pk=pk).afirst()
    if fresh is not None and permission_cache.enabled() and await worker.revocations.joined():
        permission_cache.put(fresh, epoch=epoch, read_at=read_at)
    return fresh


async def decide(user: Any, requirements: Iterable[Requirement | None]) -> Meets:
    """For one request: a function telling whether ``user`` meets a requirement, each answer found once.

    Permissions are Django's ``ahas_perm`` on :func:`current_user` (``ModelBackend`` caches them on that object,
    so an unchanged user costs no query); a sync check runs in a thread (it may query), an async one is awaited.
    Every request asks at least one permission (:data:`_DECOY` when nothing it names has a requirement), so the
    time a request takes does not tell whether the name it used has one.
    """
    fresh = await current_user(user)
    answers: dict[Any, bool] = {}

    async def perm(name: str) -> bool:
        if name not in answers:
            answers[name] = fresh is not None and bool(await fresh.ahas_perm(name))
        return answers[name]

    async def check(fn: Check) -> bool:
        if id(fn) not in answers:
            result = await (fn(fresh) if inspect.iscoroutinefunction(fn) else sync_to_async(fn)(fresh))
            answers[id(fn)] = bool(result)
        return answers[id(fn)]

    wanted = [r for r in requirements if r is not None]
    if not any(r.perms for r in wanted):
        await perm(_DECOY)

    async def meets(needed: Requirement | None) -> bool:
        if needed is None:
            return True
        if fresh is None:
            return False
        for name in needed.perms:
            if not await perm(name):
                return False
        for fn in needed.checks:
            if not await check(fn):
                return False
        return True

    return meets


def usable(server: Any, user: Any) -> dict[str, list[str]]:
    """What ``user`` may use on ``server`` by kind, of the names it declares (for a page saying so); sync code only.

    The same decision as a request's, in the caller's thread (async checks run through ``async_to_sync``).
    """
    from asgiref.sync import async_to_sync

    rules = rules_for(server)
    names = declared_names(server)
    pk: Any = getattr(user, "pk", None)
    fresh = None if pk is None else get_user_model()._default_manager.filter(pk=pk).first()

    def meets(r: Requirement | None) -> bool:
        if r is None:
            return True
        if fresh is None or not all(fresh.has_perm(p) for p in r.perms):
            return False
        for check in r.checks:
            result = async_to_sync(check)(fresh) if inspect.iscoroutinefunction(check) else check(fresh)
            if not result:
                return False
        return True

    result: dict[str, list[str]] = {}
    for kind in KINDS:
        of = rules.resource_templates.get if kind == "resource_templates" else partial(rules.of, kind)
        result[kind] = [name for name in names[kind] if meets(of(name))]
    return result
