"""What the launcher's Twisted requests need not do: parse a POST body's form fields nobody reads.

Twisted's :class:`twisted.web.http.Request` parses every POST with a body
and a ``Content-Type`` into ``request.args`` when the request has arrived:
it parses the media type through the standard library's ``email`` package
(about a tenth of the CPU time of a small MCP POST), and a form or
``multipart/form-data`` body is parsed in full into memory. daphne never
reads ``args``: it hands the application the raw body and the raw query
string. So a request of the launcher (``GatewayWebRequest`` in
:mod:`mcp_gateway.daphne`) turns that parsing off when it is made, with
Twisted's own switch (``parsePOSTFormSubmission``); what the application
receives is the same.
"""

from __future__ import annotations

from twisted.web import http


def skip_form_parsing(request: http.Request) -> None:
    """Have ``request`` keep its body as it came, unparsed (call it from the request's ``__init__``).

    The attribute is the one Twisted's ``Request(parsePOSTFormSubmission=False)`` sets; daphne's
    ``WebRequest`` constructs its base without passing it, so it is set after construction.
    """
    request._parsePOSTFormSubmission = False
