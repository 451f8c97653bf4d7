"""Small helpers shared by test modules (kept out of conftest so they can be imported)."""

from __future__ import annotations

from typing import Any

from da.queue.client import ClaimedTask, QueueClient


async def claim_one(client: QueueClient, **worker: Any) -> ClaimedTask | None:
    """One immediate claim as the given worker."""
    return await client.claim(worker.pop("machine"), worker.pop("capabilities"), **worker)
