"""Settings of a worker, from `.env` and this machine's entry in `config/machines.yaml`."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from da import config, fleet
from da.agents import DEFAULT_COMMANDS, AgentCommand, load_commands
from da.config import ConfigError
from da.worker import output
from da.worker.redact import Redactor
from da.worker.workspace import WorkspaceSettings

DEFAULT_MAX_CONCURRENT = 2
DEFAULT_SHUTDOWN_GRACE = 30.0
# A claim waits this long for work before asking again; well under proxies' idle limits.
DEFAULT_POLL_WAIT = 30.0
DEFAULT_LOG_DIR = "data/logs"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"
GROQ_MODEL = "llama-3.3-70b-versatile"
# Variables the worker needs but the processes it runs must not see.
PRIVATE_VARIABLES = ("DA_TOKEN", "SECRET_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
                     "QUEUE_DB_URL")


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker needs, resolved at start."""

    machine: str
    # The credential sent to the queue: this machine's worker token (DA_TOKEN), or the admin secret.
    secret: str
    queue_urls: tuple[str, ...] = (config.DEFAULT_QUEUE_URL,)
    capabilities: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    # Agent tasks at once (machines.yaml `max_parallel`); each runs in its own worktree.
    max_parallel: int = DEFAULT_MAX_CONCURRENT
    workspaces: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    poll_wait: float = DEFAULT_POLL_WAIT
    lease: float | None = None
    log_dir: Path = Path(DEFAULT_LOG_DIR)
    log_max_bytes: int = output.DEFAULT_LOG_MAX_BYTES
    handlers_path: tuple[Path, ...] = ()
    agent_commands: dict[str, AgentCommand] = field(default_factory=lambda: dict(DEFAULT_COMMANDS))
    process_env: dict[str, str] = field(default_factory=dict, repr=False)
    extra: dict[str, str] = field(default_factory=dict, repr=False)
    redactor: Redactor = field(default_factory=lambda: Redactor(()), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None, default_capabilities: tuple[str, ...] = (),
                 secret: str | None = None) -> WorkerSettings:
        """Resolve the machine from MACHINE_NAME and machines.yaml; env lists override the file.

        The credential is DA_TOKEN, else SECRET_KEY, unless `secret` is given.
        """
        secret = secret or config.credential(env, "worker")
        config_dir = config.config_dir(env, cwd)
        roster = fleet.load_fleet(config_dir)
        name = env.get("MACHINE_NAME", "").strip()
        if not name:
            raise ConfigError("MACHINE_NAME is not set; set it to this machine's name in config/machines.yaml.")
        machine = roster.find(name)
        overrides = {key: tuple(config.env_list(env, key)) for key in
                     ("WORKER_CAPABILITIES", "WORKER_AGENTS", "WORKER_ALIASES")}
        if machine is None and not overrides["WORKER_CAPABILITIES"] and not default_capabilities:
            known = ", ".join(m.name for m in roster.machines) or "none"
            raise ConfigError(f"MACHINE_NAME={name!r} is not in {roster.source or config_dir / 'machines.yaml'} "
                              f"(known: {known}); add it there or set WORKER_CAPABILITIES.")
        lease = env.get("WORKER_LEASE", "").strip()
        process_env = {k: v for k, v in env.items() if k not in PRIVATE_VARIABLES}
        return cls(
            machine=machine.name if machine else name,
            secret=secret,
            queue_urls=config.queue_urls(env),
            capabilities=(overrides["WORKER_CAPABILITIES"]
                          or (machine.capabilities if machine else default_capabilities)),
            agents=overrides["WORKER_AGENTS"] or (machine.agents if machine else ()),
            aliases=overrides["WORKER_ALIASES"] or (machine.aliases if machine else ()),
            max_concurrent=config.env_int(env, "MAX_CONCURRENT", DEFAULT_MAX_CONCURRENT, minimum=1, maximum=64),
            max_parallel=config.env_int(env, "WORKER_MAX_PARALLEL", machine.max_parallel if machine
                                        else DEFAULT_MAX_CONCURRENT, minimum=1, maximum=64),
            workspaces=WorkspaceSettings.from_env(process_env, machine),
            shutdown_grace=config.env_float(env, "SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE),
            poll_wait=min(config.env_float(env, "WORKER_POLL_WAIT", DEFAULT_POLL_WAIT), 60.0),
            lease=config.env_float(env, "WORKER_LEASE", 60.0, minimum=1.0) if lease else None,
            log_dir=task_log_dir(env),
            log_max_bytes=config.env_int(env, "DA_LOG_MAX_BYTES", output.DEFAULT_LOG_MAX_BYTES,
                                         minimum=output.MIN_LOG_MAX_BYTES),
            handlers_path=config.handlers_path(env),
            agent_commands=load_commands(config_dir),
            process_env=process_env,
            extra={"GROQ_API_KEY": env.get("GROQ_API_KEY", ""),
                   "GROQ_BASE_URL": env.get("GROQ_BASE_URL", GROQ_BASE_URL),
                   "GROQ_MODEL": env.get("GROQ_MODEL", GROQ_MODEL)},
            redactor=Redactor.from_env(env),
        )


def task_log_dir(env: Mapping[str, str]) -> Path:
    """Where task logs go (DA_LOG_DIR): read by the worker, and by `da prune` on the same machine."""
    return Path(env.get("DA_LOG_DIR") or DEFAULT_LOG_DIR).expanduser()


def default_machine_name() -> str:
    return socket.gethostname().split(".")[0] or "local"
