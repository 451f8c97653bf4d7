"""A process's output kept within bounds: lines of any length, the tail for the result, the
capped log file on disk, and the pruning of old logs.

Every step costs time in proportion to the bytes it sees, whatever the line lengths: output
without newlines used to be re-scanned on every read, quadratic in the length of the line.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from da.worker.redact import Redactor

# A line longer than this many characters goes to the log in pieces, so a process writing
# without newlines never makes the worker hold more than this of it.
LINE_PIECE = 64 * 1024
# Ten times a long build log; a runaway loop printing forever stops filling the disk here.
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
# Below this a log holds too little of either end to be worth reading.
MIN_LOG_MAX_BYTES = 4096
# Room kept for the line that says what was cut, so the file never exceeds its cap.
CUT_NOTE_ROOM = 256
LOG_SUFFIX = ".log"


class Tail:
    """The last `limit` bytes of a stream, counting what was cut before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._dropped = 0

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        # Whole chunks only, so each byte is copied once; the excess is trimmed when read.
        while self._size - len(self._chunks[0]) >= self.limit:
            first = self._chunks.popleft()
            self._size -= len(first)
            self._dropped += len(first)

    @property
    def cut(self) -> int:
        return self._dropped + max(0, self._size - self.limit)

    def value(self) -> bytes:
        data = b"".join(self._chunks)
        return data[len(data) - self.limit:] if len(data) > self.limit else data

    def text(self) -> str:
        return self.value().decode("utf-8", errors="replace")


def whole_lines(block: str, newline: bool, continued: bool) -> list[str]:
    """The complete lines of a block that `Lines` emitted, without the pieces of longer ones."""
    lines = block.split("\n")
    if continued:
        lines = lines[1:]
    if not newline and lines:
        lines = lines[:-1]
    return lines


class Lines:
    """Cuts text into whole lines as it arrives and hands them on in blocks.

    `emit(text, newline, continued)` gets one or more lines joined by newlines; `newline`
    says the last one ended (else it is a piece of a line longer than `LINE_PIECE` or the
    stream's unfinished end) and `continued` that the first one goes on from the last
    piece. A piece never ends inside a secret, so each block can be redacted on its own.
    """

    def __init__(self, emit: Callable[[str, bool, bool], None], redact: Redactor, piece: int = LINE_PIECE) -> None:
        self._emit = emit
        self._redact = redact
        self._piece = piece
        self._parts: list[str] = []
        self._size = 0
        self._continued = False

    def feed(self, text: str) -> None:
        # One block per read, not one call per line: per-line work dominated short-line output.
        last = text.rfind("\n")
        if last != -1:
            if self._parts:
                self._parts.append(text[:last])
                block = "".join(self._parts)
                self._parts.clear()
                self._size = 0
            else:
                block = text[:last]
            self._emit(block, True, self._continued)
            self._continued = False
            text = text[last + 1:]
        if text:
            self._parts.append(text)
            self._size += len(text)
            if self._size >= self._piece:
                self._flush_piece()

    def _flush_piece(self) -> None:
        pending = "".join(self._parts)
        end = self._redact.safe_end(pending)
        if end <= 0:
            self._parts = [pending]
            return
        self._emit(pending[:end], False, self._continued)
        self._continued = True
        rest = pending[end:]
        self._parts = [rest] if rest else []
        self._size = len(rest)

    def close(self) -> None:
        """Hand on the last line, which had no newline."""
        if self._parts:
            self._emit("".join(self._parts), False, self._continued)
            self._parts.clear()
            self._size = 0


class TaskLog:
    """A task's log file, capped at `max_bytes`: the first and last halves are kept, and a line
    between them says how much was cut."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        room = max(0, max_bytes - CUT_NOTE_ROOM)
        self._head_left = room // 2
        self._head_full = False
        self._tail = Tail(room - room // 2)
        self._file = path.open("wb")

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def write(self, stream: str, text: str, *, continued: bool = False) -> None:
        """Write lines of one stream, each tagged `[stream]`; `[stream+]` goes on from the line before."""
        first = f"[{stream}+] " if continued else f"[{stream}] "
        data = (first + text.replace("\n", f"\n[{stream}] ") + "\n").encode()
        if not self._head_full:
            fits = data if len(data) <= self._head_left else data[:data.rfind(b"\n", 0, self._head_left) + 1]
            self._file.write(fits)
            self._head_left -= len(fits)
            if len(fits) == len(data):
                return
            # Once a line misses the head, everything after it belongs to the tail, in order.
            self._head_full = True
            data = data[len(fits):]
        self._tail.add(data)

    def close(self) -> None:
        if self._file.closed:
            return
        tail, cut = self._tail.value(), self._tail.cut
        if cut:
            # Start the tail at a whole line.
            newline = tail.find(b"\n")
            cut += newline + 1
            tail = tail[newline + 1:]
            kept = self._file.tell()
            self._file.write(f"[da] {cut} bytes cut here: this log keeps its first {kept} and last {len(tail)} "
                             f"bytes (DA_LOG_MAX_BYTES={self.max_bytes})\n".encode())
        self._file.write(tail)
        self._file.close()


def prune_logs(log_dir: Path, older_than: float, *, now: float | None = None) -> tuple[int, int]:
    """Remove task logs (`*.log` files directly in `log_dir`) not written to for `older_than`
    seconds; returns how many files and bytes were removed."""
    cutoff = (time.time() if now is None else now) - older_than
    removed = size = 0
    if not log_dir.is_dir():
        return 0, 0
    for path in log_dir.iterdir():
        if path.suffix != LOG_SUFFIX or path.is_symlink() or not path.is_file():
            continue
        stat = path.stat()
        if stat.st_mtime < cutoff:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
                size += stat.st_size
    return removed, size
