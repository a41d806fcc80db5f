"""The form field a token is limited with: tool names or scopes in, the token's scopes out.

One field for both forms that create tokens. The admin's add form types the words into a text area (tool names or
scopes, one per line or separated by commas), for any user and anything; Your MCP access ticks them among the
scopes offered to the user (:func:`~mcp_sessions.scoping.offered_scopes`), and a word outside them is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .scoping import describe_scope, token_scopes


def words(value: Any) -> list[str]:
    """The words given: a text area's, split on lines and commas, or a multiple choice's list; blanks dropped."""
    if not value:
        return []
    items = value.replace(",", "\n").splitlines() if isinstance(value, str) else [str(item) for item in value]
    return [word.strip() for word in items if word.strip()]


class ScopesField(forms.Field):
    """Tool names (``echo``) and scopes (``mcp:prompts:greet``) to the sorted scopes of a token (empty: no limit).

    With ``offered`` (a sequence of scopes) the field is a choice among them, each said in words, and any other
    word is refused; without it any well-formed scope is taken (:func:`~mcp_sessions.scoping.token_scopes`).
    """

    default_error_messages = {
        "invalid_scope": _("%(error)s"),
        "not_offered": _("You cannot limit a token to %(scopes)s."),
    }

    def __init__(self, *, offered: Sequence[str] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.offered = offered

    @property
    def offered(self) -> Sequence[str] | None:
        return self._offered

    @offered.setter
    def offered(self, scopes: Sequence[str] | None) -> None:
        self._offered = None if scopes is None else list(scopes)
        if scopes is not None:
            self.widget.choices = [(scope, describe_scope(scope)) for scope in scopes]

    def to_python(self, value: Any) -> list[str]:
        given = words(value)
        try:
            scopes = token_scopes(
                [w for w in given if not w.startswith("mcp")], [w for w in given if w.startswith("mcp")]
            )
        except ValueError as exc:
            raise forms.ValidationError(
                self.error_messages["invalid_scope"], code="invalid_scope", params={"error": str(exc)}
            ) from None
        if self._offered is not None:
            refused = [scope for scope in scopes if scope not in self._offered]
            if refused:
                raise forms.ValidationError(
                    self.error_messages["not_offered"], code="not_offered", params={"scopes": ", ".join(refused)}
                )
        return scopes

    def has_changed(self, initial: Any, data: Any) -> bool:
        return words(initial) != words(data)
