"""The worker's own errors; NeedsHuman is the handlers' (`da.handlers.api`), named here for older handlers."""

from __future__ import annotations

from da.handlers.api import NeedsHuman as NeedsHuman


class WorkerError(Exception):
    """The worker could not run a task."""


class HandlerError(WorkerError):
    """A handler module does not follow the contract; the message names the file."""


class CredentialRefused(WorkerError):
    """The queue refused this worker's credential (a revoked or wrong DA_TOKEN); retrying cannot help."""
