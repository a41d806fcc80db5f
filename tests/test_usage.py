"""Client usage: each worker counts in memory, saves in batches that add up, and stays bounded and clean."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import threading
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection, connections
from django.utils import timezone

from mcp_gateway.auth import Credential, login_fingerprint, token_fingerprint
from mcp_gateway.usage import UsageCounter, credential_ref
from mcp_gateway.worker import Worker
from mcp_sessions.ids import public_ref
from mcp_sessions.models import AccessToken, ClientUsage, CredentialKind, UsageRow

from .clients import BOUND, poll, until

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRESQL = os.environ.get("DATABASE_ENGINE") == "postgresql"
MODERN = "2026-07-28"
CLAUDE = {"name": "claude-code", "version": "2.1"}


def login(user: Any, session_key: str = "a-session-key") -> Credential:
    digest = hashlib.sha256(session_key.encode()).hexdigest()
    return Credential(
        user=user, scheme="session", ambient=True, login_session_hash=digest, fingerprint=login_fingerprint(digest)
    )


def bearer(user: Any) -> tuple[Credential, AccessToken, str]:
    token, secret = AccessToken.objects.issue(user, "cli")
    credential = Credential(
        user=user, scheme="bearer", ambient=False, token_id=token.pk, fingerprint=token_fingerprint(token.token_hash)
    )
    return credential, token, secret


def counter() -> UsageCounter:
    """A worker's counter: its saving task starts only on a running loop (never in the sync tests)."""
    return Worker().usage


def flush(usage: UsageCounter) -> int:
    return async_to_sync(usage.flush)()


def row(**fields: Any) -> ClientUsage:
    return ClientUsage.objects.get(**fields)


def test_counted_requests_become_one_row_per_user_credential_and_client(alice: Any, bob: Any) -> None:
    usage = counter()
    for _ in range(3):
        usage.count(login(alice), CLAUDE, MODERN)
    usage.count(login(alice), {"name": "cursor", "version": "0.9"}, MODERN)
    usage.count(login(alice, "another-login"), CLAUDE, MODERN)
    usage.count(login(bob), CLAUDE, MODERN, refused=True)
    assert flush(usage) == 4
    assert usage.pending == 0
    mine = row(user=alice, client_name="claude-code", credential_ref=public_ref(login(alice).login_session_hash))
    assert (mine.requests, mine.refusals, mine.client_version, mine.protocol_version) == (3, 0, "2.1", MODERN)
    assert (mine.username, mine.credential_kind, mine.token_id) == ("alice", CredentialKind.LOGIN, None)
    assert mine.first_seen <= mine.last_seen
    assert ClientUsage.objects.for_user(alice).count() == 3
    refused = ClientUsage.objects.for_user(bob).get()
    assert (refused.requests, refused.refusals) == (1, 1)


def test_counts_add_up_across_flushes_and_move_last_seen(alice: Any) -> None:
    usage = counter()
    usage.count(login(alice), CLAUDE, MODERN)
    flush(usage)
    first = row(user=alice)
    usage.count(login(alice), CLAUDE, MODERN)
    usage.count(login(alice), CLAUDE, MODERN, refused=True)
    flush(usage)
    later = row(user=alice)
    assert (later.requests, later.refusals) == (3, 1)
    assert later.first_seen == first.first_seen
    assert later.last_seen >= first.last_seen


def test_two_workers_counting_the_same_client_add_up(alice: Any) -> None:
    one, two = counter(), counter()
    for usage, times in ((one, 2), (two, 5)):
        for _ in range(times):
            usage.count(login(alice), CLAUDE, MODERN)
    flush(two)
    flush(one)
    assert row(user=alice).requests == 7


def batch(user: Any, clients: int, requests: int) -> list[UsageRow]:
    now = timezone.now()
    return [
        UsageRow(
            user_id=user.pk,
            username=user.username,
            credential_kind=CredentialKind.LOGIN,
            credential_ref="abc",
            token_id=None,
            client_name=f"client-{n}",
            client_version="1",
            protocol_version=MODERN,
            first_seen=now,
            last_seen=now,
            requests=requests,
        )
        for n in range(clients)
    ]


def flush_repeatedly(rows: list[UsageRow], rounds: int, failures: list[BaseException]) -> None:
    """What a worker's saving task does, ``rounds`` times over, in a thread with its own connection."""
    try:
        for _ in range(rounds):
            ClientUsage.objects.record_batch(rows)
    except BaseException as exc:  # reported by the test's thread
        failures.append(exc)
    finally:
        connections.close_all()


