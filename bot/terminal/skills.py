"""What the `skills` verbs do with the registry (config/skills.yaml) over SSH.

SSH uses asyncssh with the user's keys and known_hosts; host keys are always checked.
Machines are checked in parallel, each bounded by a timeout, so one asleep laptop never
stalls the answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import yaml

from da import config
from da import fleet as fleet_module
from da.bot import views
from da.bot.commands import Ask, Emit
from da.bot.grammar import Command
from da.config import ConfigError
from da.fleet import Fleet, Machine
from da.skills import CATEGORIES, SKILLS_FILE, Skill, load_registry

OSES = ("macos", "linux")
# Long enough for a Tailscale handshake to a sleeping peer, short enough to keep `skills` snappy.
SSH_TIMEOUT = 10.0
SKILL_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
CAPABILITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$")


@dataclass(frozen=True)
class SshOptions:
    """How to reach machines: known_hosts and key files (None means asyncssh's defaults)."""

    known_hosts: str | None = None
    client_keys: tuple[str, ...] | None = None
    timeout: float = SSH_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SshOptions:
        keys = tuple(k for k in env.get("DA_SSH_KEY", "").split(",") if k) or None
        return cls(env.get("DA_SSH_KNOWN_HOSTS") or None, keys)

    def connect_kwargs(self, machine: Machine) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": machine.address, "port": machine.ssh_port}
        if machine.user:
            kwargs["username"] = machine.user
        if self.known_hosts:
            kwargs["known_hosts"] = self.known_hosts
        if self.client_keys:
            kwargs["client_keys"] = list(self.client_keys)
        return kwargs


def ssh_failure(exc: BaseException) -> str:
    """One word or phrase for a machine we could not check."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return "host key mismatch"
    if isinstance(exc, asyncssh.PermissionDenied):
        return "ssh refused"
    if isinstance(exc, TimeoutError):
        return "unreachable (timeout)"
    return "unreachable"


class SkillsService:
    """`skills available|list|install|add|create`."""

    def __init__(self, registry_path: Path, machines_path: Path, handlers_dir: Path, ssh: SshOptions) -> None:
        self.registry_path = registry_path
        self.machines_path = machines_path
        self.handlers_dir = handlers_dir
        self.ssh = ssh

    @classmethod
    def from_config(cls, config_dir: Path, env: Mapping[str, str]) -> SkillsService:
        from da import handlers

        extra = config.handlers_path(env)
        handlers_dir = extra[0] if extra else Path(next(iter(handlers.__path__)))
        return cls(config_dir / SKILLS_FILE, config_dir / fleet_module.FLEET_FILE, handlers_dir,
                   SshOptions.from_env(env))

    @property
    def registry(self) -> dict[str, Skill]:
        return load_registry(self.registry_path)

    async def run(self, command: Command, fleet: Fleet, *, emit: Emit | None = None,
                  ask: Ask | None = None) -> views.View:
        sub, args = command.words[0], command.words[1:]
        try:
            if sub == "available":
                category = command.options.get("category")
                if category and category not in CATEGORIES:
                    return views.Message(f"unknown category {category!r}; use {', '.join(CATEGORIES)}.", ok=False)
                workers = [m for m in fleet.machines if m.role != "orchestrator"]
                return await self.available(workers, category)
            machine = fleet.find(args[0]) if sub in ("list", "install", "add") else None
            if sub in ("list", "install", "add") and machine is None:
                known = ", ".join(m.name for m in fleet.machines) or "none"
                return views.Message(f"unknown machine {args[0]!r}; known machines: {known}.", ok=False)
            if sub == "list":
                assert machine is not None
                return await self.available([machine], None)
            if sub == "install":
                assert machine is not None
                return await self.install(machine, args[1], emit or print)
            if sub == "add":
                assert machine is not None
                return self.add(machine.name, args[1])
            if sub == "create":
                if ask is None:
                    return views.Message("skills create asks questions; run it in the terminal client.", ok=False)
                return await self.create(args[0], ask)
        except ConfigError as exc:
            return views.Message(str(exc), ok=False)
        except yaml.YAMLError as exc:
            return views.Message(f"{self.machines_path} is not plain YAML ({type(exc).__name__}); fix it first.",
                                 ok=False)
        return views.Message(f"unknown skills command {sub!r}.", ok=False)

    async def check_machine(self, machine: Machine, skills: list[Skill]) -> dict[str, str]:
        """installed / missing per skill on one machine, or the reason it could not be checked."""
        async def check_all() -> dict[str, str]:
            async with asyncssh.connect(**self.ssh.connect_kwargs(machine)) as conn:
                found = {}
                for skill in skills:
                    result = await conn.run(skill.check, check=False)
                    found[skill.name] = "installed" if result.exit_status == 0 else "missing"
                return found

        try:
            return await asyncio.wait_for(check_all(), self.ssh.timeout)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            reason = ssh_failure(exc)
            return {skill.name: reason for skill in skills}

    async def available(self, machines: list[Machine], category: str | None) -> views.SkillsAvailable:
        skills = [s for s in self.registry.values() if category is None or s.category == category]
        results = await asyncio.gather(*(self.check_machine(m, skills) for m in machines))
        rows = tuple(views.SkillRow(s.name, s.category, s.description,
                                    {m.name: result[s.name] for m, result in zip(machines, results, strict=True)})
                     for s in skills)
        return views.SkillsAvailable(rows, tuple(m.name for m in machines))

    async def install(self, machine: Machine, name: str, emit: Emit) -> views.Message:
        """Run the skill's install recipe for the machine's os, streaming its output."""
        skill = self.registry.get(name)
        if skill is None:
            return views.Message(f"unknown skill {name!r}; see `skills available`.", ok=False)
        recipe = skill.install.get(machine.os)
        if not recipe:
            oses = ", ".join(skill.install) or "no os"
            return views.Message(f"{name} has no install recipe for {machine.os or 'an unknown os'} "
                                 f"({machine.name}); it has recipes for {oses}.", ok=False)
        emit(f"$ {recipe}   # on {machine.name}")
        try:
            async with asyncssh.connect(**self.ssh.connect_kwargs(machine)) as conn, \
                    conn.create_process(recipe, stderr=asyncssh.STDOUT) as process:
                async for line in process.stdout:
                    if line:
                        emit(line.rstrip("\n"))
                await process.wait()
                status = process.exit_status
        except (OSError, asyncssh.Error) as exc:
            return views.Message(f"cannot reach {machine.name} over ssh: {ssh_failure(exc)}.", ok=False)
        if status != 0:
            return views.Message(f"installing {name} on {machine.name} failed (exit {status}).", ok=False)
        return views.Message(f"installed {name} on {machine.name}.")

    def add(self, machine: str, capability: str) -> views.Message:
        """Add a capability to the machine's entry, keeping the rest of machines.yaml as it was."""
        if not CAPABILITY.match(capability):
            return views.Message(f"{capability!r} is not a capability name (letters, digits, _ . -).", ok=False)
        if not self.machines_path.is_file():
            return views.Message(f"{self.machines_path} not found; create it from machines.yaml.example.", ok=False)
        text = self.machines_path.read_text(encoding="utf-8")
        current = fleet_module.parse_fleet(yaml.safe_load(text), str(self.machines_path)).find(machine)
        if current is None:
            return views.Message(f"{machine} is not declared in {self.machines_path}.", ok=False)
        if capability in current.capabilities:
            return views.Message(f"{machine} already has {capability}.")
        edited = add_capability(text, current.name, capability)
        check = fleet_module.parse_fleet(yaml.safe_load(edited), str(self.machines_path)).find(current.name)
        if check is None or capability not in check.capabilities:
            return views.Message(f"could not edit {self.machines_path} safely; add {capability} by hand.", ok=False)
        self.machines_path.write_text(edited, encoding="utf-8")
        return views.Message(f"added {capability} to {machine}; restart its worker to take it.")

    async def create(self, name: str, ask: Ask) -> views.Message:
        """Ask for the skill's details, write a handler skeleton and register the skill."""
        if not SKILL_NAME.match(name):
            return views.Message(f"{name!r} is not a skill name: use lowercase letters, digits and _ "
                                 "(2-41 characters, starting with a letter).", ok=False)
        if name in self.registry:
            return views.Message(f"a skill named {name} already exists in {self.registry_path}.", ok=False)
        handler_path = self.handlers_dir / f"{name}.py"
        if handler_path.exists():
            return views.Message(f"{handler_path} already exists; pick another name.", ok=False)
        description = (await ask("description: ")).strip() or name
        category = (await ask(f"category ({'/'.join(CATEGORIES)}): ")).strip() or "infrastructure"
        if category not in CATEGORIES:
            return views.Message(f"unknown category {category!r}; use {', '.join(CATEGORIES)}.", ok=False)
        check = (await ask("check command (exits 0 when installed): ")).strip() or "true"
        install = {os_name: (await ask(f"install on {os_name} (empty for none): ")).strip() for os_name in OSES}
        task_type = (await ask(f"task type [{name}]: ")).strip() or name
        if not SKILL_NAME.match(task_type):
            return views.Message(f"{task_type!r} is not a task type name.", ok=False)
        handler_path.parent.mkdir(parents=True, exist_ok=True)
        handler_path.write_text(HANDLER_SKELETON.format(name=name, type=task_type, description=description,
                                                        check=check), encoding="utf-8")
        entry = {name: {"category": category, "description": description, "check": check,
                        "install": {k: v for k, v in install.items() if v}, "task_types": [task_type],
                        "handler": task_type}}
        block = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False)
        indented = "".join(f"  {line}\n" for line in block.splitlines())
        existing = self.registry_path.read_text(encoding="utf-8") if self.registry_path.exists() else "skills:\n"
        self.registry_path.write_text(existing.rstrip("\n") + "\n" + indented, encoding="utf-8")
        load_registry(self.registry_path)
        return views.Message(f"created skill {name}: handler {handler_path} (task type {task_type}), "
                             f"registered in {self.registry_path}. Add {task_type} to a machine with "
                             f"`skills add <machine> {task_type}` and restart its worker.")


