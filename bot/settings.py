"""Settings both front ends share (where the queue is, its secret, the router), parsed once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from da import config
from da.config import ConfigError


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
        return cls(config.queue_urls(env), secret, env.get("ROUTER", "rules") or "rules", config.config_dir(env, cwd),
                   env.get("USER", "") or env.get("LOGNAME", ""))
