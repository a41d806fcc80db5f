"""The event buffer: numbering, replay after an ID, and saying so when events are gone."""

from __future__ import annotations

import pytest

from mcp_gateway.events import MAIN_STREAM, EventBuffer, EventId, EventsLost, UnknownEvent

REF = "0123456789ab"


def filled(size: int = 4) -> EventBuffer:
    buffer = EventBuffer(REF, size)
    request = buffer.new_stream()
    buffer.append(MAIN_STREAM, "endpoint", "/messages/")  # 0.1
    buffer.append(request, "message", "progress")  # 1.1
    buffer.append(MAIN_STREAM, "message", "a")  # 0.2
    buffer.append(request, "message", "result", final=True)  # 1.2
    return buffer


def test_ids_name_the_session_stream_and_position() -> None:
    buffer = filled()
    assert [e.id for e in buffer.after(EventId(REF, MAIN_STREAM, 0))] == [f"{REF}.0.1", f"{REF}.0.2"]
    assert EventId.parse(f"{REF}.1.2") == EventId(REF, 1, 2)
    assert str(EventId(REF, 1, 2)) == f"{REF}.1.2"


@pytest.mark.parametrize(
    "raw", ["", "abc", f"{REF}.0", f"{REF}.-1.2", f"{REF.upper()}.0.1", f"{REF}.0.1.2", f"x{REF}.0.1"]
)
def test_foreign_shapes_are_not_event_ids(raw: str) -> None:
    assert EventId.parse(raw) is None


REPLAYS = [
    ("main-after-first", EventId(REF, 0, 1), ["a"]),
    ("main-up-to-date", EventId(REF, 0, 2), []),
    ("request-after-progress", EventId(REF, 1, 1), ["result"]),
]


@pytest.mark.parametrize(("last", "data"), [c[1:] for c in REPLAYS], ids=[c[0] for c in REPLAYS])
def test_replay_is_what_followed_on_that_stream_only(last: EventId, data: list[str]) -> None:
    assert [e.data for e in filled().after(last)] == data


FAILURES = [
    ("other-session", EventId("f" * 12, 0, 1), UnknownEvent),
    ("future-event", EventId(REF, 0, 9), UnknownEvent),
    ("stream-never-opened", EventId(REF, 7, 1), UnknownEvent),
]


@pytest.mark.parametrize(("last", "error"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_ids_this_session_never_sent_are_refused(last: EventId, error: type[Exception]) -> None:
    with pytest.raises(error):
        filled().after(last)


def test_a_gap_beyond_the_buffer_is_reported_not_skipped() -> None:
    buffer = filled(size=4)
    for n in range(3):
        buffer.append(MAIN_STREAM, "message", f"later {n}")  # evicts 0.1, 1.1 and 0.2
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, MAIN_STREAM, 1))
    assert [e.data for e in buffer.after(EventId(REF, MAIN_STREAM, 3))] == ["later 1", "later 2"]
    buffer.append(MAIN_STREAM, "message", "evicts the final answer")
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, 1, 1))


def test_an_event_not_kept_is_numbered_and_resuming_from_it_replays_what_followed() -> None:
    buffer = EventBuffer(REF, 4)
    endpoint = buffer.append(MAIN_STREAM, "endpoint", "/messages/", keep=False)
    assert endpoint.id == f"{REF}.0.1"
    assert buffer.after(EventId(REF, MAIN_STREAM, 1)) == []
    buffer.append(MAIN_STREAM, "message", "a")
    assert [e.data for e in buffer.after(EventId(REF, MAIN_STREAM, 1))] == ["a"]
    with pytest.raises(EventsLost):  # from before it: it cannot be replayed
        buffer.after(EventId(REF, MAIN_STREAM, 0))
