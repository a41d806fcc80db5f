"""The session runtime: what one live MCP session is made of in the worker that runs it.

- :mod:`.host`: :class:`~.host.SessionHost`, the session's state and the task reading its inbox, made of
  :mod:`.delivery` (its messages dispatched, its server loop started or resumed) and :mod:`.closing`
  (how it ends, its record's close written or retried);
- :mod:`.streams`: which connection carries each of its streams, replay on resume;
- :mod:`.pin`: the credential pin that lets its owner's requests skip the database;
- :mod:`.actor`: the MCP server loop; :mod:`.parking`: an idle one stopped, its state kept;
  :mod:`.events`: numbered events and the replay buffer; :mod:`.mailbox`: the FIFOs sessions and connections wait on.

Nothing here imports the worker (:mod:`mcp_gateway.worker`) or a transport: a host
reaches its worker only through the :class:`~.host.Site` it was given.

How things end, one word each:

- a session **closes** (``close`` and wait, ``close_soon`` without waiting,
  ``_close_now`` doing it, ``wait_closed``, ``retry_close`` of its record,
  ``Worker.close_all``; the ``mcp.close`` message; a ``CloseReason``);
- a stream **ends**: the connection carrying it finishes its response
  (``Outlet.end``; the ``mcp.end`` message);
- a connection **detaches** from a session's streams when it goes away
  (``detach``; the ``mcp.detach`` message), the opposite of ``attach``;
- a task or a consumer **stops** (the transports' ``stop``).
"""
