"""Settings both front ends share (where the queue is, its credential, the router), parsed once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from da import config


@dataclass(frozen=True)
class ClientSettings:
    """What the terminal client needs: where the queue is, its credential (DA_TOKEN or SECRET_KEY), the router."""

    queue_urls: tuple[str, ...]
    # The credential sent to the queue: a client token (DA_TOKEN), or the admin secret (SECRET_KEY).
    secret: str
    router: str = "rules"
    config_dir: Path = Path("config")
    user: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None) -> ClientSettings:
        return cls(config.queue_urls(env), config.credential(env, "client"), env.get("ROUTER", "rules") or "rules",
                   config.config_dir(env, cwd), env.get("USER", "") or env.get("LOGNAME", ""))
