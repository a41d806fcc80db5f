"""The gateway's consumers, one module per transport.

- :mod:`~mcp_gateway.transports.base`: what every consumer shares, and the one
  place a refusal becomes a response (:func:`~mcp_gateway.transports.base.refuse`);
- :mod:`~mcp_gateway.transports.stream`: responses that carry a session's
  event stream (SSE writing, flow control, keep-alive);
- :mod:`~mcp_gateway.transports.sse`: HTTP+SSE (``GET <prefix>sse``,
  ``POST <prefix>messages/``);
- :mod:`~mcp_gateway.transports.streamable`: Streamable HTTP at ``<prefix>``;
- :mod:`~mcp_gateway.transports.tickets`: ``POST <prefix>tickets``.

Transports know HTTP and the session runtime's interface; the session runtime
never imports them.

Words for ending, on this side: a consumer *stops* (Channels' word: its
cleanup, however it ended); a stream *ends* (its response is finished: the
session ended it, or it is complete); a connection *leaves* a stream (it no
longer carries it, and tells the session so); a *refusal* is an answer
instead of the response asked for. Sessions *close*.
"""
