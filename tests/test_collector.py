"""The garbage collector's thresholds for a worker holding many sessions."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mcp_gateway.collector import THRESHOLDS, tune_collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_young_collections_come_far_apart_and_the_full_ones_as_cpython_decides(thresholds: None) -> None:
    tune_collector()
    assert gc.get_threshold() == THRESHOLDS
    assert THRESHOLDS[0] >= 10_000, "a new client's objects must die young, not be promoted by its own requests"
    assert THRESHOLDS[2] == 10, "CPython's own rule for full collections (a quarter more long-lived objects)"