def add_capability(text: str, machine: str, capability: str) -> str:
    """Insert a capability into one machine's list, touching no other line."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf"^(\s+){re.escape(machine)}:\s*(#.*)?$", line)),
                 None)
    if start is None:
        return text
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].lstrip().startswith("#")
                                or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    for i in range(start + 1, end):
        match = re.match(r"^(\s+)capabilities:(\s*)(.*?)(\s*#.*)?$", lines[i].rstrip("\n"))
        if not match:
            continue
        key_indent, value, comment = match.group(1), match.group(3), match.group(4) or ""
        newline = "\n" if lines[i].endswith("\n") else ""
        if value.startswith("[") and value.endswith("]"):
            inner = value[1:-1].strip()
            items = f"{inner}, {capability}" if inner else capability
            lines[i] = f"{key_indent}capabilities:{match.group(2)}[{items}]{comment}{newline}"
            return "".join(lines)
        if value == "":
            item_at = i + 1
            last = i
            while item_at < end and (re.match(r"^\s+-\s", lines[item_at]) or not lines[item_at].strip()):
                if lines[item_at].strip():
                    last = item_at
                item_at += 1
            bullet = re.match(r"^(\s+)-", lines[last]) if last != i else None
            item_indent = bullet.group(1) if bullet else key_indent + "  "
            lines.insert(last + 1, f"{item_indent}- {capability}\n")
            return "".join(lines)
        return text
    child_indent = " " * (indent + 2)
    lines.insert(start + 1, f"{child_indent}capabilities: [{capability}]\n")
    return "".join(lines)


HANDLER_SKELETON = '''"""{description} (created by `da skills create {name}`)."""

from __future__ import annotations

import shlex
from typing import Any

from da.handlers.api import Context, Result, text_field, timeout_field

TYPE = "{type}"
# Change to True only if running this twice after a lost worker is harmless.
SAFE_TO_RETRY = False
DEFAULT_TIMEOUT = 600.0
DEFAULT_COMMAND = {check!r}


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    cwd = ctx.check_cwd(text_field(payload, "cwd"))
    argv = shlex.split(text_field(payload, "command") or DEFAULT_COMMAND)
    process = await ctx.run(argv, cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT))
    return ctx.classify(process, tool=argv[0])
'''
