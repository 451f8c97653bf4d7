"""The queue client: failover across URLs and one clear error when none answers."""

from __future__ import annotations

import pytest

from da.queue import errors
from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer

DEAD = "http://127.0.0.1:9"


async def test_fails_over_to_the_next_url(server: QueueServer) -> None:
    async with QueueClient(f"{DEAD},{server.url}", SECRET) as client:
        task = await client.create_task("lint", {"cwd": "/x"})
        assert client.url == server.url
        assert (await client.get_task(task.id)).id == task.id


async def test_no_url_answering_is_one_clear_error() -> None:
    async with QueueClient([DEAD, "http://127.0.0.1:7"], SECRET, rounds=2) as client:
        with pytest.raises(errors.QueueUnreachable, match=r"queue unreachable at http://127\.0\.0\.1:9, http://127\.0\.0\.1:7"):
            await client.list_tasks()


async def test_server_errors_become_domain_errors(server: QueueServer) -> None:
    async with QueueClient(server.url, "wrong") as client:
        with pytest.raises(errors.Unauthorized):
            await client.list_tasks()
    async with QueueClient(server.url, SECRET) as client:
        with pytest.raises(errors.BadRequest, match="'priority' must be between 0 and 10"):
            await client.create_task("lint", {}, priority=42)
