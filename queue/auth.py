"""Who may call what: the admin secret, scoped tokens, and slowing down whoever guesses.

Four kinds of credential, each sent as `x-secret-key: ...` (or `Authorization: Bearer ...`):

- the admin secret, `SECRET_KEY` on the queue host: everything, including managing tokens. It is
  compared in constant time and never stored;
- a worker token (`da token create worker MACHINE`): claim, start, heartbeat, report and release,
  as that machine and its aliases and for that machine's tasks only;
- a client token (the Slack bot, a person's terminal): create, read, resolve and cancel tasks,
  never claim;
- a reader token (monitoring): read only.

Tokens are random and long, so the store keeps only their SHA-256. PostgreSQL replicas look each one up on
every request, so a revoke on any replica is refused by all of them at once; on SQLite, where one process
holds the file and every revoke goes through it, a token found is kept in memory and forgotten the moment a
revoke commits (`Store.find_token`).

Wrong credentials are counted per address and credential (the same stale secret sent again is one
failure, not a new guess); after FREE_GUESSES distinct ones in a minute, each new credential from that
address waits its turn before it is even checked, longer and longer, one after another, and past half
a lease of queue it is refused unchecked (429): however many connections a guesser opens, guesses are
checked no faster than one by one. A credential that has passed from the address before is checked
at once, so a guesser cannot lock out the real worker beside it.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from da.queue import connections
from da.queue.errors import Forbidden, TooManyConnections, TooManyGuesses, Unauthorized
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
    def credential(self) -> str:
        """Which credential this is, for connection caps: the token's id, or the admin secret."""
        return self.token_id or self.kind

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
# Then each new credential waits FIRST_DELAY before it is checked, doubling up to MAX_DELAY (a
# quarter of the lease at most), one after another per address, so parallel connections gain nothing.
FIRST_DELAY = 0.25
MAX_DELAY = 5.0
# No credential waits longer than this (half the lease at most): past it one is refused unchecked,
# so the wait is a slowdown, never a lockout that holds connections.
MAX_HOLD = 30.0
# Bound memory to a few MB whatever is sent (measured in tests): the addresses tracked, the wrong
# credentials remembered per address (enough to reach MAX_DELAY; past that the oldest makes room and
# the address stays slow), and the credentials that passed from an address.
MAX_TRACKED = 2048
MAX_PER_ADDRESS = FREE_GUESSES + 6
MAX_PASSED = 4096


# Parsing an address took 4 us of every request; a fleet sends from a few addresses (bounded like the throttle).
@functools.lru_cache(maxsize=MAX_TRACKED)
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


def fingerprint(credential: bytes) -> int:
    """What the throttle keeps of a credential: 64 bits of a hash, never what was sent."""
    return int.from_bytes(hashlib.blake2b(credential, digest_size=8).digest(), "big")