def test_two_workers_flushing_at_once_lose_no_count(alice: Any) -> None:
    """Two threads, each a worker with its own connection, add the same rows over and over: every count stays."""
    failures: list[BaseException] = []
    rows = batch(alice, clients=8, requests=3)
    threads = [threading.Thread(target=flush_repeatedly, args=(rows, 15, failures)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND * 6)
    assert not failures, failures
    assert ClientUsage.objects.count() == 8
    assert set(ClientUsage.objects.values_list("requests", flat=True)) == {2 * 15 * 3}


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        found = cursor.fetchone()
    return found is not None and found[0] == "Lock"


@pytest.mark.skipif(not POSTGRESQL, reason="waits on PostgreSQL's row locks (DATABASE_ENGINE=postgresql)")
@pytest.mark.parametrize("existing", [False, True], ids=["new-rows", "existing-rows"])
async def test_a_flush_waiting_on_another_workers_open_batch_adds_to_it(alice: Any, existing: bool) -> None:
    """Worker B's batch waits on worker A's uncommitted one (its insert, or its row lock); both counts are kept."""
    rows = batch(alice, clients=3, requests=2)
    if existing:
        await sync_to_async(ClientUsage.objects.record_batch)(rows)
    holding, release, b_pid = threading.Event(), threading.Event(), []
    failures: list[BaseException] = []

    def worker_a() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                ClientUsage.objects.record_batch(rows)
                holding.set()
                release.wait(BOUND)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    def worker_b() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                b_pid.append(cursor.fetchone()[0])
            ClientUsage.objects.record_batch(rows)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    a = threading.Thread(target=worker_a)
    a.start()
    await until(holding.is_set, "worker A's batch written, uncommitted")
    b = threading.Thread(target=worker_b)
    b.start()
    waiting = await poll(lambda: sync_to_async(lambda: bool(b_pid) and _waiting_on_a_lock(b_pid[0]))(), bool)
    release.set()
    a.join(BOUND)
    b.join(BOUND)
    assert waiting, "worker B never waited on worker A's batch"
    assert not failures, failures
    totals = await sync_to_async(lambda: sorted(ClientUsage.objects.values_list("requests", flat=True)))()
    assert totals == [6 if existing else 4] * 3


def test_counting_a_request_does_no_query(alice: Any, django_assert_num_queries: Any) -> None:
    usage = counter()
    credential, _token, _secret = bearer(alice)
    with django_assert_num_queries(0):
        usage.count(credential, CLAUDE, MODERN)  # a new key
        usage.count(credential, CLAUDE, MODERN)  # a known one
        usage.count(credential, {"name": "other"}, MODERN, refused=True)
    assert usage.pending == 2


def test_distinct_clients_per_interval_are_bounded(alice: Any, settings: Any, caplog: Any) -> None:
    settings.MCP_GATEWAY_USAGE_MAX_CLIENTS = 3
    usage = counter()
    for n in range(10):
        usage.count(login(alice), {"name": f"invented-{n}"}, MODERN)
    usage.count(login(alice), {"name": "invented-0"}, MODERN)  # a known client still counts
    assert usage.pending == 3
    with caplog.at_level(logging.WARNING, logger="mcp_gateway"):
        flush(usage)
    assert ClientUsage.objects.count() == 3
    assert row(client_name="invented-0").requests == 2
    assert "7 request(s) not recorded" in caplog.text
    usage.count(login(alice), {"name": "invented-9"}, MODERN)  # a new interval: room again
    assert usage.pending == 1


HOSTILE = [
    pytest.param("claude\x00code", "claudecode", id="nul"),
    pytest.param("good\u202egnp.exe", "goodgnp.exe", id="bidi-override"),
    pytest.param("a\r\nforged: line", "aforged: line", id="crlf"),
    pytest.param("\ud800lone", "lone", id="lone-surrogate"),
    pytest.param("x" * 10_000, "x" * 200, id="10-kb"),
    pytest.param("\u200b" * 5_000 + "hidden", "", id="padded-with-invisible-characters"),
    pytest.param(["not", "text"], "", id="a-list"),
    pytest.param(42, "", id="a-number"),
    pytest.param(None, "", id="missing"),
]


@pytest.mark.parametrize(("name", "stored"), HOSTILE)
def test_a_hostile_client_name_is_cleaned_before_it_is_a_key(alice: Any, name: Any, stored: str) -> None:
    usage = counter()
    usage.count(login(alice), {"name": name, "version": name}, name)
    usage.count(login(alice), {"name": stored, "version": stored}, stored)  # the same key, once cleaned
    assert usage.pending == 1
    flush(usage)
    saved = row(user=alice)
    assert saved.client_name == stored
    assert saved.client_version == stored[:100]
    assert saved.protocol_version == stored[:40]
    assert saved.requests == 2


def test_client_info_that_is_no_object_counts_with_no_name(alice: Any) -> None:
    usage = counter()
    usage.count(login(alice), "claude", MODERN)
    usage.count(login(alice), None, MODERN)
    flush(usage)
    assert (row(user=alice).client_name, row(user=alice).requests) == ("", 2)


def test_credentials_are_named_by_a_reference_never_a_secret(alice: Any) -> None:
    credential, token, secret = bearer(alice)
    usage = counter()
    usage.count(credential, CLAUDE, MODERN)
    usage.count(login(alice, "the-session-key"), CLAUDE, MODERN)
    flush(usage)
    by_token = row(credential_kind=CredentialKind.TOKEN)
    assert (by_token.token_id, by_token.credential_ref) == (token.pk, public_ref(token.token_hash))
    by_login = row(credential_kind=CredentialKind.LOGIN)
    assert by_login.credential_ref == public_ref(hashlib.sha256(b"the-session-key").hexdigest())
    stored = " ".join(str(v) for v in ClientUsage.objects.values_list().all() for v in v)
    for secret_text in (secret, token.token_hash, "the-session-key", login(alice, "the-session-key").fingerprint):
        assert secret_text not in stored


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        pytest.param({"scheme": "custom", "fingerprint": "custom:" + "f" * 64}, CredentialKind.OTHER, id="another"),
        pytest.param({"scheme": "custom", "fingerprint": ""}, CredentialKind.OTHER, id="custom-authenticator"),
        pytest.param({"scheme": "ticket", "login_session_hash": "e" * 64}, CredentialKind.LOGIN, id="login-ticket"),
    ],
)
def test_each_kind_of_credential_has_its_kind(alice: Any, fields: dict[str, Any], kind: str) -> None:
    credential = Credential(user=alice, ambient=False, **fields)
    assert credential_ref(credential)[0] == kind


