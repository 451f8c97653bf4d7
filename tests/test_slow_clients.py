"""Slow clients (slow-loris) against the queue as `da serve` runs it: real sockets that dribble bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest

from da.queue import app as queue_app
from da.queue import auth, connections, settings
from da.queue.client import QueueClient
from da.queue.settings import QueueSettings
from tests.support import loopback
from tests.support.processes import start_serve
from tests.support.server import SECRET
from tests.support.waiting import wait_until
from tests.support.workers import run_task

HEADER_TIMEOUT = 0.5


@dataclass
class Guarded:
    port: int
    guard: connections.ConnectionGuard

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def guarded_queues(tmp_path: Path) -> AsyncIterator:
    """Start queues served through `connections.GuardedSite`, as `da serve` and `da up` serve them."""
    runners = []

    async def factory(**overrides: object) -> Guarded:
        values = {"secret": SECRET, "db_path": tmp_path / f"q{len(runners)}.db", "header_timeout": HEADER_TIMEOUT,
                  "body_timeout": 0.5, "max_unauthenticated": 8, **overrides}
        app = queue_app.make_app(QueueSettings(**values))  # type: ignore[arg-type]
        runner = connections.make_runner(app)
        await runner.setup()
        runners.append(runner)
        site = connections.GuardedSite(runner, queue_app.bind("127.0.0.1", 0)[0])
        await site.start()
        return Guarded(site.port, app[connections.GUARD])

    try:
        yield factory
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def make_guarded(tmp_path: Path) -> AsyncIterator:
    async with guarded_queues(tmp_path) as factory:
        yield factory


async def closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, dribble: bytes = b"",
                           timeout: float = 10) -> float:
    """Seconds until the server closes the connection, sending `dribble` a byte at a time meanwhile."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if dribble:
            with contextlib.suppress(ConnectionError):
                writer.write(dribble[:1])
                await writer.drain()
            dribble = dribble[1:] or b"X"
        try:
            if await asyncio.wait_for(reader.read(1024), 0.1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {timeout} s")


async def test_a_client_that_dribbles_its_headers_is_cut_off_and_logged(make_guarded, caplog) -> None:
    caplog.set_level(logging.WARNING)
    queue = await make_guarded()
    reader, writer = await asyncio.open_connection("127.0.0.1", queue.port)
    writer.write(b"GET /v1/tasks HTTP/1.1\r\nHost: queue\r\n")
    elapsed = await closed_by_server(reader, writer, dribble=b"X-Slow: " + b"a" * 1000)
    writer.close()
    assert elapsed >= HEADER_TIMEOUT * 0.9
    assert f"closed 1 slow or surplus connection(s) from 127.0.0.1: no complete request within {HEADER_TIMEOUT:g} s" \
        in caplog.text
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": SECRET}) as client:
        assert (await client.get("/v1/tasks")).status_code == 200


async def at_eof(reader: asyncio.StreamReader) -> bool:
    """Whether the server has closed this connection (it sends nothing on an idle one)."""
    try:
        return await asyncio.wait_for(reader.read(1024), 0.3) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_unauthenticated_connections_are_capped_and_a_real_client_still_gets_in(make_guarded, caplog) -> None:
    caplog.set_level(logging.WARNING)
    queue = await make_guarded(header_timeout=60.0)
    idle = [await asyncio.open_connection("127.0.0.1", queue.port) for _ in range(20)]
    await wait_until(lambda: asyncio.sleep(0, queue.guard.unauthenticated == 8), timeout=10)
    assert [await at_eof(reader) for reader, _ in idle].count(True) == 12
    async with loopback.client(base_url=queue.url, headers={"x-secret-key": SECRET}) as client:
        assert (await client.get("/v1/tasks")).status_code == 200
    assert queue.guard.unauthenticated <= 8  # the client's connection was trusted at once
    # The sweep logs once a second at most.
    await wait_until(lambda: "from 127.0.0.1: over the limit of 8 unauthenticated connections" in caplog.text)
    for _, writer in idle:
        writer.close()


@pytest.mark.long
async def test_a_burst_of_real_clients_from_one_address_is_not_taken_for_a_flood(make_guarded, caplog) -> None:
    """Hundreds of requests at once from one address (a test racing two replicas, a fleet behind one
    NAT): each new connection is unauthenticated until its request is read, and none may be cut."""
    caplog.set_level(logging.WARNING)
    # The default time for a request's head: a burst on a busy machine may take longer than this module's short one.
    queue = await make_guarded(max_unauthenticated=100, header_timeout=settings.DEFAULT_HEADER_TIMEOUT,
                               body_timeout=settings.DEFAULT_BODY_TIMEOUT)  # 200 before even the newest go
    # aiohttp's client: httpx's pool spends about 20 ms of CPU on each request with 150 connections open.
    async with aiohttp.ClientSession(queue.url, connector=aiohttp.TCPConnector(limit=150),
                                     headers={"x-secret-key": SECRET},
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def create() -> int:
            async with session.post("/v1/tasks", json={"type": "lint"}) as answer:
                return answer.status

        statuses = await asyncio.gather(*[create() for _ in range(300)])
    assert statuses == [201] * 300
    assert "closed" not in caplog.text


async def guesses_at_once(url: str, count: int) -> list[httpx.Response]:
    """The free wrong secrets one after another, then `count` new ones at once; the admin still gets in."""
    async with loopback.client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=20)) as guesser:
        for n in range(auth.FREE_GUESSES):
            assert (await guesser.get("/v1/tasks", headers={"x-secret-key": f"free-{n}"})).status_code == 401
        answers = await asyncio.gather(*[guesser.get("/v1/tasks", headers={"x-secret-key": f"guess-{n}"})
                                         for n in range(count)])
    async with loopback.client(base_url=url, headers={"x-secret-key": SECRET}) as client:
        assert (await client.get("/v1/tasks")).status_code == 200
    return answers


