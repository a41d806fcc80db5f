"""The worker's cache of users for permission decisions (mcp_gateway.permcache) and what clears it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.checks import run_checks
from django.test import override_settings

from mcp_gateway.permcache import permission_cache


class _User:
    def __init__(self, pk: int) -> None:
        self.pk = pk


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    permission_cache.clear()
    yield
    permission_cache.clear()


def test_an_entry_is_served_within_its_ttl_only() -> None:
    user = _User(1)
    assert permission_cache.put(user, epoch=permission_cache.epoch, read_at=time.monotonic())
    assert permission_cache.get("1") is user
    permission_cache.put(user, epoch=permission_cache.epoch, read_at=time.monotonic() - 3600)
    assert permission_cache.get("1") is None and len(permission_cache) == 0


def test_a_read_that_raced_a_change_is_not_kept() -> None:
    epoch = permission_cache.epoch
    permission_cache.forget("2")  # a change committed while the user was being read
    assert not permission_cache.put(_User(1), epoch=epoch, read_at=time.monotonic())


@override_settings(MCP_GATEWAY_CREDENTIAL_CACHE_SIZE=2)
def test_the_least_recently_used_goes_first() -> None:
    for pk in (1, 2):
        permission_cache.put(_User(pk), epoch=permission_cache.epoch, read_at=time.monotonic())
    permission_cache.get("1")
    permission_cache.put(_User(3), epoch=permission_cache.epoch, read_at=time.monotonic())
    assert permission_cache.get("2") is None and permission_cache.get("1") is not None


@override_settings(MCP_GATEWAY_PERMISSION_CACHE_TTL=0)
def test_ttl_zero_turns_it_off() -> None:
    assert not permission_cache.enabled()
    assert not permission_cache.put(_User(1), epoch=permission_cache.epoch, read_at=time.monotonic())


def _cache(*pks: int) -> None:
    for pk in pks:
        permission_cache.put(_User(pk), epoch=permission_cache.epoch, read_at=time.monotonic())


def _cached(*pks: int) -> set[str]:
    return {str(pk) for pk in pks if permission_cache.get(str(pk)) is not None}


# (what changes, which cached users are forgotten: "one" the changed user, "all" everyone)
CHANGES: list[Any] = [
    pytest.param(lambda u, g, p: u.user_permissions.add(p), "one", id="user-permission-added"),
    pytest.param(lambda u, g, p: u.user_permissions.clear(), "one", id="user-permissions-cleared"),
    pytest.param(lambda u, g, p: u.groups.remove(g), "one", id="user-left-a-group"),
    pytest.param(lambda u, g, p: g.user_set.remove(u), "all", id="group-lost-a-member-from-its-side"),
    pytest.param(lambda u, g, p: g.permissions.remove(p), "all", id="group-lost-a-permission"),
    pytest.param(lambda u, g, p: g.delete(), "all", id="group-deleted"),
    pytest.param(lambda u, g, p: u.save(), "one", id="user-saved"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("change", "forgotten"), CHANGES)
def test_a_change_clears_the_cache(make_user: Any, change: Callable[..., Any], forgotten: str) -> None:
    user, other = make_user("alice"), make_user("bob")
    group = Group.objects.create(name="g")
    permission = Permission.objects.get(codename="view_note")
    group.permissions.add(permission)
    user.groups.add(group)
    permission_cache.clear()
    _cache(user.pk, other.pk)
    change(user, group, permission)
    expected = set() if forgotten == "all" else {str(other.pk)}
    assert _cached(user.pk, other.pk) == expected


@pytest.mark.parametrize(
    ("value", "errors"),
    [pytest.param(None, [], id="unset"), pytest.param(0, [], id="zero"), pytest.param(-1, ["E017"], id="negative")],
)
def test_the_ttl_is_checked(value: Any, errors: list[str]) -> None:
    with override_settings(MCP_GATEWAY_PERMISSION_CACHE_TTL=value):
        found = [m.id.split(".")[1] for m in run_checks(tags=["mcp_gateway"]) if m.id == "mcp_gateway.E017"]
    assert found == errors