def test_a_batch_for_a_user_deleted_meanwhile_is_still_saved(make_user: Any) -> None:
    """The user column has no constraint, like the audit's: the batch neither fails nor blocks the deletion."""
    doomed = make_user("doomed")
    credential, _token, _secret = bearer(doomed)
    usage = counter()
    usage.count(credential, CLAUDE, MODERN)
    doomed.delete()
    flush(usage)
    saved = row(username="doomed")
    assert saved.requests == 1


def test_a_users_deletion_keeps_the_rows_by_username(alice: Any) -> None:
    usage = counter()
    usage.count(login(alice), CLAUDE, MODERN)
    flush(usage)
    alice.delete()
    saved = row(username="alice")
    assert (saved.user_id, saved.requests) == (None, 1)


def test_a_batch_that_fails_is_kept_for_the_next(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError

    usage = counter()
    usage.count(login(alice), CLAUDE, MODERN)

    def down(rows: Any) -> int:
        raise OperationalError("the database is away")

    with monkeypatch.context() as patch:
        patch.setattr(ClientUsage.objects, "record_batch", down)
        with pytest.raises(OperationalError):
            flush(usage)
    usage.count(login(alice), CLAUDE, MODERN)
    assert usage.pending == 2  # the failed batch, and the new interval's key
    flush(usage)
    assert row(user=alice).requests == 2


def test_rows_that_clean_to_one_key_are_added_together(alice: Any) -> None:
    (clean,) = batch(alice, clients=1, requests=1)
    earlier = clean.first_seen - timedelta(hours=1)
    dirty = dataclasses.replace(clean, client_name="client-\x000", first_seen=earlier)
    assert ClientUsage.objects.record_batch([clean, dirty]) == 1
    saved = row(user=alice)
    assert (saved.client_name, saved.requests, saved.first_seen) == ("client-0", 2, earlier)


def test_clear_expired_deletes_rows_last_seen_before_the_retention(alice: Any) -> None:
    rows = batch(alice, clients=2, requests=1)
    ClientUsage.objects.record_batch(rows)
    ClientUsage.objects.filter(client_name="client-0").update(last_seen=timezone.now() - timedelta(days=10))
    assert ClientUsage.objects.clear_expired(5) == 1
    assert list(ClientUsage.objects.values_list("client_name", flat=True)) == ["client-1"]


def test_for_user_shows_nobody_elses_rows(alice: Any, bob: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    ClientUsage.objects.record_batch(batch(alice, clients=1, requests=1) + batch(bob, clients=2, requests=1))
    assert ClientUsage.objects.for_user(alice).count() == 1
    assert ClientUsage.objects.for_user(AnonymousUser()).count() == 0


@pytest.fixture
def fast_flush(settings: Any) -> None:
    settings.MCP_GATEWAY_USAGE_FLUSH_INTERVAL = 0.05


async def test_the_worker_saves_its_counts_every_interval_then_rests(alice: Any, fast_flush: None) -> None:
    worker = Worker()
    worker.usage.count(login(alice), CLAUDE, MODERN)
    saved = await poll(lambda: ClientUsage.objects.filter(user=alice).afirst(), lambda r: r is not None)
    assert saved is not None and saved.requests == 1
    await until(lambda: worker.usage._task is not None and worker.usage._task.done(), "the saving task ends")
    worker.usage.count(login(alice), CLAUDE, MODERN)  # starts it again
    again = await poll(
        lambda: ClientUsage.objects.filter(user=alice).afirst(), lambda r: r is not None and r.requests == 2
    )
    assert again is not None and again.requests == 2
    await until(lambda: worker.usage._task is not None and worker.usage._task.done(), "the saving task ends")


async def test_shutting_down_saves_what_was_counted(alice: Any) -> None:
    worker = Worker()  # the default interval: only the shutdown saves within this test
    worker.usage.count(login(alice), CLAUDE, MODERN)
    await worker.close_all()
    saved = await ClientUsage.objects.filter(user=alice).afirst()
    assert saved is not None and saved.requests == 1
    task = worker.usage._task
    assert task is not None  # its next save, an interval away, finds nothing to save; ended here
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_times_are_stored_in_utc(alice: Any) -> None:
    usage = counter()
    before = datetime.now(UTC).replace(microsecond=0)
    usage.count(login(alice), CLAUDE, MODERN)
    flush(usage)
    assert row(user=alice).first_seen >= before


def test_a_forked_process_starts_with_no_counts_of_its_parent(alice: Any) -> None:
    """Its parent saves them: the child saving them too would count them twice."""
    usage = counter()
    usage.count(login(alice), CLAUDE, MODERN)
    pid = os.fork()
    if pid == 0:  # the child: report by exit code, touch nothing of the parent's
        os._exit(0 if usage.pending == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.pending == 1


def count_in(server: Any, headers: dict[str, str], times: int) -> None:
    """``times`` requests counted by the server's worker (through the test probe, as the transport counts)."""
    query = urllib.parse.urlencode({"name": "claude-code", "version": "2.1", "protocol": MODERN})
    for _ in range(times):
        request = urllib.request.Request(f"{server.url}/_test/usage?{query}", headers=headers)
        with urllib.request.urlopen(request, timeout=BOUND) as answer:
            assert answer.status == 200


def test_a_launcher_saves_its_counts_every_interval(start_daphne: Any, alice: Any, alice_headers: Any) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_USAGE_FLUSH_INTERVAL": 0.2})
    count_in(server, alice_headers, 3)
    saved = async_to_sync(poll)(
        sync_to_async(lambda: ClientUsage.objects.filter(user=alice).first()), lambda r: r is not None
    )
    assert saved is not None
    assert (saved.requests, saved.client_name, saved.protocol_version) == (3, "claude-code", MODERN)


def test_a_launcher_saves_its_counts_when_it_shuts_down(start_daphne: Any, alice: Any, alice_headers: Any) -> None:
    server = start_daphne(overrides={"MCP_GATEWAY_USAGE_FLUSH_INTERVAL": 3600})
    count_in(server, alice_headers, 4)
    assert not ClientUsage.objects.exists()  # an hour to go before the next save
    assert server.stop(signal.SIGTERM) == 0, server.log()
    saved = row(user=alice)
    assert (saved.requests, saved.username, saved.credential_kind) == (4, "alice", CredentialKind.LOGIN)
