"""Settings of the queue service, parsed once from the environment at start."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from da import config
from da.config import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_DB = "data/queue.db"
# Long enough to ride out a laptop's brief network blip, short enough that a dead worker's
# task moves on within a minute.
DEFAULT_LEASE = 60.0
# How long a task preferring a busy machine waits before any capable machine may take it.
DEFAULT_OVERFLOW_GRACE = 20.0
# Results carry 64 KiB tails of stdout and stderr; 1 MiB leaves room without inviting abuse.
DEFAULT_MAX_BODY = 1024 * 1024
# The reaper's period bounds how late an expired lease is noticed.
DEFAULT_REAP_INTERVAL = 1.0
# target_session_attrs values that only ever connect to a host that takes writes.
WRITABLE_SESSIONS = ("read-write", "primary")
# A client sends a whole request's headers in milliseconds; a slow-loris takes forever. Ten seconds
# also covers a connection opened early and used a moment later.
DEFAULT_HEADER_TIMEOUT = 10.0
# A 1 MiB report crosses a slow link in well under this.
DEFAULT_BODY_TIMEOUT = 30.0
# A person has this long to answer an agent's ask (DA_ASK_TIMEOUT); then it is a reject.
DEFAULT_ASK_TIMEOUT = 15 * 60.0
# An authenticated connection that sends no request for this long is closed.
DEFAULT_IDLE_TIMEOUT = 75.0
# SQLite: below this much free disk /health answers 503 and the WAL is checkpointed; the WAL alone
# can grow by ~40 MB between checkpoints, so less than that cannot be relied on to commit.
DEFAULT_DISK_RESERVE_MB = 64


@dataclass(frozen=True)
class QueueSettings:
    """Everything `da serve` needs; `secret` (the admin secret) is required."""

    secret: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db_path: Path = Path(DEFAULT_DB)
    # PostgreSQL instead of the SQLite file, shared by every replica; wins over db_path.
    db_url: str | None = None
    lease: float = DEFAULT_LEASE
    overflow_grace: float = DEFAULT_OVERFLOW_GRACE
    max_body: int = DEFAULT_MAX_BODY
    sync: str = "full"
    reap_interval: float = DEFAULT_REAP_INTERVAL
    config_dir: Path = Path("config")
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    # Connections without a valid credential, and per credential, at once; None: derived from the
    # descriptor limit (`connections.caps`).
    max_unauthenticated: int | None = None
    max_per_credential: int | None = None
    ask_timeout: float = DEFAULT_ASK_TIMEOUT
    # USD one requester's agent tasks may cost per day (DA_BUDGET_PER_DAY); None: no limit.
    budget_per_day: float | None = None
    disk_reserve_mb: int = DEFAULT_DISK_RESERVE_MB

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None, require_secret: bool = True) -> QueueSettings:
        """Read QUEUE_* and SECRET_KEY; a bad value raises ConfigError naming it."""
        secret = env.get("SECRET_KEY", "")
        if require_secret and not secret:
            raise ConfigError("SECRET_KEY is not set; put a long random value in .env "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`).")
        sync = env.get("QUEUE_SYNC", "full").strip().lower() or "full"
        if sync not in ("normal", "full"):
            raise ConfigError(f"QUEUE_SYNC={sync!r} is not valid; use normal or full.")
        return cls(
            secret=secret,
            host=env.get("QUEUE_HOST", DEFAULT_HOST) or DEFAULT_HOST,
            port=config.env_int(env, "QUEUE_PORT", DEFAULT_PORT, minimum=0, maximum=65535),
            db_path=Path(env.get("QUEUE_DB_PATH") or DEFAULT_DB).expanduser(),
            db_url=database_url(env),
            lease=config.env_float(env, "QUEUE_LEASE", DEFAULT_LEASE, minimum=1.0),
            overflow_grace=config.env_float(env, "QUEUE_OVERFLOW_GRACE", DEFAULT_OVERFLOW_GRACE),
            max_body=config.env_int(env, "QUEUE_MAX_BODY", DEFAULT_MAX_BODY, minimum=1024),
            sync=sync,
            reap_interval=config.env_float(env, "QUEUE_REAP_INTERVAL", DEFAULT_REAP_INTERVAL, minimum=0.05),
            config_dir=config.config_dir(env, cwd),
            header_timeout=config.env_float(env, "QUEUE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, minimum=0.1),
            body_timeout=config.env_float(env, "QUEUE_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, minimum=0.1),
            idle_timeout=config.env_float(env, "QUEUE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT, minimum=1.0),
            max_unauthenticated=config.env_int(env, "QUEUE_MAX_UNAUTHENTICATED", 0, minimum=0) or None,
            max_per_credential=config.env_int(env, "QUEUE_MAX_PER_CREDENTIAL", 0, minimum=0) or None,
            ask_timeout=config.env_float(env, "DA_ASK_TIMEOUT", DEFAULT_ASK_TIMEOUT, minimum=10.0),
            budget_per_day=config.env_float(env, "DA_BUDGET_PER_DAY", 0.0) or None,
            disk_reserve_mb=config.env_int(env, "QUEUE_DISK_RESERVE_MB", DEFAULT_DISK_RESERVE_MB, minimum=0),
        )

    @property
    def database(self) -> str:
        """Which database this is, for logs and messages (never with a password)."""
        if self.db_url:
            return redact_url(self.db_url)
        return str(self.db_path)


def database_url(env: Mapping[str, str], name: str = "QUEUE_DB_URL") -> str | None:
    """The PostgreSQL URL in `env[name]` (QUEUE_DB_URL) if set, else a ConfigError that shows the form.

    libpq's multi-host form (`postgresql://u@h1:5432,h2:5432/da`) names a primary and its
    standbys; the queue writes, so such a URL always connects to whichever host is the primary
    (`target_session_attrs=read-write` is added when the URL does not say).
    """
    url = env.get(name, "").strip()
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not (parts.netloc or parts.query):
        raise ConfigError(f"{name}={redact_url(url)!r} is not a PostgreSQL URL; use the form "
                          "postgresql://user:password@host:5432/dbname, or for a primary with standbys "
                          "postgresql://user:password@host1:5432,host2:5432/dbname"
                          + (" (or unset it to use the SQLite file)." if name == "QUEUE_DB_URL" else "."))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    attrs = [value for key, value in query if key == "target_session_attrs"]
    hosts = parts.netloc.rpartition("@")[2].count(",") + sum(value.count(",") for key, value in query if key == "host")
    if hosts and not attrs:
        return f"{url}{'&' if parts.query else '?'}target_session_attrs=read-write"
    if hosts and attrs[-1] not in WRITABLE_SESSIONS:
        raise ConfigError(f"{name} names several hosts with target_session_attrs={attrs[-1]}, which may pick a "
                          "standby; the queue writes, so use target_session_attrs=read-write (or leave it out).")
    return url


def redact_url(url: str) -> str:
    """A database URL with its password (`user:password@` or `?password=`) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password and "password=" not in parts.query:
        return url
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        hidden = [(key, "***" if key == "password" else value) for key, value in query]
        parts = parts._replace(query=urllib.parse.urlencode(hidden, safe="*"))
    return urllib.parse.urlunsplit(parts)
