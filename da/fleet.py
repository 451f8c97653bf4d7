"""The fleet: machines, their capabilities, agents and aliases.

Declared in `config/machines.yaml` (read by the queue and workers) and reported with
liveness by the queue's `/v1/machines` (read by the front ends): one type for both. An online
worker also says what it offers each time it polls; routing goes by that (`runs`,
`runs_agents`), since it is what the worker will claim, whatever the file on the queue host says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from da.config import ConfigError, read_yaml

FLEET_FILE = "machines.yaml"


@dataclass(frozen=True)
class Delivery:
    """What to do with an agent task's branch when its payload does not say: push it, open a PR/MR."""

    push: bool | None = None
    pr: bool | None = None

    def over(self, fallback: Delivery) -> Delivery:
        """These settings, with the fallback's where these say nothing."""
        return Delivery(self.push if self.push is not None else fallback.push,
                        self.pr if self.pr is not None else fallback.pr)


@dataclass(frozen=True)
class ToolPolicy:
    """machines.yaml's `policy:` for supervised agents; None keeps the driver's default list."""

    allow: tuple[str, ...] | None = None
    ask: tuple[str, ...] | None = None
    refuse: tuple[str, ...] = ()


@dataclass(frozen=True)
class Machine:
    """One machine of the fleet; `names` is what a task may be pinned to."""

    name: str
    role: str = "worker"
    os: str = ""
    tailscale_ip: str = ""
    user: str = ""
    ssh_port: int = 22
    capabilities: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    # How many agent tasks it runs at once, each in its own worktree.
    max_parallel: int = 2
    # Delivery defaults (machines.yaml `push:`/`pr:`), and per repository path (`repos: {PATH: {pr: true}}`).
    delivery: Delivery = Delivery()
    repo_delivery: tuple[tuple[str, Delivery], ...] = ()
    # Liveness as the queue reports it; a machine read from machines.yaml has none yet.
    online: bool = False
    active: int = 0
    done: int = 0
    failed: int = 0
    top_agent: str | None = None
    # What its worker offered when it last polled (capabilities, agents); None when no worker said.
    offered: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    # The command that speaks ACP for an agent (`agents: {claude: {acp: "claude-agent-acp"}}`).
    acp: tuple[tuple[str, str], ...] = ()
    # Which tool kinds a supervised agent runs without asking, always asks about, or is refused.
    policy: ToolPolicy = field(default_factory=lambda: ToolPolicy())

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def delivery_for(self, repo: str | Path) -> Delivery:
        """The delivery defaults for a repository (its resolved top folder) on this machine."""
        resolved = os.path.realpath(repo)
        for path, delivery in self.repo_delivery:
            if os.path.realpath(os.path.expanduser(path)) == resolved:
                return delivery.over(self.delivery)
        return self.delivery

    @property
    def offering(self) -> bool:
        """An online worker said what it runs."""
        return self.online and self.offered is not None

    @property
    def runs(self) -> tuple[str, ...]:
        """The task types it takes: its online worker's offer, else what the fleet file declares."""
        return self.offered[0] if self.offering and self.offered else self.capabilities

    @property
    def runs_agents(self) -> tuple[str, ...]:
        """The agents it runs: its online worker's offer, else what the fleet file declares."""
        return self.offered[1] if self.offering and self.offered else self.agents

    @property
    def address(self) -> str:
        """Where to reach it over SSH: its Tailscale address, else its name."""
        return self.tailscale_ip or self.name

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Machine:
        """One entry of the queue's `/v1/machines` answer."""
        return cls(name=data["name"], role=data.get("role") or "worker", os=data.get("os") or "",
                   tailscale_ip=data.get("tailscale_ip") or "", user=data.get("user") or "",
                   ssh_port=int(data.get("ssh_port") or 22), capabilities=tuple(data.get("capabilities") or ()),
                   agents=tuple(data.get("agents") or ()), aliases=tuple(data.get("aliases") or ()),
                   online=bool(data.get("online")), active=int(data.get("active") or 0),
                   done=int(data.get("done") or 0), failed=int(data.get("failed") or 0),
                   top_agent=data.get("top_agent"), offered=_offer(data.get("offered")))

    def to_json(self) -> dict[str, Any]:
        """The declared part (the queue adds liveness to it)."""
        return {
            "name": self.name,
            "role": self.role,
            "os": self.os,
            "tailscale_ip": self.tailscale_ip,
            "user": self.user,
            "ssh_port": self.ssh_port,
            "capabilities": list(self.capabilities),
            "agents": list(self.agents),
            "aliases": list(self.aliases),
        }


@dataclass(frozen=True)
class Fleet:
    """All machines, looked up by name or alias."""

    machines: tuple[Machine, ...] = ()
    source: Path | None = None
    _by_name: dict[str, Machine] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for machine in self.machines:
            for name in machine.names:
                self._by_name.setdefault(name, machine)

    def find(self, name: str) -> Machine | None:
        """The machine called `name` or having it as an alias."""
        return self._by_name.get(name)

    def canonical(self, name: str) -> str:
        """The machine's own name for an alias; unknown names stay as they are."""
        machine = self._by_name.get(name)
        return machine.name if machine else name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(machine.name for machine in self.machines)

    def capable(self, task_type: str) -> list[Machine]:
        """The machines that run this task type (by their online worker's offer, else the file)."""
        return [machine for machine in self.machines if task_type in machine.runs]

    def with_agent(self, agent: str) -> list[Machine]:
        """The machines that run this agent (by their online worker's offer, else the file)."""
        return [machine for machine in self.machines if agent in machine.runs_agents]

    @classmethod
    def from_json(cls, entries: list[dict[str, Any]]) -> Fleet:
        """The queue's `/v1/machines` answer."""
        return cls(tuple(Machine.from_json(entry) for entry in entries))


