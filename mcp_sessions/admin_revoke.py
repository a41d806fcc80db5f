"""A "Revoke" button on an object's admin page: the changelist's revoke action, applied to that one object.

The button (an object tool, ``change_form_object_tools.html``) links to
``<pk>/revoke/``, which asks for confirmation; the confirmation POSTs back
there, with Django's CSRF check (``admin_view``), and the view then runs the
very action the changelist runs, on a queryset of that one object. So the
permission is the action's (:meth:`~django.contrib.admin.ModelAdmin.get_actions`
offers it only to whom its ``permissions`` allow), the manager path and the
audit rows are the action's, and a GET never revokes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _

if TYPE_CHECKING:
    from django.contrib import admin
    from django.db.models import QuerySet

    Base = admin.ModelAdmin[Any]  # for the type checker: the mixin comes before a ModelAdmin in its bases
else:
    Base = object


class RevokeButtonMixin(Base):
    """Give a model admin's change page a "Revoke" button that runs :attr:`revoke_action` on that object."""

    # The name of the changelist action that revokes: run on the confirmation's POST, with a queryset of one.
    revoke_action: str = ""

    def revocable(self, obj: Any) -> bool:
        """Whether ``obj`` still has something to revoke (the button is hidden otherwise)."""
        raise NotImplementedError

    def revoke_confirmation(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse:
        """The page asking whether to revoke ``queryset``; its form POSTs ``post=yes`` back to where it was served."""
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        revoke = path(
            "<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view), name="{}_{}_revoke".format(*info)
        )
        return [revoke, *super().get_urls()]

    def revoke_url(self, request: HttpRequest, obj: Any) -> str | None:
        """Where the button leads, or None when it is not shown: nothing to revoke, or not the visitor's to revoke."""
        if not self.revocable(obj) or not self._may_revoke(request):
            return None
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_revoke", args=[obj.pk])

    def _may_revoke(self, request: HttpRequest) -> bool:
        """The changelist's rule: whoever may see the changelist and is offered the action there."""
        return bool(self.has_view_or_change_permission(request) and self.revoke_action in self.get_actions(request))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["revoke_url"] = self.revoke_url(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Confirm (GET), then revoke (the confirmation's POST) one object, through the changelist's action."""
        if not self._may_revoke(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(_("No such %(name)s.") % {"name": self.opts.verbose_name})
        change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
        if not self.revocable(obj):
            self.message_user(request, _("%(object)s has nothing left to revoke.") % {"object": obj})
            return HttpResponseRedirect(change_url)
        queryset = self.get_queryset(request).filter(pk=obj.pk)
        if request.method != "POST" or request.POST.get("post") != "yes":
            return self.revoke_confirmation(request, queryset)
        # The action's own method (the permission was checked above): get_action's result changed shape in 6.1.
        getattr(self, self.revoke_action)(request, queryset)
        return HttpResponseRedirect(change_url)
