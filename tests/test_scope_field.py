"""The field tokens are limited with (``mcp_sessions.scope_field``): free words in the admin, a choice on the page."""

from __future__ import annotations

from typing import Any

import pytest
from django import forms

from mcp_sessions.scope_field import ScopesField

OFFERED = ["mcp:tools", "mcp:tools:echo", "mcp:prompts:greet"]


@pytest.mark.parametrize(
    ("offered", "given", "expected"),
    [
        pytest.param(None, "", [], id="nothing-is-no-limit"),
        pytest.param(None, "echo\nmcp:prompts, echo", ["mcp:prompts", "mcp:tools:echo"], id="words-each-once"),
        pytest.param(None, "mcp:bogus", "invalid_scope", id="not-a-scope"),
        pytest.param(None, ["mcp:tools:echo"], ["mcp:tools:echo"], id="a-list"),
        pytest.param(OFFERED, ["mcp:tools:echo", "mcp:tools"], ["mcp:tools", "mcp:tools:echo"], id="offered"),
        pytest.param(OFFERED, ["echo"], ["mcp:tools:echo"], id="a-tool-by-its-name"),
        pytest.param(OFFERED, ["mcp:tools:other"], "not_offered", id="not-offered"),
        pytest.param(OFFERED, ["mcp"], "not_offered", id="everything-not-offered"),
        pytest.param(OFFERED, ["mcp:tools:echo", "mcp:\x00"], "invalid_scope", id="ill-formed-among-offered"),
    ],
)
def test_the_field_gives_the_tokens_scopes(offered: list[str] | None, given: Any, expected: Any) -> None:
    field = ScopesField(offered=offered, widget=forms.CheckboxSelectMultiple if offered else forms.Textarea)
    if isinstance(expected, str):
        with pytest.raises(forms.ValidationError) as raised:
            field.clean(given)
        assert raised.value.code == expected
    else:
        assert field.clean(given) == expected


def test_the_choices_are_the_offered_scopes_in_words() -> None:
    field = ScopesField(offered=OFFERED, widget=forms.CheckboxSelectMultiple)
    assert field.widget.choices == [  # type: ignore[attr-defined]
        ("mcp:tools", "All tools"),
        ("mcp:tools:echo", "The tool “echo”"),
        ("mcp:prompts:greet", "The prompt “greet”"),
    ]
