"""The worker's process-wide memberships: joined while it serves, left when it shuts down."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from asgiref.sync import sync_to_async
from redis import asyncio as aioredis

from mcp_gateway.wire import CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP
from mcp_sessions.models import AccessToken

from .clients import poll
from .test_modern import WHOAMI, WHOAMI_HEADERS, post

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_worker_leaves_its_groups_when_it_shuts_down(
    start_daphne: Any, http: httpx2.AsyncClient, redis_settings: dict[str, Any], alice: Any
) -> None:
    _, secret = await sync_to_async(AccessToken.objects.issue)(alice, "groups")
    config = redis_settings["CHANNEL_LAYERS"]["default"]["CONFIG"]
    prefix = f"{config['prefix']}-groups"  # the keys under it are this worker's alone
    layer = {**redis_settings["CHANNEL_LAYERS"]["default"], "CONFIG": {**config, "prefix": prefix}}
    overrides = {**redis_settings, "CHANNEL_LAYERS": {"default": layer}}
    server = start_daphne(overrides=overrides)
    bearer = {**WHOAMI_HEADERS, "Authorization": f"Bearer {secret}"}
    answer = await post(http, f"{server.url}/mcp-test/", WHOAMI, bearer)
    assert answer.status_code == 200  # a 2026-07-28 request: its credential cached, so the worker hears revocations
    groups = {f"{prefix}:group:{group}" for group in (CREDENTIALS_GROUP, LISTEN_EVENTS_GROUP)}
    redis = aioredis.from_url(config["hosts"][0]["address"])
    try:

        async def present() -> set[str]:
            return {key.decode() async for key in redis.scan_iter(match=f"{prefix}:group:*")}

        assert await poll(present, lambda keys: keys == groups) == groups
        server.stop()
        assert await poll(present, lambda keys: not keys) == set()
    finally:
        await redis.aclose()