class Throttle:
    """Per address: the wrong credentials within WINDOW, those that passed, and when the next new
    credential may be checked."""

    def __init__(self, *, lease: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.max_delay = min(MAX_DELAY, lease / 4)
        self.max_hold = min(MAX_HOLD, lease / 2)
        # address -> fingerprint of each wrong credential -> when last sent (oldest first).
        self._guesses: dict[str, dict[int, float]] = {}
        # address -> when its last queued credential is checked.
        self._next_check: dict[str, float] = {}
        # (address, fingerprint) of credentials that passed, least recent first.
        self._passed: dict[tuple[str, int], None] = {}

    def guesses(self, address: str) -> int:
        return len(self._guesses.get(address, ()))

    def turn(self, address: str, credential: int, *, room: bool = True) -> float | None:
        """Seconds this credential waits before it is checked (0: at once); None: refuse it unchecked,
        because the address's queue is `max_hold` long already or there is no `room` to wait."""
        seen = self._guesses.get(address)
        if not seen or len(seen) < FREE_GUESSES or credential in seen or (address, credential) in self._passed:
            return 0.0
        now = self.clock()
        self._forget_old(seen, now)
        if len(seen) < FREE_GUESSES:
            return 0.0
        step = min(self.max_delay, FIRST_DELAY * 2 ** (len(seen) - FREE_GUESSES))
        check = max(now, self._next_check.get(address, now)) + step
        if not room or check - now > self.max_hold:
            return None
        self._next_check[address] = check
        return check - now

    def failed(self, address: str, credential: int) -> None:
        """Record a wrong credential from this address."""
        now = self.clock()
        seen = self._guesses.pop(address, None)
        if seen is None:
            seen = {}
            if len(self._guesses) >= MAX_TRACKED:
                stale = next(iter(self._guesses))
                del self._guesses[stale]
                self._next_check.pop(stale, None)
        self._guesses[address] = seen
        self._forget_old(seen, now)
        seen.pop(credential, None)
        while len(seen) >= MAX_PER_ADDRESS:
            del seen[next(iter(seen))]
        seen[credential] = now

    def passed(self, address: str, credential: int) -> None:
        """Record a valid credential from this address: it never waits behind a guesser there."""
        key = (address, credential)
        if key in self._passed:
            del self._passed[key]
        elif len(self._passed) >= MAX_PASSED:
            del self._passed[next(iter(self._passed))]
        self._passed[key] = None

    @staticmethod
    def _forget_old(seen: dict[int, float], now: float) -> None:
        while seen and now - next(iter(seen.values())) > WINDOW:
            del seen[next(iter(seen))]


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

    A credential that waits its turn keeps its connection busy, and the connection guard never cuts
    a busy one; so only as many wait at once as the guard lets connections be unauthenticated (a
    quarter of that per address). Past that a new credential is refused unchecked, so waiting can
    never hold every file descriptor, nor sending in parallel check guesses faster.
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
        """The request's principal, allowed on its route; else Unauthorized (after its turn), TooManyGuesses
        (not checked), TooManyConnections (its credential holds its cap) or Forbidden.

        The log names who was refused and why, never what they sent.
        """
        credential = presented(request)
        address = request.remote or "?"
        if credential is None:
            logger.warning("refused %s %s from %s: missing secret", request.method, loggable_path(request), address)
            raise Unauthorized()
        key = address_key(request.remote)
        sent = fingerprint(credential)
        wait = self.throttle.turn(key, sent, room=self._may_wait(key))
        if wait is None:
            logger.warning("refused %s %s from %s unchecked: guess %d from %s within a minute, %d waiting already",
                           request.method, loggable_path(request), address, self.throttle.guesses(key), key,
                           self._waiting[key])
            refused = TooManyGuesses(f"too many wrong credentials from {key} within a minute: this one was not "
                                     f"checked; retry in {self.throttle.max_delay:g} s, or from an address that "
                                     "has used it before.")
            refused.retry_after = math.ceil(self.throttle.max_delay)
            raise refused
        if wait:
            self._waiting[key] += 1
            try:
                await asyncio.sleep(wait)
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
        principal, reason = await self.identify(credential, store)
        if principal is None:
            self.throttle.failed(key, sent)
            slowed = (f" (guess {self.throttle.guesses(key)} from {key} within a minute; answered after {wait:.2f} s)"
                      if wait else "")
            logger.warning("refused %s %s from %s: %s%s", request.method, loggable_path(request), address, reason,
                           slowed)
            raise Unauthorized()
        self.throttle.passed(key, sent)
        if not self.guard.trust(request.protocol, principal.credential, principal.label):
            cap = self.guard.max_per_credential
            logger.warning("refused %s %s from %s: %s has %d connections open, all busy", request.method,
                           loggable_path(request), address, principal.label, cap)
            raise TooManyConnections(f"{principal.label} has {cap} connections open, all busy; close one, or "
                                     "raise QUEUE_MAX_PER_CREDENTIAL on the queue.")
        authorize(principal, request, self.access)
        return principal
