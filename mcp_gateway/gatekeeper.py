"""The server middleware that enforces a mount's permissions and scopes, and records every call, read and get.

:func:`install` puts one :class:`Gatekeeper` in a server's ``middleware`` (the SDK's seam: it sees every request
with the gateway's :class:`~mcp_gateway.context.GatewayRequestContext` as ``ctx.request``), once per mount, for the
handshake-era sessions and the 2026-07-28 per-request server alike (:class:`~mcp_gateway.mounts.Mount`).

- **Lists** (``tools/list``, ``resources/list``, ``resources/templates/list``, ``prompts/list``) are served as the
  server answers them, then filtered to what the caller may use.
- **A call, read or get** (or a ``completion/complete`` naming a prompt or template) of something the caller may
  not use is answered *by the server itself* as a request for a name it does not know: the request reaches the
  server with the name replaced by a name no server has (:data:`HIDDEN_NAME`, :data:`HIDDEN_URI`), and the answer
  (result or error) has it replaced back. The client gets the very bytes an unknown name gets, from the same code
  path, in the same time (every call on a guarded mount asks the same questions,
  :func:`mcp_gateway.permissions.decide`).
- **Every** ``tools/call``, ``resources/read`` and ``prompts/get`` leaves one record (:mod:`mcp_sessions.calls`):
  ``ok``, ``tool_error`` (a result with ``isError``), ``refused`` (hidden here), ``failed`` (a JSON-RPC error).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pydantic_core
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.request_state import RequestStateBoundary
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from mcp_sessions import calls
from mcp_sessions.choices import CallOutcome

from . import scopes
from .context import GatewayRequestContext, get_request_context
from .permissions import Requirement, Rules, decide
from .request_state import GatewayRequestStateBoundary

# What a refused request is sent to the server as: names no server declares (per process, unguessable).
HIDDEN_NAME = f"mcp-gateway-hidden-{secrets.token_hex(8)}"
HIDDEN_URI = f"urn:mcp-gateway:hidden:{secrets.token_hex(8)}"

# List method: (kind of its things, the result's key, the key of each thing's name).
LISTS: Mapping[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "tools", "name"),
    "resources/list": ("resources", "resources", "uri"),
    "resources/templates/list": ("resource_templates", "resourceTemplates", "uriTemplate"),
    "prompts/list": ("prompts", "prompts", "name"),
}
# Method using one thing: (its kind, the params key naming it, the name a refused request is sent with).
USES: Mapping[str, tuple[str, str, str]] = {
    "tools/call": ("tools", "name", HIDDEN_NAME),
    "resources/read": ("resources", "uri", HIDDEN_URI),
    "prompts/get": ("prompts", "name", HIDDEN_NAME),
}

# completion/complete's ref type: (the kind it names, the ref's key naming it, the name a refused one is sent with).
COMPLETION_REFS: Mapping[Any, tuple[str | None, str, str]] = {
    "ref/prompt": ("prompts", "name", HIDDEN_NAME),
    "ref/resource": ("resource_templates", "uri", HIDDEN_URI),
}


def _unmask(value: Any, hidden: str, name: str) -> Any:
    """``value`` with every occurrence of ``hidden`` in its strings replaced by ``name``."""
    if isinstance(value, str):
        return value.replace(hidden, name)
    if isinstance(value, dict):
        return {key: _unmask(item, hidden, name) for key, item in value.items()}
    if isinstance(value, list):
        return [_unmask(item, hidden, name) for item in value]
    return value


def _wire(result: HandlerResult) -> Any:
    return result.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(result, BaseModel) else result


class Gatekeeper:
    """Server middleware: one mount's permissions and scopes, and its call records (see the module docstring)."""

    def __init__(self, mount: str, rules: Rules) -> None:
        self.mount = mount
        self.rules = rules

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        listing = LISTS.get(ctx.method)
        use = USES.get(ctx.method)
        if listing is None and use is None and ctx.method not in {"completion/complete", "subscriptions/listen"}:
            return await call_next(ctx)
        try:
            context = get_request_context(ctx)
        except LookupError:
            return await call_next(ctx)  # not through the gateway (an in-process test): nobody to decide for
        if ctx.method == "completion/complete":
            return await self._complete(ctx, call_next, context)
        if ctx.method == "subscriptions/listen":
            return await call_next(await self._listen(ctx, context))
        if listing is not None:
            return await self._list(ctx, call_next, context, *listing)
        assert use is not None
        return await self._use(ctx, call_next, context, *use)

    def _scope_names(self, kind: str, name: str) -> tuple[str, list[str]]:
        """The scope kind of a thing and the names its scopes may use (a URI also by its template)."""
        if kind == "resource_templates":
            return "resources", [name]
        if kind == "resources":
            template = self.rules.template_of(name)
            return kind, [name] if template is None else [name, template]
        return kind, [name]

    def _requirement(self, kind: str, name: str) -> Requirement | None:
        return self.rules.resource_templates.get(name) if kind == "resource_templates" else self.rules.of(kind, name)

    async def _allowed(self, context: GatewayRequestContext, kind: str, name: str) -> bool:
        """Whether the request's credential reaches the thing and its user meets its requirement."""
        scope_kind, scope_names = self._scope_names(kind, name)
        allowed = scopes.allows(context.scopes, scope_kind, scope_names)
        if self.rules:  # asked even when the scope refuses: the same questions, whatever the name
            needed = self._requirement(kind, name)
            meets = await decide(context.user, [needed])
            allowed = await meets(needed) and allowed
        return allowed

    async def _listen(self, ctx: Any, context: GatewayRequestContext) -> Any:
        """``subscriptions/listen``: subscribe only to the resources the caller may read.

        The others are dropped from the request, so the acknowledgement (the
        honoured subset) leaves them out, as for any URI the server will never
        announce, and no update of a resource the caller may not read reaches
        them; the list-changed kinds carry no names and stay as asked.
        """
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        wanted = params.get("notifications")
        if not isinstance(wanted, Mapping) or not isinstance(uris := wanted.get("resourceSubscriptions"), list):
            return ctx
        readable = [uri for uri in uris if isinstance(uri, str) and await self._allowed(context, "resources", uri)]
        if len(readable) == len(uris):
            return ctx
        return dataclasses.replace(
            ctx, params={**params, "notifications": {**wanted, "resourceSubscriptions": readable}}
        )

    async def _complete(self, ctx: Any, call_next: CallNext, context: GatewayRequestContext) -> HandlerResult:
        """``completion/complete`` names a prompt or a resource template: one the caller may not use is unknown."""
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        ref = params.get("ref")
        kind, key, hidden = COMPLETION_REFS.get(ref.get("type") if isinstance(ref, Mapping) else None, (None, "", ""))
        name = ref.get(key) if kind is not None and isinstance(ref, Mapping) else None
        if kind is None or not isinstance(name, str) or not isinstance(ref, Mapping):
            return await call_next(ctx)
        if kind == "resource_templates" and name not in self.rules.resource_templates:
            kind = "resources"  # a concrete resource's URI
        if await self._allowed(context, kind, name):
            return await call_next(ctx)
        ctx = dataclasses.replace(ctx, params={**params, "ref": {**ref, key: hidden}})
        try:
            return _unmask(_wire(await call_next(ctx)), hidden, name)  # type: ignore[no-any-return]
        except MCPError as exc:
            raise MCPError(exc.code, _unmask(exc.message, hidden, name), _unmask(exc.data, hidden, name)) from None
        except Exception as exc:
            exc.args = tuple(_unmask(arg, hidden, name) for arg in exc.args)
            raise

    async def _list(
        self, ctx: Any, call_next: CallNext, context: GatewayRequestContext, kind: str, key: str, name_key: str
    ) -> HandlerResult:
        result = await call_next(ctx)
        if not self.rules and context.scopes is None:
            return result
        wire = _wire(result)
        items = wire.get(key) if isinstance(wire, dict) else None
        if not isinstance(items, list):
            return result
        names = [item.get(name_key) if isinstance(item, dict) else None for item in items]
        needed = [self._requirement(kind, n) if isinstance(n, str) else None for n in names]
        meets = await decide(context.user, needed) if self.rules else None
        kept = []
        for item, name, requirement in zip(items, names, needed, strict=True):
            if not isinstance(name, str):
                kept.append(item)
                continue
            scope_kind, scope_names = self._scope_names(kind, name)
            if not scopes.allows(context.scopes, scope_kind, scope_names):
                continue
            if meets is None or await meets(requirement):
                kept.append(item)
        return {**wire, key: kept}

    async def _use(
        self, ctx: Any, call_next: CallNext, context: GatewayRequestContext, kind: str, field: str, hidden: str
    ) -> HandlerResult:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        name = params.get(field)
        if not isinstance(name, str):
            return await call_next(ctx)  # malformed: the server refuses it as it would anyway; no name to record
        arguments = params.get("arguments") if kind != "resources" else None
        allowed = await self._allowed(context, kind, name)
        if not allowed:
            ctx = dataclasses.replace(ctx, params={**params, field: hidden})
        started = time.perf_counter()
        outcome = CallOutcome.OK if allowed else CallOutcome.REFUSED
        error_code: int | None = None
        size = 0
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            error_code = exc.code
            outcome = outcome if not allowed else CallOutcome.FAILED
            if allowed:
                raise
            raise MCPError(exc.code, _unmask(exc.message, hidden, name), _unmask(exc.data, hidden, name)) from None
        except Exception as exc:
            outcome = outcome if not allowed else CallOutcome.FAILED
            if not allowed:
                exc.args = tuple(_unmask(arg, hidden, name) for arg in exc.args)
            raise
        else:
            wire = _wire(result)
            if not allowed:
                result = wire = _unmask(wire, hidden, name)
            elif kind == "tools" and isinstance(wire, dict) and wire.get("isError"):
                outcome = CallOutcome.TOOL_ERROR
            size = len(pydantic_core.to_json(wire))
            return result
        finally:
            calls.record(
                **context_fields(context),
                method=ctx.method,
                name=name,
                arguments=arguments if isinstance(arguments, dict) else {},
                outcome=outcome,
                error_code=error_code,
                duration=time.perf_counter() - started,
                result_size=size,
                server=self.mount,
                protocol_version=ctx.protocol_version,
                request_id=ctx.request_id,
            )


