# TEMPORARY re-export: the old home of the session runtime, for branches not merged yet; removed after the merge.
"""Moved: :mod:`mcp_gateway.sessions` (hosts, streams, pin), :mod:`mcp_gateway.worker`, :mod:`mcp_gateway.wire`."""

from __future__ import annotations

from .opening import open_session
from .sessions.host import SessionHost
from .sessions.streams import Outlet
from .wire import BUSY, Attach, OutletClosed, RemoteOutlet, receiver
from .worker import close_all, worker

attach = worker.attach
detach = worker.detach
send_to_session = worker.send_to_session
local_host = worker.local_host
local_host_by_id_hash = worker.local_host_by_id_hash
local_hosts = worker.local_hosts
register_outlet = worker.register_outlet
unregister_outlet = worker.unregister_outlet

__all__ = [
    "BUSY",
    "Attach",
    "Outlet",
    "OutletClosed",
    "RemoteOutlet",
    "SessionHost",
    "attach",
    "close_all",
    "detach",
    "local_host",
    "local_host_by_id_hash",
    "local_hosts",
    "open_session",
    "receiver",
    "register_outlet",
    "send_to_session",
    "unregister_outlet",
]