def _offer(value: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if not isinstance(value, dict):
        return None
    return tuple(value.get("capabilities") or ()), tuple(value.get("agents") or ())


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where} must be a list of names, like [agent_run, run_script].")
    return tuple(value)


def _delivery(entry: dict[str, Any], where: str) -> Delivery:
    for key in ("push", "pr"):
        if key in entry and not isinstance(entry[key], bool):
            raise ConfigError(f"{where}.{key} must be true or false.")
    return Delivery(entry.get("push"), entry.get("pr"))


def _repo_delivery(value: Any, where: str) -> tuple[tuple[str, Delivery], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(path, str) and isinstance(entry, dict)
                                              for path, entry in value.items()):
        raise ConfigError(f"{where} must map a repository path to its settings, like ~/src/app: {{pr: true}}.")
    return tuple((path, _delivery(entry, f"{where}.{path}")) for path, entry in value.items())


def _agent_names(value: Any, where: str) -> tuple[str, ...]:
    """`agents:` as a list of names, or a mapping of name to its settings (`{claude: {acp: ...}}`)."""
    if isinstance(value, dict):
        return _string_list(list(value), where)
    return _string_list(value, where)


def _acp_commands(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    commands = []
    for agent, settings in value.items():
        if settings is None:
            continue
        if not isinstance(settings, dict) or not isinstance(settings.get("acp", ""), str):
            raise ConfigError(f"{where}.{agent} must be a mapping like {{acp: \"claude-agent-acp\"}}.")
        if settings.get("acp", "").strip():
            commands.append((str(agent), settings["acp"].strip()))
    return tuple(commands)


def _policy(value: Any, where: str) -> ToolPolicy:
    if value is None:
        return ToolPolicy()
    if not isinstance(value, dict) or set(value) - {"allow", "ask", "refuse"}:
        raise ConfigError(f"{where} must be a mapping with allow, ask and refuse lists of tool kinds "
                          "(read, search, think, execute, edit, delete, move, fetch, other).")
    return ToolPolicy(allow=_string_list(value["allow"], f"{where}.allow") if "allow" in value else None,
                      ask=_string_list(value["ask"], f"{where}.ask") if "ask" in value else None,
                      refuse=_string_list(value.get("refuse"), f"{where}.refuse"))


def parse_fleet(data: Any, source: str) -> Fleet:
    """Turn the YAML document into a Fleet, naming the first bad key."""
    if data is None:
        return Fleet()
    if not isinstance(data, dict) or not isinstance(data.get("machines", {}), dict):
        raise ConfigError(f"{source}: expected a top-level `machines:` mapping of name to settings.")
    machines = []
    seen: dict[str, str] = {}
    for name, entry in (data.get("machines") or {}).items():
        where = f"{source}: machines.{name}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with capabilities, agents and aliases.")
        for key in ("role", "os", "tailscale_ip", "user"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{where}.{key} must be a string.")
        parallel = entry.get("max_parallel", 2)
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 0 < parallel <= 64:
            raise ConfigError(f"{where}.max_parallel must be a whole number from 1 to 64.")
        port = entry.get("ssh_port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{where}.ssh_port must be a port number.")
        machine = Machine(
            name=str(name),
            role=entry.get("role", "worker"),
            os=entry.get("os", ""),
            tailscale_ip=entry.get("tailscale_ip", ""),
            user=entry.get("user", ""),
            ssh_port=port,
            capabilities=_string_list(entry.get("capabilities"), f"{where}.capabilities"),
            agents=_agent_names(entry.get("agents"), f"{where}.agents"),
            aliases=_string_list(entry.get("aliases"), f"{where}.aliases"),
            max_parallel=parallel,
            delivery=_delivery(entry, where),
            repo_delivery=_repo_delivery(entry.get("repos"), f"{where}.repos"),
            acp=_acp_commands(entry.get("agents"), f"{where}.agents"),
            policy=_policy(entry.get("policy"), f"{where}.policy"),
        )
        for alias in machine.names:
            if alias in seen:
                raise ConfigError(f"{where}: the name {alias!r} is already used by machine {seen[alias]!r}.")
            seen[alias] = machine.name
        machines.append(machine)
    return Fleet(tuple(machines))


def load_fleet(config_dir: Path, *, required: bool = False) -> Fleet:
    """Read `machines.yaml` from the config folder; a missing file is an empty fleet unless required."""
    path = config_dir / FLEET_FILE
    if not path.is_file():
        if required:
            raise ConfigError(
                f"{path} not found; copy config/machines.yaml.example to it or set DA_CONFIG_DIR."
            )
        return Fleet(source=path)
    fleet = parse_fleet(read_yaml(path), str(path))
    return Fleet(fleet.machines, source=path)
