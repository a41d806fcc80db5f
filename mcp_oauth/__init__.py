"""OAuth 2.1 for MCP clients, with the Django login as the identity: an optional app (``django-mcp-gateway[oauth]``).

The site is the authorization server of its own MCP mounts (:mod:`mcp_oauth.views`, protocol logic by authlib
in :mod:`mcp_oauth.server`); :class:`mcp_oauth.auth.OAuthTokenAuthenticator` makes the gateway accept the
tokens it issues. Everything is stored hashed; revoking a grant, a client or a user ends the sessions its
tokens opened, through :mod:`mcp_sessions.revocation`.
"""
