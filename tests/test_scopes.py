"""The scope vocabulary (mcp_gateway.scopes), scoped tokens (issue, command, admin), scopes_supported, usable()."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse
from mcp_types import JSONRPCRequest

from mcp_gateway import scopes
from mcp_gateway.exceptions import InsufficientScope
from mcp_gateway.mounts import Mount
from mcp_gateway.permissions import usable
from mcp_sessions.models import AccessToken
from mcp_sessions.scoping import offered_scopes, token_scopes

from .permission_servers import guarded, lowlevel


@pytest.mark.parametrize(
    ("granted", "kind", "names", "allowed"),
    [
        pytest.param(None, "tools", ["x"], True, id="unscoped-reaches-all"),
        pytest.param({"mcp"}, "prompts", ["p"], True, id="mcp-reaches-all"),
        pytest.param({"mcp:tools"}, "tools", ["x"], True, id="broad-kind"),
        pytest.param({"mcp:tools"}, "prompts", ["x"], False, id="broad-kind-not-another"),
        pytest.param({"mcp:tools:x"}, "tools", ["x"], True, id="one-tool"),
        pytest.param({"mcp:tools:x"}, "tools", ["y"], False, id="one-tool-not-another"),
        pytest.param({"mcp:prompts:x"}, "tools", ["x"], False, id="same-name-other-kind"),
        pytest.param({"mcp:resources:notes://{pk}"}, "resources", ["notes://3", "notes://{pk}"], True, id="template"),
        pytest.param(set(), "tools", ["x"], False, id="empty-set-reaches-nothing"),
    ],
)
def test_what_scopes_reach(granted: set[str] | None, kind: str, names: list[str], allowed: bool) -> None:
    assert scopes.allows(None if granted is None else frozenset(granted), kind, names) is allowed


@pytest.mark.parametrize(
    ("tools", "given", "expected"),
    [
        pytest.param(["b", "a"], [], ["mcp:tools:a", "mcp:tools:b"], id="tools-sorted"),
        pytest.param(["a"], ["mcp:tools:a", "mcp:prompts"], ["mcp:prompts", "mcp:tools:a"], id="each-once"),
        pytest.param([], ["mcp:tools:"], ValueError, id="empty-name"),
        pytest.param([], ["admin"], ValueError, id="not-a-scope"),
        pytest.param([], ["mcp:users:x"], ValueError, id="unknown-kind"),
    ],
)
def test_token_scopes_are_checked(tools: list[str], given: list[str], expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match="Not a scope"):
            token_scopes(tools, given)
    else:
        assert token_scopes(tools, given) == expected


def test_scopes_supported_names_every_tool_and_prompt() -> None:
    supported = scopes.scopes_supported(Mount("/mcp-perms/", guarded))
    assert supported[:4] == ["mcp", "mcp:tools", "mcp:resources", "mcp:prompts"]
    assert {"mcp:tools:notes", "mcp:tools:public", "mcp:prompts:summarize", "mcp:prompts:greet"} <= set(supported)
    low = scopes.scopes_supported(Mount("/mcp-perms-low/", lowlevel))
    assert "mcp:tools:staff_only" in low  # a low-level server's: the names protect() gives


def _call(name: str) -> JSONRPCRequest:
    return JSONRPCRequest(jsonrpc="2.0", id=1, method="tools/call", params={"name": name})


class _Grant:
    def __init__(self, granted: set[str] | None, step_up: bool) -> None:
        self.scopes = None if granted is None else frozenset(granted)
        self.step_up = step_up


@pytest.mark.parametrize(
    ("granted", "step_up", "name", "refused"),
    [
        pytest.param({"mcp:tools:a"}, True, "b", True, id="step-up-credential-refused"),
        pytest.param({"mcp:tools:a"}, True, "a", False, id="step-up-credential-granted"),
        pytest.param({"mcp:tools:a"}, False, "b", False, id="personal-token-hidden-not-refused"),
        pytest.param(None, True, "b", False, id="unscoped"),
    ],
)
def test_step_up(granted: set[str] | None, step_up: bool, name: str, refused: bool) -> None:
    mount = Mount("/mcp-perms/", guarded)
    if refused:
        with pytest.raises(InsufficientScope) as caught:
            scopes.step_up(_Grant(granted, step_up), _call(name), mount)
        challenge = dict(caught.value.headers)[b"www-authenticate"].decode()
        assert challenge == f'Bearer realm="mcp", error="insufficient_scope", scope="mcp:tools:{name}"'
        assert caught.value.status == 403
    else:
        scopes.step_up(_Grant(granted, step_up), _call(name), mount)


@pytest.mark.django_db
def test_create_mcp_token_limits_a_token(make_user: Any) -> None:
    make_user("alice")
    call_command("create_mcp_token", "alice", "--tool", "notes", "--scope", "mcp:prompts", stdout=StringIO())
    assert AccessToken.objects.get().scopes == ["mcp:prompts", "mcp:tools:notes"]
    with pytest.raises(CommandError, match="Not a scope: root"):
        call_command("create_mcp_token", "alice", "--scope", "root", stdout=StringIO())


@pytest.mark.django_db
def test_the_admin_add_form_limits_a_token(make_user: Any) -> None:
    client = Client()
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    form = {
        "user": root.pk,
        "name": "ci",
        "expires_at_0": "",
        "expires_at_1": "",
        "limit_to": "notes\nmcp:prompts, public",
    }
    response = client.post(reverse("admin:mcp_sessions_accesstoken_add"), form)
    assert re.search(r'id="mcp-token-secret"', response.content.decode())
    assert AccessToken.objects.get().scope_set == {"mcp:prompts", "mcp:tools:notes", "mcp:tools:public"}
    form["limit_to"] = "mcp:nothing:x"
    assert "Not a scope" in client.post(reverse("admin:mcp_sessions_accesstoken_add"), form).content.decode()


@pytest.mark.django_db
def test_usable_says_what_a_user_may_use(make_user: Any) -> None:
    plain, viewer = make_user("plain"), make_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_note"))
    assert usable(guarded, plain)["tools"] == ["public", "boom"]
    seen = usable(guarded, viewer)
    assert seen["tools"] == ["public", "notes", "boom"] and seen["resource_templates"] == ["notes://by-id/{pk}"]
    assert usable(lowlevel, plain)["tools"] == []  # the low-level server's guarded names only: none passes


@pytest.mark.django_db
def test_the_demo_home_page_says_what_the_user_may_call(make_user: Any) -> None:
    client = Client()
    client.force_login(make_user("staffer", is_staff=True))
    page = client.get("/").content.decode()
    assert "<code>note_stats</code>" in page and "<code>delete_note</code>" not in page.split("Staff may")[0]


@pytest.mark.parametrize(
    ("value", "errors"),
    [
        pytest.param(None, [], id="unset"),
        pytest.param("tests.permission_servers.keep_text", [], id="a-hook"),
        pytest.param("tests.permission_servers.nothing", ["mcp_gateway.E016"], id="missing"),
        pytest.param("tests.permission_servers.HEADER_SCHEMA", ["mcp_gateway.E016"], id="not-callable"),
    ],
)
def test_the_call_arguments_hook_is_checked(value: str | None, errors: list[str]) -> None:
    with override_settings(MCP_GATEWAY_CALL_ARGUMENTS=value):
        found = [m.id for m in run_checks(tags=["mcp_gateway"]) if m.id == "mcp_gateway.E016"]
    assert found == errors


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("server", "view_note", "offered", "not_offered"),
    [
        pytest.param(None, False, [], ["mcp:tools:public"], id="no-server"),
        pytest.param(
            "tests.permission_servers.guarded",
            False,
            ["mcp:tools:public", "mcp:resources:notes://public"],
            ["mcp:tools:notes", "mcp:resources:notes://by-id/{pk}", "mcp:tools:staff_only"],
            id="a-plain-user",
        ),
        pytest.param(
            "tests.permission_servers.guarded",
            True,
            ["mcp:tools:notes", "mcp:resources:notes://by-id/{pk}"],
            ["mcp:tools:staff_only"],
            id="a-user-with-the-permission",
        ),
    ],
)
def test_offered_names_what_the_user_may_use_on_the_default_mount(
    make_user: Any, server: str | None, view_note: bool, offered: list[str], not_offered: list[str]
) -> None:
    user = make_user("someone")
    if view_note:
        user.user_permissions.add(Permission.objects.get(codename="view_note"))
    with override_settings(MCP_GATEWAY_SERVER=server):
        found = scopes.offered(user)
        shown = offered_scopes(user)
    assert set(offered) <= set(found) and not set(not_offered) & set(found)
    assert shown[:3] == ["mcp:tools", "mcp:resources", "mcp:prompts"] and set(found) <= set(shown)
