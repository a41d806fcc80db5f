"""Who owns which MCP session: the ownership model, its admin and commands."""
