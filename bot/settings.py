"""Settings of the front ends (terminal client and Slack bot), parsed once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from da import config
from da.config import ConfigError

DEFAULT_QUEUE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientSettings:
    """What the terminal client needs: where the queue is, its secret, and the router."""

    queue_urls: tuple[str, ...]
    secret: str
    router: str = "rules"
    config_dir: Path = Path("config")
    user: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None) -> ClientSettings:
        secret = env.get("SECRET_KEY", "")
        if not secret:
            raise ConfigError("SECRET_KEY is not set; put the queue's secret in .env (see config/env.example).")
        urls = tuple(config.env_list(env, "QUEUE_URL") or [DEFAULT_QUEUE_URL])
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"QUEUE_URL entry {url!r} must start with http:// or https://.")
        return cls(urls, secret, env.get("ROUTER", "rules") or "rules", config.config_dir(env, cwd),
                   env.get("USER", "") or env.get("LOGNAME", ""))