def context_fields(context: GatewayRequestContext) -> dict[str, Any]:
    """What a call record says of the caller, from the request's context."""
    return {
        "user": context.user,
        "credential_kind": context.credential_kind,
        "credential_ref": context.credential_ref,
        "token_id": context.token_id,
        "client_id": context.client_id,
        "session_ref": context.session_ref,
        "transport": context.transport,
    }


def install(server: Server[Any], gatekeeper: Gatekeeper) -> None:
    """Put ``gatekeeper`` in ``server.middleware`` (replacing an earlier one), ahead of any ``requestState`` boundary.

    Ahead: a refused request reaches the boundary under its hidden name, as a request for an unknown name would.
    """
    kept = [m for m in server.middleware if not isinstance(m, Gatekeeper)]
    boundary = next(
        (i for i, m in enumerate(kept) if isinstance(m, RequestStateBoundary | GatewayRequestStateBoundary)),
        len(kept),
    )
    server.middleware[:] = [*kept[:boundary], gatekeeper, *kept[boundary:]]


# The scopes of the request whose ``Mcp-Param-*`` headers the SDK is checking (see :func:`guard_schemas`).
_checking: contextvars.ContextVar[GatewayRequestContext | None] = contextvars.ContextVar(
    "mcp_gateway_schema_check", default=None
)


