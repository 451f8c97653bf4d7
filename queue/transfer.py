"""Moving a queue from its SQLite file to an empty PostgreSQL database (`da migrate --to URL`).

Everything is copied in one PostgreSQL transaction, so a failed move leaves the target as empty as
it was: every task with all its columns (`seq` too, so listings and their cursors keep their order),
every event with its id (the id sequence is then moved past the last one, so no id is ever handed
out twice and a follower's saved position stays valid), the counts of pruned tasks, and the scoped
tokens (their digests: every `DA_TOKEN` in the fleet keeps working), the asks of supervised sessions (open
ones stay open) and the steering messages (numbered on after the last one). Named leases, health probes
and machine sightings are not copied: they are renewed within seconds by whoever uses them. The
triggers that record transitions and asks are off while the rows go in, so no event is invented. Afterwards
the counts are read back from both databases and must agree.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from da.queue import sqlite
from da.queue.errors import StoreError
from da.queue.postgres import PostgresStore
from da.queue.settings import redact_url

# What is copied, in this order, and the SQLite statement that reads each table.
TABLES = (("tasks", "export_tasks"), ("events", "export_events"), ("pruned_counts", "export_pruned_counts"),
          ("tokens", "export_tokens"), ("asks", "export_asks"), ("messages", "export_messages"))
# How a SQLite value becomes the PostgreSQL column's type (SQLite keeps booleans as 0/1).
CONVERT: dict[str, Callable[[Any], Any]] = {
    "boolean": bool, "double precision": float, "bigint": int, "integer": int, "text": str,
}


@dataclass(frozen=True)
class Counts:
    """What the source and the copy must agree on."""

    tasks: int
    events: int
    last_event: int
    pruned_rows: int
    pruned_tasks: int
    tokens: int
    asks: int
    open_asks: int
    messages: int
    undelivered_messages: int
    statuses: tuple[tuple[str, int], ...]
    # Sums of task seqs and event ids: the same numbers, not only as many of them.
    task_seq_sum: int
    event_id_sum: int
    message_seq_sum: int

    @classmethod
    def of(cls, row: Any, statuses: list[Any]) -> Counts:
        return cls(tasks=int(row["tasks"]), events=int(row["events"]), last_event=int(row["last_event"]),
                   pruned_rows=int(row["pruned_rows"]), pruned_tasks=int(row["pruned_tasks"]),
                   tokens=int(row["tokens"]), asks=int(row["asks"]), open_asks=int(row["open_asks"]),
                   messages=int(row["messages"]), undelivered_messages=int(row["undelivered_messages"]),
                   statuses=tuple((str(s["status"]), int(s["n"])) for s in statuses),
                   task_seq_sum=int(row["task_seq_sum"]), event_id_sum=int(row["event_id_sum"]),
                   message_seq_sum=int(row["message_seq_sum"]))

    def lines(self) -> list[str]:
        """The counts as `da migrate` prints them."""
        statuses = ", ".join(f"{status} {n}" for status, n in self.statuses)
        return [f"  tasks          {self.tasks}" + (f" ({statuses})" if statuses else ""),
                f"  events         {self.events}" + (f" (ids up to {self.last_event}; new events start after it)"
                                                     if self.events else ""),
                f"  pruned counts  {self.pruned_rows} row(s) covering {self.pruned_tasks} pruned task(s)",
                f"  tokens         {self.tokens} (revoked ones too; da token list shows them)",
                f"  asks           {self.asks} ({self.open_asks} open)",
                f"  messages       {self.messages} ({self.undelivered_messages} not delivered yet)"]


async def migrate(db_path: Path, url: str) -> Counts:
    """Copy the SQLite queue at `db_path` into the empty PostgreSQL database at `url`; returns the counts.

    Raises StoreError, changing nothing in PostgreSQL, when the file is missing, empty or damaged, the target already
    holds tasks or events, a column has nowhere to go, or the copy's counts disagree.
    """
    if not db_path.is_file():
        raise StoreError(f"no queue database at {db_path}; set QUEUE_DB_PATH to the file `da serve` used.")
    sqlite.check_file(db_path, "set QUEUE_DB_PATH to the file `da serve` used, or restore it from a backup")
    # Bring an older file up to this da's schema first (it keeps a backup of the old one).
    source = sqlite.SqliteStore(db_path)
    await source.open()
    await source.close()
    target = PostgresStore(url)
    await target.open()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as lite:
            lite.row_factory = sqlite3.Row
            expected = _counts(lambda name: lite.execute(sqlite.STATEMENTS[name]).fetchall())
            tables = [await _table(lite, target, table, statement) for table, statement in TABLES]
            await target.db.load(tables, refuse=lambda row: _not_empty(row, url))
        copied = Counts.of(*await target.census())
    finally:
        await target.close()
    if copied != expected:
        raise StoreError(f"the copy in {redact_url(url)} does not match {db_path} ({copied} against {expected}); "
                         "empty that database (drop and create it) and run da migrate again.")
    return copied


def _counts(read: Callable[[str], list[Any]]) -> Counts:
    return Counts.of(read("transfer_counts")[0], read("transfer_statuses"))


def _not_empty(row: Any, url: str) -> str | None:
    if row["tasks"] or row["events"] or row["pruned_rows"] or row["tokens"]:
        return (f"the PostgreSQL database {redact_url(url)} already holds {row['tasks']} task(s), "
                f"{row['events']} event(s) and {row['tokens']} token(s); da migrate only fills an empty database "
                "(create one with createdb).")
    return None


async def _table(lite: sqlite3.Connection, target: PostgresStore, table: str,
                 statement: str) -> tuple[str, list[str], Iterator[tuple[Any, ...]]]:
    """One table's columns and its rows (read as they are copied), converted to the target's types."""
    columns = [row["name"] for row in lite.execute(sqlite.STATEMENTS["table_columns"], {"table": table})]
    types = await target.column_types(table)
    missing = [column for column in columns if column not in types]
    if missing:
        raise StoreError(f"the SQLite table {table} has column(s) {', '.join(missing)} that the PostgreSQL schema "
                         "lacks; upgrade da on this machine, then run da migrate again.")
    unknown = sorted({types[column] for column in columns} - set(CONVERT))
    if unknown:
        raise StoreError(f"da migrate cannot copy PostgreSQL column type(s) {', '.join(unknown)} of table {table}.")
    converters = [CONVERT[types[column]] for column in columns]

    def rows() -> Iterator[tuple[Any, ...]]:
        for row in lite.execute(sqlite.STATEMENTS[statement]):
            yield tuple(None if value is None else convert(value)
                        for convert, value in zip(converters, row, strict=True))

    return table, columns, rows()