async def test_wrong_answers_waiting_at_once_are_bounded_per_address(make_guarded, caplog) -> None:
    """A credential waiting its turn keeps its connection busy, and busy ones are never cut; so without
    a bound a guesser sending in parallel could hold every file descriptor with the queue's own delay."""
    caplog.set_level(logging.WARNING)
    # 8 unauthenticated connections, 2 per address; the default time for a request's head, since the
    # guesses' connections open at once and a busy machine may not send each head within this module's short one.
    queue = await make_guarded(header_timeout=settings.DEFAULT_HEADER_TIMEOUT)
    answers = await guesses_at_once(queue.url, 12)
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {401, 429} and statuses.count(429) >= 12 - 3
    assert "unchecked: guess 10 from 127.0.0.1 within a minute, 2 waiting already" in caplog.text
    assert "answered after" in caplog.text


async def test_a_public_request_does_not_exempt_its_connection(make_guarded) -> None:
    """/health needs no credential, so a connection that only asked it is watched like a new one."""
    queue = await make_guarded()
    reader, writer = await asyncio.open_connection("127.0.0.1", queue.port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: queue\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).startswith(b"HTTP/1.1 200")
    assert await closed_by_server(reader, writer) >= HEADER_TIMEOUT * 0.9
    writer.close()


async def post_part_of_a_body(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that sent an authenticated POST's head and 7 of its 100 body bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/tasks HTTP/1.1\r\nHost: queue\r\nx-secret-key: {SECRET}\r\nContent-Type: "
                 "application/json\r\nContent-Length: 100\r\n\r\n{\"type\"".encode())
    await writer.drain()
    return reader, writer


async def test_a_body_that_dribbles_gets_408_and_is_logged(make_guarded, caplog) -> None:
    caplog.set_level(logging.WARNING)
    queue = await make_guarded()
    reader, writer = await post_part_of_a_body(queue.port)
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"did not arrive within 0.5 s" in answer
    assert "POST /v1/tasks from 127.0.0.1: the body did not arrive within 0.5 s (slow client)" in caplog.text


async def test_a_worker_keeps_running_tasks_while_slow_clients_flood_its_address(make_guarded, tmp_path,
                                                                                 make_worker) -> None:
    queue = await make_guarded(header_timeout=2.0, max_unauthenticated=64)
    stop = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def flood() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", queue.port)
                writer.write(b"GET /v1/tasks HTTP/1.1\r\nHost: q\r\n")
                held.append(writer)
            await asyncio.sleep(0.01)

    flooding = asyncio.create_task(flood())
    worker = make_worker(queue.url, tmp_path)
    try:
        async with QueueClient(queue.url, SECRET) as client:
            tasks = [await run_task(client, "run_script", {"script": f"sleep 0.5; echo run {n}"}) for n in range(3)]
    finally:
        stop.set()
        await flooding
        worker.kill()
        for writer in held:
            writer.close()
    assert [task.status for task in tasks] == ["done"] * 3
    assert len(held) > 64  # the flood really went over the limit
    # Each flooding connection lives out its grace (1 s here), so the bound is the flood valve's.
    assert queue.guard.unauthenticated <= connections.FLOOD_FACTOR * 64


async def test_da_serve_cuts_off_slow_clients(tmp_path: Path) -> None:
    process, url, log = start_serve(tmp_path, SECRET_KEY=SECRET, QUEUE_HEADER_TIMEOUT="0.5", LOG_LEVEL="WARNING")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(b"GET /v1/tasks HTTP/1.1\r\n")
        assert await closed_by_server(reader, writer, dribble=b"Host: q\r\nX-Slow: " + b"a" * 1000) >= 0.45
        writer.close()
    finally:
        process.terminate()
        process.wait(10)
    assert "no complete request within 0.5 s" in log.read_text()
