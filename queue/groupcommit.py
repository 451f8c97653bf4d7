"""Group commit for SQLite: writes that queue up while one batch runs are committed together.

Each caller is answered only after the COMMIT that holds its statement, so a batch shares the
cost of a commit (about 2.5x faster at 8 concurrent workers) without weakening what an answer
promises. The connection is a plain sqlite3 one on its own thread, so a batch costs one thread
hop (aiosqlite would cost one per statement).

Whatever goes wrong inside a batch (a constraint, a value SQLite cannot bind, a bug) fails only
the statement at fault; the engine keeps running for every later write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from da.queue.errors import StoreError

# Statements per group commit; bounds how long one batch holds the write lock.
MAX_BATCH = 64


@dataclass(frozen=True)
class Chain:
    """Statements with their own parameters, run in one transaction, each only if the one before it returned
    rows; the outcome is the rows of each (empty for those not run)."""

    steps: tuple[tuple[str, dict[str, Any]], ...]


# One statement, several to run in one transaction (the rows of the last are returned), or a Chain.
Statement = str | list[str] | Chain
Outcome = list[Any] | Exception


class GroupCommit:
    """The one writer of a SQLite file: a thread, a queue of statements, one transaction per batch."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = MAX_BATCH) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._db: sqlite3.Connection | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[tuple[Statement, dict[str, Any], asyncio.Future[list[Any]]]] = []
        self._has_work = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the connection on the writer thread (`connect` may migrate) and start batching."""
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="da-store-writer")
        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        self._closing = False
        self._loop_task = asyncio.create_task(self._write_batches())

    async def stop(self) -> None:
        """Commit what is queued, then close the connection and the thread."""
        if self._loop_task is not None:
            self._closing = True
            self._has_work.set()
            await self._loop_task
            self._loop_task = None
        if self._executor is not None:
            db, self._db = self._db, None
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run(self, statement: Statement, params: dict[str, Any]) -> list[Any]:
        """Queue a write for the next batch and wait until it is committed (a Chain's `params` are unused)."""
        if self._loop_task is None or self._loop_task.done() or self._closing:
            raise StoreError("the queue database is not open.")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((statement, params, future))
        self._has_work.set()
        return await future

    async def _write_batches(self) -> None:
        """Hand whatever is queued to the writer thread as one batch, until stopped and drained."""
        loop = asyncio.get_running_loop()
        while True:
            await self._has_work.wait()
            # One turn of the loop lets requests that already arrived join this batch.
            await asyncio.sleep(0)
            if not self._pending:
                if self._closing:
                    return
                self._has_work.clear()
                continue
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            if not self._pending and not self._closing:
                self._has_work.clear()
            work = [(statement, params) for statement, params, _ in batch]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._run_batch, work)
            except Exception as exc:  # noqa: BLE001 - the thread could not run the batch at all
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    error = StoreError(f"database error: {outcome}")
                    error.__cause__ = outcome
                    future.set_exception(error)
                else:
                    future.set_result(outcome)

    @staticmethod
    def _execute(db: sqlite3.Connection, statement: Statement, params: dict[str, Any]) -> list[Any]:
        if isinstance(statement, str):
            return db.execute(statement, params).fetchall()
        if isinstance(statement, Chain):
            outcome: list[list[sqlite3.Row]] = []
            for sql, own in statement.steps:
                outcome.append(db.execute(sql, own).fetchall() if not outcome or outcome[-1] else [])
            return outcome
        rows: list[sqlite3.Row] = []
        for one in statement:
            rows = db.execute(one, params).fetchall()
        return rows

    @staticmethod
    def _roll_back(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def _run_batch(self, batch: list[tuple[Statement, dict[str, Any]]]) -> list[Outcome]:
        """In the writer thread: one transaction for the batch, or one each if the batch fails."""
        db = self._db
        if db is None:
            raise StoreError("the queue database is not open.")
        if len(batch) > 1 or not isinstance(batch[0][0], str):
            try:
                db.execute("BEGIN IMMEDIATE")
                results: list[Outcome] = [self._execute(db, statement, params) for statement, params in batch]
                db.execute("COMMIT")
                return results
            except Exception as exc:  # noqa: BLE001 - retried one by one below, so only the culprit fails
                self._roll_back(db)
                if len(batch) == 1:
                    return [exc]
        # Alone, or after a failed batch: each in its own transaction, so only the one at fault fails.
        outcomes: list[Outcome] = []
        for statement, params in batch:
            try:
                if isinstance(statement, str):
                    outcomes.append(db.execute(statement, params).fetchall())
                    continue
                db.execute("BEGIN IMMEDIATE")
                outcomes.append(self._execute(db, statement, params))
                db.execute("COMMIT")
            except Exception as exc:  # noqa: BLE001 - reported to the caller of this one statement
                self._roll_back(db)
                outcomes.append(exc)
        return outcomes
