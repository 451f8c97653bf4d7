"""Who may call what: the admin secret, scoped tokens, and slowing down whoever guesses.

Four kinds of credential, each sent as `x-secret-key: ...` (or `Authorization: Bearer ...`):

- the admin secret, `SECRET_KEY` on the queue host: everything, including managing tokens. It is
  compared in constant time and never stored;
- a worker token (`da token create worker MACHINE`): claim, start, heartbeat, report and release,
  as that machine and its aliases and for that machine's tasks only;
- a client token (the Slack bot, a person's terminal): create, read, resolve and cancel tasks,
  never claim;
- a reader token (monitoring): read only.

Tokens are random and long, so the store keeps only their SHA-256 and looks each one up on every
request (no cache): a revoke on any replica is refused by all of them at once.

Wrong credentials are counted per address and credential (the same stale secret sent again is one
failure, not a new guess); after FREE_GUESSES distinct ones in a minute, that address's wrong answers
wait, longer and longer, one after another. A request that carries a valid credential is checked
first and never waits or is refused, so a guesser cannot lock out the real worker on its address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from da.queue import connections
from da.queue.errors import Forbidden, Unauthorized
from da.queue.models import ADMIN, CLIENT_TOKEN, READER_TOKEN, WORKER_TOKEN, ClaimRequest, Token
from da.queue.store import Store

logger = logging.getLogger(__name__)

# ---- what each kind of credential may do ------------------------------------------------

EVERYONE = frozenset({ADMIN, CLIENT_TOKEN, READER_TOKEN, WORKER_TOKEN})
READERS = frozenset({ADMIN, CLIENT_TOKEN, READER_TOKEN})
PEOPLE = frozenset({ADMIN, CLIENT_TOKEN})
MACHINES = frozenset({ADMIN, WORKER_TOKEN})
ADMIN_ONLY = frozenset({ADMIN})
# Who may call each route that asks for a credential, by method and path: derived from the routes'
# declarations (`routes.ACCESS`), and handed to the Gate.
Access = Mapping[tuple[str, str], frozenset[str]]
SCOPES = {
    ADMIN: "the admin secret may do anything",
    CLIENT_TOKEN: "a client token may create, read, resolve and cancel tasks",
    READER_TOKEN: "a reader token may only read",
    WORKER_TOKEN: "a worker token may only claim and run tasks for its machine",
}


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the admin, or the holder of one token."""

    kind: str
    name: str
    token_id: str | None = None
    machine: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def of(cls, token: Token) -> Principal:
        return cls(token.kind, token.name, token.id, token.machine, token.aliases)

    @property
    def label(self) -> str:
        """The credential as the queue records it beside a name the client chose (`created_via`, an event's `via`)."""
        return "admin secret" if self.kind == ADMIN else f"{self.kind} token {self.name} ({self.token_id})"

    @property
    def only_machine(self) -> str | None:
        """The machine whose tasks this credential is limited to (None: any)."""
        return self.machine if self.kind == WORKER_TOKEN else None

    def to_json(self, access: Access) -> dict[str, object]:
        """Who this is and what it may call (`may`: method and path of each route its kind is allowed)."""
        may = sorted(f"{method} {path}" for (method, path), kinds in access.items() if self.kind in kinds)
        return {"kind": self.kind, "name": self.name, "id": self.token_id, "machine": self.machine,
                "aliases": list(self.aliases), "may": may}


ADMIN_PRINCIPAL = Principal(ADMIN, "SECRET_KEY")
PRINCIPAL = web.RequestKey("principal", Principal)


