"""A small site showing mcp_gateway: login, per-user notes, and an MCP server over them."""
