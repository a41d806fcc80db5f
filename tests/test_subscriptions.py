"""A listen stream's stored filter (mcp_sessions/subscriptions.py): bounded, cleaned, described in words."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_sessions.subscriptions import MAX_STORED_URIS, MAX_URI_LENGTH, describe_listen_filter, stored_filter


@pytest.mark.parametrize(
    ("wanted", "words"),
    [
        pytest.param({}, "nothing", id="nothing"),
        pytest.param({"tools": True, "prompts": True}, "tools, prompts", id="two-lists"),
        pytest.param({"resources": True}, "resource list", id="resource-list"),
        pytest.param({"uris": ["a://1"]}, "1 resource: a://1", id="one-resource"),
        pytest.param({"tools": True, "uris": ["a://1", "a://2"]}, "tools; 2 resources: a://1, a://2", id="both"),
    ],
)
def test_a_filter_in_words(wanted: dict[str, Any], words: str) -> None:
    arguments = {"tools": False, "prompts": False, "resources": False, "uris": (), **wanted}
    assert describe_listen_filter(stored_filter(**arguments)) == words


@pytest.mark.parametrize(
    "value", [pytest.param(None, id="a-session"), pytest.param("junk", id="not-a-mapping"), pytest.param([], id="list")]
)
def test_no_filter_has_no_words(value: Any) -> None:
    assert describe_listen_filter(value) == ""


def test_a_filter_with_many_long_uris_is_stored_bounded_and_says_how_many() -> None:
    uris = [f"notes://{i}/" + "x" * 2 * MAX_URI_LENGTH for i in range(3 * MAX_STORED_URIS)]
    stored = stored_filter(tools=False, prompts=False, resources=False, uris=uris)
    assert len(stored["resources"]) == MAX_STORED_URIS and stored["resource_count"] == len(uris)
    assert all(len(uri) == MAX_URI_LENGTH for uri in stored["resources"])
    assert f"(+{len(uris) - MAX_STORED_URIS} more)" in describe_listen_filter(stored)


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("notes://a\x00b", id="nul"),
        pytest.param("notes://a\u202eb", id="bidi-override"),
        pytest.param("notes://a\ud800b", id="lone-surrogate"),
        pytest.param("notes://a\r\nb", id="crlf"),
    ],
)
def test_a_uri_is_cleaned_before_it_is_stored(uri: str) -> None:
    assert stored_filter(tools=False, prompts=False, resources=False, uris=[uri])["resources"] == ["notes://ab"]
