"""What a ``subscriptions/listen`` request asks for, as its record stores it (see :mod:`.listening`).

Split from :mod:`.listening`: the request's params as the SDK validates
them, the filter stored on the stream's record, and the fields of the
client's ``clientInfo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_types import SubscriptionsListenRequestParams
from pydantic import ValidationError

from mcp_sessions.subscriptions import stored_filter


def listen_params(
    params: Mapping[str, Any] | SubscriptionsListenRequestParams | None,
) -> SubscriptionsListenRequestParams | None:
    """The request's params as the SDK validates them, or None if they are not valid ones (the SDK refuses them)."""
    if isinstance(params, SubscriptionsListenRequestParams):
        return params
    try:
        return SubscriptionsListenRequestParams.model_validate(params or {}, by_name=False)
    except ValidationError:
        return None


def stored_filter_of(params: SubscriptionsListenRequestParams | None) -> dict[str, Any] | None:
    """The filter the record stores (:func:`~mcp_sessions.subscriptions.stored_filter`); None without params."""
    if params is None:
        return None
    wanted = params.notifications
    return stored_filter(
        tools=wanted.tools_list_changed is True,
        prompts=wanted.prompts_list_changed is True,
        resources=wanted.resources_list_changed is True,
        uris=wanted.resource_subscriptions or (),
    )


def client_field(client_info: Any, name: str) -> str:
    """The string ``name`` of ``clientInfo`` (a mapping or an ``Implementation``); empty if it is not one."""
    value = client_info.get(name) if isinstance(client_info, Mapping) else getattr(client_info, name, None)
    return value if isinstance(value, str) else ""
