"""The event buffer: numbering, replay after an ID, bounds in count and bytes, and saying so when events are gone."""

from __future__ import annotations

import sys

import pytest

from mcp_gateway.sessions.events import MAIN_STREAM, EventBuffer, EventId, EventsLost, UnknownEvent

REF = "0123456789ab"
KiB = 1024
ROOMY = 1024 * KiB


def filled(size: int = 4) -> EventBuffer:
    buffer = EventBuffer(REF, size, max_bytes=ROOMY)
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
    buffer = EventBuffer(REF, 4, max_bytes=ROOMY)
    endpoint = buffer.append(MAIN_STREAM, "endpoint", "/messages/", keep=False)
    assert endpoint.id == f"{REF}.0.1"
    assert buffer.after(EventId(REF, MAIN_STREAM, 1)) == []
    buffer.append(MAIN_STREAM, "message", "a")
    assert [e.data for e in buffer.after(EventId(REF, MAIN_STREAM, 1))] == ["a"]
    with pytest.raises(EventsLost):  # from before it: it cannot be replayed
        buffer.after(EventId(REF, MAIN_STREAM, 0))


def cost(data: str) -> int:
    return sys.getsizeof(data)


def test_the_byte_budget_drops_the_oldest_events_first_and_a_resume_that_needs_one_is_told() -> None:
    budget = 10 * KiB
    buffer = EventBuffer(REF, 100, max_bytes=budget)
    for n in range(10):
        buffer.append(MAIN_STREAM, "message", f"{n}" * (3 * KiB))  # 0.1 .. 0.10, 3 KiB each: three fit
        assert buffer.nbytes <= budget
    assert buffer.nbytes == 3 * cost("x" * (3 * KiB))
    assert [e.seq for e in buffer.after(EventId(REF, MAIN_STREAM, 7))] == [8, 9, 10]
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, MAIN_STREAM, 6))  # 0.7 was dropped


def test_a_final_event_dropped_for_bytes_makes_its_finished_stream_lost() -> None:
    buffer = EventBuffer(REF, 100, max_bytes=10 * KiB)
    request = buffer.new_stream()
    buffer.append(request, "message", "progress")
    buffer.append(request, "message", "r" * (4 * KiB), final=True)
    assert [e.seq for e in buffer.after(EventId(REF, request, 1))] == [2]
    buffer.append(MAIN_STREAM, "message", "m" * (4 * KiB))
    buffer.append(MAIN_STREAM, "message", "m" * (4 * KiB))  # over the budget: the request's events go
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, request, 1))


def test_an_event_larger_than_the_budget_is_numbered_and_delivered_but_not_kept() -> None:
    buffer = EventBuffer(REF, 100, max_bytes=10 * KiB)
    buffer.append(MAIN_STREAM, "message", "small")
    huge = buffer.append(MAIN_STREAM, "message", "h" * (20 * KiB))
    assert (huge.id, len(huge.data)) == (f"{REF}.0.2", 20 * KiB)
    assert buffer.nbytes == cost("small")
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, MAIN_STREAM, 1))  # the one after 0.1 is not there
    buffer.append(MAIN_STREAM, "message", "next")
    assert [e.data for e in buffer.after(EventId(REF, MAIN_STREAM, 2))] == ["next"]
    request = buffer.new_stream()
    buffer.append(request, "message", "progress")
    buffer.append(request, "message", "h" * (20 * KiB), final=True)
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, request, 1))


def test_a_reply_that_is_the_first_event_of_its_stream_is_not_kept() -> None:
    """It goes out as a plain JSON response, which names no event: nobody can resume from before it."""
    buffer = EventBuffer(REF, 100, max_bytes=ROOMY)
    for _ in range(200):
        request = buffer.new_stream()
        reply = buffer.append(request, "message", "r" * KiB, final=True)
        assert reply.seq == 1
    assert buffer.nbytes == 0
    with pytest.raises(EventsLost):
        buffer.after(EventId(REF, request, 0))
    # A request that sent something before its reply keeps both: its stream can be resumed.
    chatty = buffer.new_stream()
    buffer.append(chatty, "message", "progress")
    buffer.append(chatty, "message", "reply", final=True)
    assert [e.data for e in buffer.after(EventId(REF, chatty, 1))] == ["reply"]


def test_an_events_cost_is_the_memory_its_data_takes() -> None:
    """Non-ASCII text takes up to four bytes a character in memory: it counts as such, not as its length."""
    budget = 10 * KiB
    buffer = EventBuffer(REF, 100, max_bytes=budget)
    emoji = "\N{GRINNING FACE}" * (2 * KiB)  # 2 Ki characters, 8 KiB in memory
    buffer.append(MAIN_STREAM, "message", emoji)
    assert buffer.nbytes == cost(emoji) > 8 * KiB
    buffer.append(MAIN_STREAM, "message", emoji)  # the first one goes
    assert buffer.nbytes == cost(emoji)
