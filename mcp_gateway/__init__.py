"""Serve MCP servers from a Django site over HTTP, every session bound to its user."""

__version__ = "0.1.0"