def authorize(principal: Principal, request: web.Request, access: Access) -> None:
    """Raise Forbidden unless this kind of credential may use the route (unknown routes 404 later); a route
    missing from `access` is the admin's alone."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return
    method = "GET" if request.method == "HEAD" else request.method
    allowed = access.get((method, resource.canonical), ADMIN_ONLY)
    if principal.kind not in allowed:
        scope = SCOPES[principal.kind] + (f" ({principal.machine})" if principal.machine else "")
        only = "; only the admin secret (SECRET_KEY, on the queue host) may" if allowed == ADMIN_ONLY else ""
        raise Forbidden(f"a {principal.kind} token may not {method} {resource.canonical}{only}; {scope}.")


def check_claim(principal: Principal, spec: ClaimRequest) -> None:
    """A worker token claims only as its own machine, with aliases it was given."""
    machine = principal.only_machine
    if machine is None:
        return
    if spec.machine != machine:
        raise Forbidden(f"this worker token is for {machine}; it may not claim as {spec.machine}.")
    foreign = [alias for alias in spec.aliases if alias not in principal.aliases]
    if foreign:
        known = ", ".join(principal.aliases) or "none"
        raise Forbidden(f"this worker token for {machine} may not claim as alias {foreign[0]!r} (its aliases: "
                        f"{known}); make one that has it with `da token create worker {machine} --aliases=...`.")


# ---- tokens -------------------------------------------------------------------------------

# A token is `da` + its kind's letter + `_` + 32 random bytes in URL-safe base64: recognisable
# by people and secret scanners, and too long to guess.
TOKEN_BYTES = 32
TOKEN_SHAPE = re.compile(rb"da[crw]_[A-Za-z0-9_-]{43}")
TOKEN_IN_TEXT = re.compile(TOKEN_SHAPE.pattern.decode())


def loggable_path(request: web.Request) -> str:
    """The request's path with any token in it (pasted by mistake) redacted, for the log."""
    return TOKEN_IN_TEXT.sub(lambda match: match[0][:4] + "[redacted]", request.path)


# Public ids people type to revoke a token; 48 bits keep them unique at any realistic count.
TOKEN_ID_HEX = 12


def digest(secret: bytes) -> str:
    """What the store keeps of a token: a plain SHA-256 suffices for 256 random bits."""
    return hashlib.sha256(secret).hexdigest()


