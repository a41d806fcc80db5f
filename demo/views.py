from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from mcp_gateway.conf import gateway_settings
from mcp_gateway.permissions import usable

from .mcp_server import mcp
from .models import Note


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The signed-in user's notes and how to reach them over MCP."""
    sse_url = request.build_absolute_uri(gateway_settings.PREFIX + "sse")
    notes = Note.objects.for_user(request.user)
    may_use = usable(mcp, request.user)
    return render(request, "demo/home.html", {"notes": notes, "sse_url": sse_url, "may_use": may_use})
