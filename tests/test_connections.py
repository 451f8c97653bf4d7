"""Connections as `da serve` holds them (issue 24): every connection has header and idle timeouts, each
credential a connection cap, strangers are cut before anyone who authenticated, and guesses are slow
whatever the concurrency. Real sockets against the real app on loopback."""

from __future__ import annotations

import asyncio
import logging
import plistlib
import resource
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from da import service
from da.queue import app as queue_app
from da.queue import auth, connections
from da.queue.settings import QueueSettings
from tests.support import loopback
from tests.support.server import SECRET
from tests.support.waiting import until_parked, wait_until
from tests.test_slow_clients import (
    HEADER_TIMEOUT,
    at_eof,
    closed_by_server,
    guarded_queues,
    guesses_at_once,
    post_part_of_a_body,
)


@pytest.fixture
async def make_guarded(tmp_path: Path) -> AsyncIterator:
    async with guarded_queues(tmp_path) as factory:
        yield factory


async def answered(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP answer (head and Content-Length body) from the server."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def trusted_connection(port: int, secret: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw keep-alive connection that has made one valid request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /v1/tasks HTTP/1.1\r\nHost: q\r\nx-secret-key: {secret}\r\n\r\n".encode())
    assert (await answered(reader)).startswith(b"HTTP/1.1 200")
    return reader, writer


