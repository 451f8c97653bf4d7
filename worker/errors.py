"""Outcomes a handler signals by raising, so the worker loop decides how to report them."""

from __future__ import annotations


class WorkerError(Exception):
    """The worker could not run a task."""


class NeedsHuman(WorkerError):
    """A person must act before this task can succeed; `action` says what to do."""

    def __init__(self, notes: str, action: str = "", result: dict | None = None) -> None:
        super().__init__(notes)
        self.notes = notes
        self.action = action
        self.result = result or {}


class HandlerError(WorkerError):
    """A handler module does not follow the contract; the message names the file."""
