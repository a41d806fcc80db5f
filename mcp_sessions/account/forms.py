"""The form a user creates a token of their own with: a name, how long it lasts, and what it is limited to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy

from ..scope_field import ScopesField
from ..scoping import offered_scopes
from ..text import clean_text

# The lifetimes offered, in days; None: the token never expires (revoke it by hand).
LIFETIMES: tuple[int | None, ...] = (7, 30, 90, 365, None)
DEFAULT_LIFETIME = 90


def _lifetime_label(days: int | None) -> Any:
    """The choice's label, translated when shown (in the visitor's language), not when this module is imported."""
    if days is None:
        return _("No expiry")
    return ngettext_lazy("%(days)d day", "%(days)d days", "days") % {"days": days}


class NewTokenForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("Where you will use it, e.g. “laptop, Claude Desktop”: only you see it, to tell tokens apart."),
    )
    expires = forms.TypedChoiceField(
        label=_("Expires after"),
        choices=[("" if days is None else str(days), _lifetime_label(days)) for days in LIFETIMES],
        coerce=int,
        empty_value=None,
        required=False,
        initial=str(DEFAULT_LIFETIME),
        help_text=_("A token that expires ends by itself if it is forgotten; you can revoke it sooner."),
    )
    limit_to = ScopesField(
        label=_("Limit to"),
        widget=forms.CheckboxSelectMultiple,
        help_text=_(
            "Tick what the token may reach, among what you may use; none: all you may use. A limited token "
            "stops at both its limit and your permissions."
        ),
    )

    def __init__(self, data: Any = None, *, user: Any) -> None:
        """The form for ``user``: ``limit_to`` offers what ``user`` may use (:func:`offered_scopes`), nothing else."""
        super().__init__(data)
        cast(ScopesField, self.fields["limit_to"]).offered = offered_scopes(user)

    def clean_name(self) -> str:
        """The name as the token record stores it (no control or format characters), and not left empty by that."""
        name = clean_text(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError(_("Give the token a name."), code="required")
        return name

    @property
    def expires_in(self) -> timedelta | None:
        days = self.cleaned_data.get("expires")
        return None if days is None else timedelta(days=days)