async def reader_token(url: str) -> str:
    async with loopback.client(base_url=url, headers={"x-secret-key": SECRET}) as admin:
        response = await admin.post("/v1/tokens", json={"kind": "reader", "name": "monitor"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def test_blank_lines_are_not_a_request_and_the_header_timeout_still_closes_them(make_guarded, caplog) -> None:
    caplog.set_level(logging.WARNING)
    queue = await make_guarded()
    reader, writer = await asyncio.open_connection("127.0.0.1", queue.port)
    writer.write(b"\r\n\r\n\r\n\r\n")
    await writer.drain()
    assert await closed_by_server(reader, writer, timeout=5) >= HEADER_TIMEOUT * 0.9
    writer.close()
    assert f"from 127.0.0.1: no complete request within {HEADER_TIMEOUT:g} s" in caplog.text


async def test_a_valid_token_trickling_its_next_request_is_cut_by_the_header_timeout(make_guarded) -> None:
    queue = await make_guarded()
    reader, writer = await trusted_connection(queue.port, await reader_token(queue.url))
    writer.write(b"GET /v1/tasks HTTP/1.1\r\n")
    elapsed = await closed_by_server(reader, writer, dribble=b"X-Slow: " + b"a" * 1000, timeout=5)
    writer.close()
    assert elapsed >= HEADER_TIMEOUT * 0.9


async def test_an_authenticated_connection_sending_only_blank_lines_is_closed_when_idle(make_guarded) -> None:
    queue = await make_guarded(idle_timeout=0.6)
    reader, writer = await trusted_connection(queue.port, SECRET)
    assert await closed_by_server(reader, writer, dribble=b"\r\n" * 2000, timeout=5) >= 0.5
    writer.close()


async def test_each_credential_holds_at_most_its_cap_of_connections(make_guarded, caplog) -> None:
    caplog.set_level(logging.WARNING)
    queue = await make_guarded(header_timeout=60.0, max_per_credential=3)
    token = await reader_token(queue.url)
    held = [await trusted_connection(queue.port, token) for _ in range(6)]
    for _, writer in held:
        writer.write(b"GET /v1/tasks HTTP/1.1\r\nX-Slow: a")  # every one trickles a second request
    still_open = [not await at_eof(reader) for reader, _ in held]
    assert still_open == [False] * 3 + [True] * 3  # the oldest idle ones made room
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": token}) as client:
        assert (await client.get("/v1/tasks")).status_code == 200
    await wait_until(lambda: "from 127.0.0.1: over the limit of 3 connections of reader token monitor" in caplog.text)
    for _, writer in held:
        writer.close()


async def test_a_credential_whose_connections_are_all_busy_gets_503_not_another_descriptor(make_guarded) -> None:
    queue = await make_guarded(header_timeout=60.0, body_timeout=60.0, max_per_credential=2)  # caps, not timeouts
    token = await reader_token(queue.url)
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": token}, timeout=30) as client:
        polls = [asyncio.create_task(client.get("/v1/events", params={"after": 0, "wait": 20})) for _ in range(2)]
        await until_parked(queue.url, "events", 2)
        refused = await client.get("/v1/tasks")
        async with loopback.client(base_url=queue.url, headers={"x-secret-key": SECRET}) as admin:
            assert (await admin.post("/v1/tasks", json={"type": "lint"})).status_code == 201
        assert [(await poll).status_code for poll in polls] == [200, 200]
    assert refused.status_code == 503
    detail = refused.json()["detail"]
    assert detail.startswith("reader token monitor (") and ") has 2 connections open, all busy" in detail


async def test_a_flood_of_new_connections_cuts_strangers_not_real_long_polls(make_guarded) -> None:
    """Past twice the cap the guard used to cut the newest connection at accept: every real client that
    connected after the flood was cut before it could send its request."""
    queue = await make_guarded(header_timeout=60.0)  # 8 unauthenticated, 16 before even fresh ones go
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": SECRET}, timeout=30) as client:
        parked = [asyncio.create_task(client.get("/v1/events", params={"after": 0, "wait": 20})) for _ in range(4)]
        await until_parked(queue.url, "events", 4)
        flood = [await asyncio.open_connection("127.0.0.1", queue.port) for _ in range(40)]
        assert queue.guard.unauthenticated <= 2 * 8
        fresh = await asyncio.gather(*[client.get("/v1/events", params={"after": -1, "wait": 0.1},
                                                  headers={"Connection": "close"}) for _ in range(10)])
        assert (await client.post("/v1/tasks", json={"type": "lint"})).status_code == 201
        answers = await asyncio.gather(*parked)
    assert [answer.status_code for answer in fresh] == [200] * 10
    assert [len(answer.json()["events"]) for answer in answers] == [1] * 4
    for _, writer in flood:
        writer.close()


async def test_a_body_cut_off_by_a_disconnect_is_one_info_line(make_guarded, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    queue = await make_guarded()
    _, writer = await post_part_of_a_body(queue.port)
    await wait_until(lambda: asyncio.sleep(0, queue.guard.unauthenticated == 1))
    await wait_until(lambda: asyncio.sleep(0, queue.guard.unauthenticated == 0))  # admitted, reading the body
    writer.close()
    line = "POST /v1/tasks from 127.0.0.1: the client went away before its body arrived (7 of 100 bytes)"
    await wait_until(lambda: asyncio.sleep(0, line in caplog.text))
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": SECRET}) as client:
        assert (await client.get("/v1/tasks")).json()["tasks"] == []
    assert [record.levelname for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert not [record for record in caplog.records if record.exc_info]


async def test_guesses_sent_in_parallel_are_no_faster_than_one_after_another(make_guarded, caplog) -> None:
    """Past the waiting bound a wrong answer used to go out at once: 35 guesses/s against 2/s."""
    caplog.set_level(logging.WARNING)
    # Each new credential waits 0.25 s, doubling up to 0.5 s, 1 s at most, and 4 wait at once at most.
    queue = await make_guarded(lease=2.0, max_unauthenticated=16)
    answers = await guesses_at_once(queue.url, 14)
    checked = [answer for answer in answers if answer.status_code == 401]
    unchecked = [answer for answer in answers if answer.status_code == 429]
    # Within the 1 s a guess may be held, at most one guess per 0.25 s is checked.
    assert 1 <= len(checked) <= 1 / auth.FIRST_DELAY and len(checked) + len(unchecked) == 14
    assert "was not checked" in unchecked[0].json()["detail"] and unchecked[0].headers["Retry-After"]
    assert "guess-" not in caplog.text


def test_the_guess_throttle_stays_within_a_few_megabytes_at_its_caps() -> None:
    """It used to keep up to 1,000 guesses for each of 10,000 addresses: about 1 GiB."""
    throttle = auth.Throttle(lease=60.0)
    sample = 50  # addresses filled past their cap; the rest of MAX_TRACKED costs the same each
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for address in range(sample):
            for guess in range(auth.MAX_PER_ADDRESS + 5):
                throttle.failed(f"10.0.{address // 256}.{address % 256}", auth.fingerprint(b"guess-%d" % guess))
        guesses = tracemalloc.get_traced_memory()[0] - before
        for address in range(auth.MAX_PASSED + 5):
            throttle.passed(f"10.1.{address // 256}.{address % 256}", auth.fingerprint(b"token"))
        passed = tracemalloc.get_traced_memory()[0] - before - guesses
    finally:
        tracemalloc.stop()
    assert guesses / sample * auth.MAX_TRACKED + passed < 6 * 1024 * 1024


@pytest.fixture
def low_descriptor_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_queue_raises_its_descriptor_limit_and_derives_its_caps_from_it(low_descriptor_limit, tmp_path) -> None:
    hard = low_descriptor_limit
    app = queue_app.make_app(QueueSettings(secret=SECRET, db_path=tmp_path / "q.db"))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == hard or (hard == resource.RLIM_INFINITY and soft >= 10240)
    guard = app[connections.GUARD]
    assert (guard.max_unauthenticated, guard.max_per_credential) == connections.caps(soft)
    assert connections.caps(256) == (48, 24)  # launchd's default: a flood of strangers cannot take them all
    assert 2 * guard.max_unauthenticated + 2 * guard.max_per_credential < soft


def test_the_generated_service_units_raise_the_descriptor_limit(tmp_path: Path) -> None:
    linux = service.plan("queue", system="linux", home=tmp_path, workdir=tmp_path, executable=["da"])
    assert f"LimitNOFILE={service.DESCRIPTORS}" in linux.text.splitlines()
    macos = service.plan("queue", system="macos", home=tmp_path, workdir=tmp_path, executable=["da"])
    plist = plistlib.loads(macos.text.encode())
    assert plist["SoftResourceLimits"] == plist["HardResourceLimits"] == {"NumberOfFiles": service.DESCRIPTORS}
