"""Settings of a worker, from `.env` and this machine's entry in `config/machines.yaml`.

What the machine runs (capabilities, agents, aliases) comes from the first of: WORKER_* in the
environment, its entry in the machines.yaml beside it, its entry in the queue host's fleet file
(asked with its own credential), or what it can run as it is (every handler, the agents on PATH).
So a worker with only DA_TOKEN, MACHINE_NAME and QUEUE_URL starts, and says which it used.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from da import agents as agents_module
from da import config, fleet
from da.agents import DEFAULT_COMMANDS, AgentCommand, load_commands
from da.config import ConfigError
from da.worker import agent_session, output, workspace
from da.worker.redact import Redactor
from da.worker.workspace import WorkspaceSettings

DEFAULT_MAX_CONCURRENT = 2
DEFAULT_SHUTDOWN_GRACE = 30.0
# A claim waits this long for work before asking again; well under proxies' idle limits.
DEFAULT_POLL_WAIT = 30.0
# A credential the queue refuses this long is not coming back by itself (revoked, mistyped): stop.
DEFAULT_GIVE_UP_AFTER = 300.0
DEFAULT_LOG_DIR = "data/logs"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"
GROQ_MODEL = "llama-3.3-70b-versatile"
# Variables the worker needs but the processes it runs must not see.
PRIVATE_VARIABLES = ("DA_TOKEN", "SECRET_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
                     "QUEUE_DB_URL")


# Where a worker's capabilities and agents came from, as its start line says.
FROM_ENV = "WORKER_CAPABILITIES in the environment"
FROM_LOCAL_FILE = "machines.yaml on this machine"
FROM_QUEUE = "the queue host's fleet file"
DETECTED = "detected on this machine: every handler, and the agent CLIs on PATH"


@dataclass(frozen=True)
class Declaration:
    """What a machine runs when neither WORKER_CAPABILITIES nor the machines.yaml beside it says."""

    capabilities: tuple[str, ...]
    agents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    source: str = DETECTED


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
    # Where the capabilities and agents came from (one of FROM_ENV, FROM_LOCAL_FILE, FROM_QUEUE, DETECTED).
    source: str = FROM_LOCAL_FILE
    # Which setting holds the credential and where, for the line that says it was refused.
    credential_source: str = "DA_TOKEN"
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    # Supervised agents: machines.yaml's ACP commands and tool policy, DA_ASK_TIMEOUT, DA_BUDGET_PER_TASK.
    acp_commands: dict[str, str] = field(default_factory=dict)
    policy: agent_session.Policy = field(default_factory=agent_session.Policy)
    ask_timeout: float = agent_session.DEFAULT_ASK_TIMEOUT
    budget_per_task: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cwd: Path | None = None, default_capabilities: tuple[str, ...] = (),
                 secret: str | None = None, declaration: Declaration | None = None) -> WorkerSettings:
        """Resolve the machine from MACHINE_NAME and machines.yaml; env lists override the file.

        The credential is DA_TOKEN, else SECRET_KEY, unless `secret` is given. Without an entry in
        machines.yaml, `declaration` (see `declare`) or `default_capabilities` say what it runs.
        """
        key = "SECRET_KEY" if secret or not env.get("DA_TOKEN", "").strip() else "DA_TOKEN"
        secret = secret or config.credential(env, "worker")
        env_file = (cwd or Path.cwd()) / ".env"
        config_dir = config.config_dir(env, cwd)
        roster = fleet.load_fleet(config_dir)
        name = env.get("MACHINE_NAME", "").strip()
        if not name:
            raise ConfigError("MACHINE_NAME is not set; set it to this machine's name in the queue host's "
                              "config/machines.yaml (the name its worker token was made for).")
        machine = roster.find(name)
        overrides = {key: tuple(config.env_list(env, key)) for key in
                     ("WORKER_CAPABILITIES", "WORKER_AGENTS", "WORKER_ALIASES")}
        if machine is None and declaration is None and default_capabilities:
            declaration = Declaration(default_capabilities)
        if machine is None and not overrides["WORKER_CAPABILITIES"] and declaration is None:
            known = ", ".join(m.name for m in roster.machines) or "none"
            raise ConfigError(f"MACHINE_NAME={name!r} is not in {roster.source or config_dir / 'machines.yaml'} "
                              f"(known: {known}); add it there or set WORKER_CAPABILITIES.")
        entry = machine or declaration or Declaration(())
        lease = env.get("WORKER_LEASE", "").strip()
        process_env = {k: v for k, v in env.items() if k not in PRIVATE_VARIABLES}
        return cls(
            machine=machine.name if machine else name,
            secret=secret,
            queue_urls=config.queue_urls(env),
            capabilities=workspace.with_delivery(overrides["WORKER_CAPABILITIES"] or entry.capabilities),
            agents=overrides["WORKER_AGENTS"] or entry.agents,
            aliases=overrides["WORKER_ALIASES"] or entry.aliases,
            source=(FROM_ENV if overrides["WORKER_CAPABILITIES"] else FROM_LOCAL_FILE if machine
                    else declaration.source if declaration else DETECTED),
            credential_source=f"{key} in {env_file}" if env_file.is_file() else f"{key} in the environment",
            give_up_after=config.env_float(env, "WORKER_GIVE_UP_AFTER", DEFAULT_GIVE_UP_AFTER, minimum=1.0),
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
            acp_commands=dict(machine.acp) if machine else {},
            policy=tool_policy(machine.policy if machine else fleet.ToolPolicy()),
            ask_timeout=config.env_float(env, "DA_ASK_TIMEOUT", agent_session.DEFAULT_ASK_TIMEOUT, minimum=1.0),
            budget_per_task=config.env_float(env, "DA_BUDGET_PER_TASK", 0.0) or None,
        )


def tool_policy(declared: fleet.ToolPolicy) -> agent_session.Policy:
    """The driver's policy from machines.yaml's `policy:`; a list it leaves out keeps the default."""
    return agent_session.Policy(
        allow=frozenset(declared.allow) if declared.allow is not None else agent_session.DEFAULT_ALLOWED,
        ask=frozenset(declared.ask) if declared.ask is not None else agent_session.DEFAULT_ASKED,
        refuse=frozenset(declared.refuse))


def task_log_dir(env: Mapping[str, str]) -> Path:
    """Where task logs go (DA_LOG_DIR): read by the worker, and by `da prune` on the same machine."""
    return Path(env.get("DA_LOG_DIR") or DEFAULT_LOG_DIR).expanduser()


def default_machine_name() -> str:
    return socket.gethostname().split(".")[0] or "local"


async def resolve(env: Mapping[str, str], handler_types: Iterable[str], cwd: Path | None = None) -> WorkerSettings:
    """The settings `da worker` runs with, and `da doctor` reports: the queue is asked only when nothing here
    says what this machine runs."""
    declaration = await declare(env, handler_types) if needs_declaration(env, cwd) else None
    return WorkerSettings.from_env(env, cwd=cwd, declaration=declaration)


def local(env: Mapping[str, str], handler_types: Iterable[str]) -> WorkerSettings:
    """`da up`'s worker: beside the queue (which swaps the admin secret here for a worker token it makes once
    its store is open, whatever DA_TOKEN holds for the terminal), named after this host unless MACHINE_NAME
    says, running what it can unless machines.yaml says."""
    env = {"MACHINE_NAME": default_machine_name(), **{k: v for k, v in env.items() if v}}
    return WorkerSettings.from_env(env, declaration=detected(env, handler_types), secret=env.get("SECRET_KEY"))


def needs_declaration(env: Mapping[str, str], cwd: Path | None = None) -> bool:
    """Whether a named machine has neither WORKER_CAPABILITIES nor an entry in the machines.yaml beside it."""
    name = env.get("MACHINE_NAME", "").strip()
    if not name or config.env_list(env, "WORKER_CAPABILITIES"):
        return False
    return fleet.load_fleet(config.config_dir(env, cwd)).find(name) is None


def detected(env: Mapping[str, str], handler_types: Iterable[str]) -> Declaration:
    """What this machine can run as it is, as `da up` runs: every handler, and the agents it finds."""
    return Declaration(tuple(sorted(handler_types)), tuple(agents_module.local_agents(env)))


async def declare(env: Mapping[str, str], handler_types: Iterable[str]) -> Declaration:
    """This machine's entry in the queue host's fleet file when it has one, else what it can run here.

    Asked with the machine's own credential: a worker token's `whoami` carries its entry; the admin
    secret reads the fleet. A queue that does not answer leaves the detected defaults (and says so).
    """
    from da.queue.client import QueueClient
    from da.queue.errors import QueueError

    name = env.get("MACHINE_NAME", "").strip()
    try:
        async with QueueClient(list(config.queue_urls(env)), config.credential(env, "worker"), rounds=1) as client:
            me = await client.whoami()
            entry = me.get("declared")
            if entry is None and me.get("kind") == "admin":
                entry = next((m for m in await client.machines() if m.get("declared", True)
                              and name in (m["name"], *m.get("aliases", []))), None)
    except QueueError as exc:
        found = detected(env, handler_types)
        return Declaration(found.capabilities, found.agents, source=f"{DETECTED} (the queue did not say: "
                                                                    f"{exc.detail})")
    if not entry:
        return detected(env, handler_types)
    return Declaration(tuple(entry.get("capabilities", ())), tuple(entry.get("agents", ())),
                       tuple(entry.get("aliases", ())), FROM_QUEUE)