@contextlib.contextmanager
def checking_headers(context: GatewayRequestContext) -> Iterator[None]:
    """The SDK's ``Mcp-Param-*`` check runs for the request of ``context`` meanwhile (2026-07-28, pre-dispatch)."""
    token = _checking.set(context)
    try:
        yield
    finally:
        _checking.reset(token)


def guard_schemas(server: Server[Any], rules: Rules) -> None:
    """Have ``server``'s schema lookup (``get_tool_input_schema``) not tell a hidden tool from an unknown one.

    The SDK validates a 2026-07-28 ``tools/call``'s ``Mcp-Param-*`` headers against the tool's schema *before*
    any middleware, from this lookup (an ``MCPServer`` sets it): a hidden tool would be validated where an unknown
    one is not, and answer differently. So a tool with a requirement, or any tool for a scoped credential, is looked
    up as unknown (its headers unchecked, as for a lookup that fails; its arguments are still the server's to
    validate). A server without the lookup has its ``tools/list`` run, through the gatekeeper, which filters it.
    """
    lookup: Callable[[str], Any] | None = server.get_tool_input_schema
    if lookup is None:
        return

    def schema(name: str) -> Any:
        context = _checking.get()
        if name in rules.tools or (context is not None and context.scopes is not None):
            return None
        return lookup(name)

    server.get_tool_input_schema = schema
