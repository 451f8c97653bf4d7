"""Where configuration comes from: the process environment, a `.env` file and the config folder.

Every process calls `load_environment()` once in `main()` and passes the result down, so
nothing deep in the code reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and how to fix it."""


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env` file of KEY=VALUE lines (comments, blank lines, quotes and `export` allowed)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()[:60]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_environment(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The effective settings: `.env` in the working directory, overridden by the real environment; without a
    SECRET_KEY in either, the one `da up` generated into this user's `secret_file`."""
    cwd = cwd or Path.cwd()
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    env_file = cwd / ".env"
    if env_file.is_file():
        merged.update(read_env_file(env_file))
    merged.update(environ)
    generated = secret_file(merged)
    if not merged.get("SECRET_KEY") and generated is not None and generated.is_file():
        merged["SECRET_KEY"] = generated.read_text(encoding="utf-8").strip()
    return merged


def secret_file(env: Mapping[str, str]) -> Path | None:
    """Where `da up` keeps the SECRET_KEY it generated: in this user's config folder, not in the folder the
    local worker runs tasks in (None without HOME or XDG_CONFIG_HOME)."""
    base = env.get("XDG_CONFIG_HOME", "").strip() or (f"{env['HOME']}/.config" if env.get("HOME", "").strip() else "")
    return Path(base).expanduser() / "da" / "secret" if base else None


def config_dir(env: Mapping[str, str], cwd: Path | None = None) -> Path:
    """`DA_CONFIG_DIR` when set, else `./config` in the working directory."""
    if env.get("DA_CONFIG_DIR"):
        return Path(env["DA_CONFIG_DIR"]).expanduser()
    return (cwd or Path.cwd()) / "config"


def read_yaml(path: Path) -> Any:
    """A YAML file with safe_load (no tags run code), or one line naming the file and line."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the file (or restore it from its example).") from exc


def env_int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Read an integer setting, naming the variable when it is not a number in range."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a whole number; set it to e.g. {default}.") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        raise ConfigError(f"{key}={value} is out of range; use a value between {minimum}{upper}.")
    return value


def env_float(env: Mapping[str, str], key: str, default: float, *, minimum: float = 0.0) -> float:
    """Read a number of seconds, naming the variable when it is not a positive number."""
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number; set it to e.g. {default}.") from None
    if value < minimum:
        raise ConfigError(f"{key}={value} is too small; use at least {minimum}.")
    return value


def env_flag(env: Mapping[str, str], key: str, default: bool = False) -> bool:
    """An on/off setting (1/true/yes/on or 0/false/no/off), naming the variable when it is neither."""
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key}={raw!r} is not on or off; set it to 1 or 0.")


def env_list(env: Mapping[str, str], key: str) -> list[str]:
    """A comma-separated setting as a list, blanks dropped."""
    return [item.strip() for item in env.get(key, "").split(",") if item.strip()]


# Where `da up` and `da serve` listen by default, so a client on the same machine finds them.
DEFAULT_QUEUE_URL = "http://127.0.0.1:8000"


def queue_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """`QUEUE_URLS` or `QUEUE_URL` (comma-separated, tried in order), each checked as an http(s) URL."""
    from urllib.parse import urlsplit

    key = "QUEUE_URLS" if env.get("QUEUE_URLS", "").strip() else "QUEUE_URL"
    urls = tuple(env_list(env, key)) or (local_queue_url(env),)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key} entry {url!r} must be an http:// or https:// URL, like {DEFAULT_QUEUE_URL}.")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ConfigError(f"{key} entry {url!r} has an invalid port; use a number from 1 to 65535, "
                              f"like {DEFAULT_QUEUE_URL}.")
    return urls


# The placeholder in config/env.example: a queue started with it would accept a secret anyone can read.
EXAMPLE_SECRET_PREFIX = "change-me"
MAKE_A_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def refuse_example_secret(env: Mapping[str, str]) -> None:
    """Stop a queue service whose SECRET_KEY is still env.example's placeholder, saying how to make a real one."""
    if env.get("SECRET_KEY", "").strip().lower().startswith(EXAMPLE_SECRET_PREFIX):
        raise ConfigError(f"SECRET_KEY is still the example from config/env.example; put a real one in .env "
                          f"(make it with `{MAKE_A_SECRET}`).")


def local_queue_url(env: Mapping[str, str]) -> str:
    """Without QUEUE_URL: the queue this machine serves (QUEUE_HOST and QUEUE_PORT, as in its .env), so `da token`
    and the terminal on the queue host find it on a port other than the default."""
    host = env.get("QUEUE_HOST", "").strip() or "127.0.0.1"
    if not env.get("QUEUE_PORT", "").strip():
        return DEFAULT_QUEUE_URL
    port = env_int(env, "QUEUE_PORT", 8000, minimum=1, maximum=65535)
    # Listening on every address: this machine reaches it on loopback.
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def credential(env: Mapping[str, str], kind: str) -> str:
    """What this machine sends the queue: its scoped token (DA_TOKEN), else the admin secret (SECRET_KEY).

    `kind` (worker or client) only shapes the message that says how to get a token.
    """
    value = env.get("DA_TOKEN", "").strip() or env.get("SECRET_KEY", "").strip()
    if not value:
        example = "worker $MACHINE_NAME" if kind == "worker" else f"{kind} NAME"
        raise ConfigError(f"DA_TOKEN is not set; put this machine's {kind} token in .env (make one on the queue host "
                          f"with `da token create {example}`), or SECRET_KEY (the admin secret) on the queue host.")
    return value


def handlers_path(env: Mapping[str, str]) -> tuple[Path, ...]:
    """Extra handler folders from `DA_HANDLERS_PATH`, separated like PATH (`:`, or `;` on Windows)."""
    return tuple(Path(part).expanduser() for part in env.get("DA_HANDLERS_PATH", "").split(os.pathsep) if part.strip())
