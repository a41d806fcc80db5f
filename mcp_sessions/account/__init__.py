"""Your MCP access: the pages where every user sees and ends their own sessions and tokens, and sees their calls.

Mounted by the site with ``path("account/mcp/", include("mcp_sessions.urls"))``. Everything on them is the
logged-in user's own, looked up through the owner-scoped managers (``for_user``); what they change, the
managers do (``end_own``, ``end_others``, ``issue_own``, ``revoke_own``), as the admin's actions do, so an
ended session's stream closes at once on whichever worker runs it. The page is made of sections
(:mod:`mcp_sessions.account.sections`), each a template of its own.
"""
