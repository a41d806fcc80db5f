"""The session runtime: what one live MCP session is made of in the worker that runs it."""
