"""Every private piece of the ``mcp`` SDK the gateway uses, imported here and nowhere else.

The 2026-07-28 single-exchange entry of mcp 2.3 (``mcp.server._streamable_http_modern``) is private: its
dispatch context and its ``Mcp-Param-*`` check are reused as they are rather than rewritten, which is why
``pyproject.toml`` bounds the SDK to ``mcp>=2.3,<2.4``. A new SDK minor release is adopted by checking
these names first.
"""

from __future__ import annotations

from typing import Any

from mcp.server._streamable_http_modern import (
    _is_notification_shaped as is_notification_shaped,
)
from mcp.server._streamable_http_modern import (
    _mcp_param_rejection as mcp_param_rejection,
)
from mcp.server._streamable_http_modern import (
    _SingleExchangeDispatchContext as SingleExchangeDispatchContext,
)
from mcp.server.lowlevel import Server
from mcp.server.runner import _has_modern_envelope as has_modern_envelope
from mcp.server.runner import modern_error_data

__all__ = [
    "SingleExchangeDispatchContext",
    "has_modern_envelope",
    "is_notification_shaped",
    "mcp_param_rejection",
    "modern_error_data",
    "own_request_handlers",
]


def own_request_handlers(server: Server[Any]) -> None:
    """Give a copied server a request-handler table of its own, so that replacing a handler leaves the original's.

    ``Server._request_handlers`` is private; ``add_request_handler`` is public but writes to the shared table.
    """
    server._request_handlers = dict(server._request_handlers)
