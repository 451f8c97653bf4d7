"""Errors of the queue: each maps to one HTTP status and a one-sentence detail."""

from __future__ import annotations


class QueueError(Exception):
    """The queue refused the request."""

    status = 500
    code = "internal"
    # Seconds a client is told to wait before trying again (a Retry-After header); 0: not said.
    retry_after = 0

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or (self.__doc__ or self.code).strip())

    @property
    def detail(self) -> str:
        return str(self)


class BadRequest(QueueError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class Unauthorized(QueueError):
    """Missing, wrong or revoked credential; send the admin secret or a token in the x-secret-key header."""

    status = 401
    code = "unauthorized"


class Forbidden(QueueError):
    """This credential may not do that."""

    status = 403
    code = "forbidden"


class NotFound(QueueError):
    """No such task."""

    status = 404
    code = "not_found"


class Conflict(QueueError):
    """The task is not in a state that allows this."""

    status = 409
    code = "conflict"


class LeaseLost(Conflict):
    """The lease is no longer held; the task was reaped, cancelled or reported already."""

    code = "lease_lost"


class LockHeld(Conflict):
    """Another task on this machine holds the task's folder; the task went back to the queue."""

    code = "lock_held"


class TooLarge(QueueError):
    """The request body is too large."""

    status = 413
    code = "too_large"


class RequestTimeout(QueueError):
    """The request body did not arrive in time."""

    status = 408
    code = "request_timeout"


class ClientGone(QueueError):
    """The client went away before its request arrived whole; nobody is left to answer."""

    status = 400
    code = "client_gone"


class TooManyGuesses(QueueError):
    """Too many wrong credentials from this address: this one was not checked; retry later."""

    status = 429
    code = "too_many_guesses"


class TooManyConnections(QueueError):
    """This credential holds as many connections as it may, all busy; close one, or raise QUEUE_MAX_PER_CREDENTIAL."""

    status = 503
    code = "too_many_connections"


class StoreError(QueueError):
    """The database failed; the request changed nothing."""

    status = 503
    code = "store_error"


class DatabaseUnavailable(StoreError):
    """The queue's database is not answering (no primary reachable); nothing was changed, try again shortly."""

    code = "database_unavailable"


class LockRace(StoreError):
    """A concurrent writer took this task's lock (or this ask's number) first: try again."""


class QueueUnreachable(QueueError):
    """No queue URL answered."""

    status = 503
    code = "unreachable"
