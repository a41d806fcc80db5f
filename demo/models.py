from typing import Any

from django.conf import settings
from django.db import models


class NoteQuerySet(models.QuerySet["Note"]):
    def for_user(self, user: Any) -> "NoteQuerySet":
        return self.filter(owner=user)


class Note(models.Model):
    """A private note: the demo's MCP tools only ever read their caller's."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notes")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = NoteQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at", "-pk")

    def __str__(self) -> str:
        return self.title