def mint(kind: str) -> tuple[str, str, str]:
    """A new token of this kind: (secret, its digest, its public id)."""
    secret = f"da{kind[0]}_" + base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")
    return secret, digest(secret.encode()), secrets.token_hex(TOKEN_ID_HEX // 2)


# ---- slowing guesses down -----------------------------------------------------------------

# Distinct wrong credentials an address may send in WINDOW seconds before its answers slow down:
# plenty for a person fumbling a paste, nothing to guess a secret with.
FREE_GUESSES = 10
WINDOW = 60.0
# Then each wrong answer waits FIRST_DELAY, doubling up to MAX_DELAY (a quarter of the lease at
# most), and answers to one address come one after another, so parallel connections gain nothing.
FIRST_DELAY = 0.25
MAX_DELAY = 5.0
# A wrong answer never waits longer than this (half the lease at most): the wait is a slowdown,
# never a lockout.
MAX_HOLD = 30.0
# Bounds memory under a flood from many addresses, or many guesses from one.
MAX_TRACKED = 10_000
MAX_PER_ADDRESS = 1000


def address_key(remote: str | None) -> str:
    """Whom failures are counted against: the IPv4 address, or the IPv6 /64 (one host's share)."""
    if not remote:
        return "?"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Throttle:
    """Wrong credentials per address and credential within WINDOW, and how long to wait before saying so."""

    def __init__(self, *, lease: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.max_delay = min(MAX_DELAY, lease / 4)
        self.max_hold = min(MAX_HOLD, lease / 2)
        # address -> fingerprint of each wrong credential -> when last sent (oldest first).
        self._guesses: dict[str, dict[bytes, float]] = {}
        # address -> when its last queued wrong answer goes out.
        self._next_answer: dict[str, float] = {}

    def guesses(self, address: str) -> int:
        return len(self._guesses.get(address, ()))

    def failed(self, address: str, credential: bytes) -> float:
        """Record a wrong credential; returns the seconds to wait before answering it."""
        now = self.clock()
        seen = self._guesses.pop(address, None)
        if seen is None:
            seen = {}
            if len(self._guesses) >= MAX_TRACKED:
                stale = next(iter(self._guesses))
                del self._guesses[stale]
                self._next_answer.pop(stale, None)
        self._guesses[address] = seen
        while seen and (now - next(iter(seen.values())) > WINDOW or len(seen) >= MAX_PER_ADDRESS):
            del seen[next(iter(seen))]
        # Only a fingerprint is kept, never what was sent.
        fingerprint = hashlib.sha256(credential).digest()[:16]
        seen.pop(fingerprint, None)
        seen[fingerprint] = now
        if len(seen) <= FREE_GUESSES:
            return 0.0
        step = min(self.max_delay, FIRST_DELAY * 2 ** (len(seen) - FREE_GUESSES - 1))
        answer = max(now, self._next_answer.get(address, now)) + step
        self._next_answer[address] = answer
        return min(answer - now, self.max_hold)


# ---- the gate every request but /health passes --------------------------------------------


def presented(request: web.Request) -> bytes | None:
    """The credential as sent (bytes: a header need not be UTF-8), or None when there is none."""
    given = request.headers.get("x-secret-key")
    if given is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    # aiohttp keeps undecodable header bytes as surrogates; this gives the bytes back.
    return given.encode("utf-8", "surrogateescape") or None


class Gate:
    """Authenticates each request (admin secret or token), slows guessers, and authorizes the route.

    A wrong answer that waits keeps its connection busy, and the connection guard never cuts a busy
    one; so only as many wait at once as the guard lets connections be unauthenticated (a quarter
    of that per address). Past that a wrong answer goes out at once: a guesser who sends in
    parallel gains speed, but can never hold every file descriptor.
    """

    def __init__(self, secret: str, *, lease: float, guard: connections.ConnectionGuard, access: Access) -> None:
        self._secret = secret.encode()
        self.access = access
        self.throttle = Throttle(lease=lease)
        self.guard = guard
        self._waiting: Counter[str] = Counter()

    def _may_wait(self, key: str) -> bool:
        return (self._waiting[key] < self.guard.per_address
                and self._waiting.total() < self.guard.max_unauthenticated)

    async def identify(self, credential: bytes, store: Store) -> tuple[Principal | None, str]:
        """Who this credential is, or None with the reason it is not valid."""
        if hmac.compare_digest(credential, self._secret):
            return ADMIN_PRINCIPAL, ""
        if not TOKEN_SHAPE.fullmatch(credential):
            return None, "wrong secret"
        token = await store.find_token(digest(credential))
        if token is None:
            return None, "unknown token"
        if token.revoked_at is not None:
            return None, f"revoked token {token.id} ({token.name})"
        return Principal.of(token), ""

    async def admit(self, request: web.Request, store: Store) -> Principal:
        """The request's principal, allowed on its route; else Unauthorized (after any delay) or Forbidden.

        The log names who was refused and why, never what they sent.
        """
        with self.guard.deciding(request.protocol):
            credential = presented(request)
            address = request.remote or "?"
            if credential is None:
                logger.warning("refused %s %s from %s: missing secret", request.method, loggable_path(request), address)
                raise Unauthorized()
            principal, reason = await self.identify(credential, store)
            if principal is None:
                key = address_key(request.remote)
                wait = self.throttle.failed(key, credential)
                slowed = ""
                if wait and not self._may_wait(key):
                    slowed = (f" (guess {self.throttle.guesses(key)} from {key} within a minute; answered at once: "
                              f"{self._waiting[key]} wrong answers are waiting already)")
                    wait = 0.0
                elif wait:
                    slowed = (f" (guess {self.throttle.guesses(key)} from {key} within a minute; answered after "
                              f"{wait:.2f} s)")
                logger.warning("refused %s %s from %s: %s%s", request.method, loggable_path(request), address, reason,
                               slowed)
                if wait:
                    self._waiting[key] += 1
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        self._waiting[key] -= 1
                        if not self._waiting[key]:
                            del self._waiting[key]
                raise Unauthorized()
            self.guard.trust(request.protocol)
        authorize(principal, request, self.access)
        return principal

