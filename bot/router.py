"""Choosing where work goes: a rules router that always answers, an LLM router that may,
and the validation every assign passes whatever the front end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Protocol

# Types the rules can produce; any machine capability is a valid type too.
BUILTIN_TYPES = ("agent_run", "run_script", "git_pull", "npm_build", "test_run", "lint", "ios_build",
                 "android_build")
KNOWN_AGENTS = ("claude", "gemini", "codex", "groq")
# Checked in order: the first matching rule wins.
TYPE_RULES: tuple[tuple[str, str], ...] = (
    (r"\b(ios|xcode|swift|swiftui|testflight)\b", "ios_build"),
    (r"\b(android|gradle|apk|kotlin)\b", "android_build"),
    (r"\blint(ing|er)?\b", "lint"),
    (r"\btests?\b", "test_run"),
    (r"\bpull\b", "git_pull"),
    (r"(?=.*\bbuild\b)(?=.*\bnpm\b)", "npm_build"),
    (r"\b(deploy|script)\b", "run_script"),
)
# The LLM router gets this long before the rules answer instead.
LLM_TIMEOUT = 10.0


@dataclass(frozen=True)
class MachineInfo:
    """One machine as the front ends see it: declared abilities plus liveness."""

    name: str
    capabilities: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    os: str = ""
    online: bool = False
    active: int = 0
    done: int = 0
    failed: int = 0
    top_agent: str | None = None
    address: str = ""
    user: str = ""
    ssh_port: int = 22
    role: str = "worker"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineInfo:
        return cls(name=data["name"], capabilities=tuple(data.get("capabilities") or ()),
                   agents=tuple(data.get("agents") or ()), aliases=tuple(data.get("aliases") or ()),
                   os=data.get("os") or "", online=bool(data.get("online")), active=int(data.get("active") or 0),
                   done=int(data.get("done") or 0), failed=int(data.get("failed") or 0),
                   top_agent=data.get("top_agent"), address=data.get("tailscale_ip") or "",
                   user=data.get("user") or "", ssh_port=int(data.get("ssh_port") or 22),
                   role=data.get("role") or "worker")


@dataclass(frozen=True)
class Fleet:
    """The machines a front end routes between."""

    machines: tuple[MachineInfo, ...] = ()

    def find(self, name: str) -> MachineInfo | None:
        for machine in self.machines:
            if name == machine.name or name in machine.aliases:
                return machine
        return None

    @property
    def types(self) -> tuple[str, ...]:
        found = set(BUILTIN_TYPES)
        for machine in self.machines:
            found.update(machine.capabilities)
        return tuple(sorted(found))

    @property
    def agents(self) -> tuple[str, ...]:
        found = set(KNOWN_AGENTS)
        for machine in self.machines:
            found.update(machine.agents)
        return tuple(sorted(found))

    def capable(self, task_type: str) -> list[MachineInfo]:
        return [m for m in self.machines if task_type in m.capabilities]


@dataclass(frozen=True)
class Suggestion:
    """Where the router would send a piece of work, and why."""

    type: str
    machine: str
    agent: str | None
    reason: str
    router: str = "rules"
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """Validation of an assignment: errors block it, warnings do not."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(fleet: Fleet, task_type: str, machine: str | None, agent: str | None) -> Verdict:
    """The rules every assign passes: known names, a capable machine, a listed agent."""
    errors: list[str] = []
    warnings: list[str] = []
    if task_type not in fleet.types:
        errors.append(f"unknown type {task_type!r}; known types: {', '.join(fleet.types)}.")
    if agent is not None and agent not in fleet.agents:
        errors.append(f"unknown agent {agent!r}; known agents: {', '.join(fleet.agents)}.")
    if machine is not None:
        found = fleet.find(machine)
        if found is None:
            known = ", ".join(m.name for m in fleet.machines) or "none yet"
            errors.append(f"unknown machine {machine!r}; known machines: {known}.")
        elif not errors and task_type not in found.capabilities:
            others = ", ".join(m.name for m in fleet.capable(task_type)) or "none"
            errors.append(f"{found.name} cannot run {task_type}; machines that can: {others}.")
        elif agent is not None and found is not None and agent not in found.agents:
            listed = ", ".join(found.agents) or "none"
            warnings.append(f"agent {agent} is not listed for {found.name} (it lists {listed}); "
                            "the task will need a person there if it is missing.")
    if task_type == "agent_run" and agent is None and machine is not None and fleet.find(machine) is not None:
        if not fleet.find(machine).agents:  # type: ignore[union-attr]
            errors.append(f"{machine} lists no agents; pick --agent or another machine.")
    return Verdict(tuple(errors), tuple(warnings))


class Router(Protocol):
    async def suggest(self, description: str, fleet: Fleet, *, machine: str | None = None,
                      agent: str | None = None, task_type: str | None = None) -> Suggestion: ...


def type_from_words(description: str) -> tuple[str, str]:
    """The task type the description's words point to, and the word that decided it."""
    lowered = description.lower()
    for pattern, task_type in TYPE_RULES:
        match = re.search(pattern, lowered)
        if match:
            word = match.group(0) or task_type.split("_")[0]
            return task_type, word.strip() or task_type
    return "agent_run", ""


class RulesRouter:
    """Type from keywords, then the least busy online machine that can run it, then its first agent."""

    name = "rules"

    async def suggest(self, description: str, fleet: Fleet, *, machine: str | None = None,
                      agent: str | None = None, task_type: str | None = None) -> Suggestion:
        reasons = []
        if task_type is None:
            task_type, word = type_from_words(description)
            reasons.append(f"type {task_type} from '{word}'" if word else "type agent_run (no build/test words)")
        chosen = fleet.find(machine) if machine else None
        if chosen is None:
            candidates = fleet.capable(task_type)
            if agent:
                candidates = [m for m in candidates if agent in m.agents] or candidates
            if task_type == "agent_run" and not agent:
                candidates = [m for m in candidates if m.agents] or candidates
            if not candidates:
                return Suggestion(task_type, "", agent, "no machine can run " + task_type, self.name,
                                  (f"no machine lists the capability {task_type}; add it with "
                                   f"`skills add <machine> {task_type}`",))
            chosen = min(candidates, key=lambda m: (not m.online, m.active, m.name))
            state = "online" if chosen.online else "offline"
            reasons.append(f"{chosen.name} can run it and is {state} with {chosen.active} active")
        if task_type == "agent_run" and agent is None and chosen.agents:
            agent = chosen.agents[0]
            reasons.append(f"agent {agent} is its first listed")
        return Suggestion(task_type, chosen.name, agent if task_type == "agent_run" or agent else None,
                          "; ".join(reasons) or "as given", self.name)


class LlmRouter:
    """Ask an agent CLI for {machine, agent, type, reason}; fall back to the rules on any doubt."""

    def __init__(self, agent: str = "claude", *, timeout: float = LLM_TIMEOUT, fallback: Router | None = None) -> None:
        self.agent = agent
        self.timeout = timeout
        self.fallback = fallback or RulesRouter()
        self.name = f"llm:{agent}"

    def prompt(self, description: str, fleet: Fleet) -> str:
        machines = [{"name": m.name, "capabilities": list(m.capabilities), "agents": list(m.agents),
                     "online": m.online, "active": m.active} for m in fleet.machines]
        return ("You route work to machines. Answer with one JSON object only: "
                '{"machine": "...", "agent": "... or null", "type": "...", "reason": "one short sentence"}. '
                f"Task types: {', '.join(fleet.types)}. Fleet: {json.dumps(machines)}. Work: {description}")

    async def suggest(self, description: str, fleet: Fleet, *, machine: str | None = None,
                      agent: str | None = None, task_type: str | None = None) -> Suggestion:
        why = await self._ask(description, fleet)
        if isinstance(why, Suggestion):
            chosen = Suggestion(task_type or why.type, machine or why.machine, agent or why.agent, why.reason,
                                self.name)
            verdict = validate(fleet, chosen.type, chosen.machine, chosen.agent)
            if verdict.ok:
                return chosen
            why = f"its answer was invalid ({verdict.errors[0]})"
        fallback = await self.fallback.suggest(description, fleet, machine=machine, agent=agent, task_type=task_type)
        return Suggestion(fallback.type, fallback.machine, fallback.agent,
                          f"{fallback.reason} (LLM router fell back to rules: {why})", "rules", fallback.warnings)

    async def _ask(self, description: str, fleet: Fleet) -> Suggestion | str:
        program = shutil.which(self.agent)
        if program is None:
            return f"{self.agent} is not installed here"
        try:
            process = await asyncio.create_subprocess_exec(
                program, "-p", self.prompt(description, fleet), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return f"{self.agent} could not start ({exc})"
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return f"no answer within {self.timeout:g}s"
        text = out.decode("utf-8", errors="replace")
        match = re.search(r"\{.*\}", text, re.DOTALL)
        if not match:
            return "its answer had no JSON"
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            return "its answer was not valid JSON"
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("machine", "type")):
            return "its answer lacked machine or type"
        agent = data.get("agent") if isinstance(data.get("agent"), str) and data.get("agent") else None
        return Suggestion(data["type"], data["machine"], agent, str(data.get("reason") or "chosen by the LLM")[:300])


def make_router(setting: str) -> Router:
    """`ROUTER=rules` (default) or the name of an agent CLI to ask (e.g. `ROUTER=claude`)."""
    setting = (setting or "rules").strip().lower()
    return RulesRouter() if setting == "rules" else LlmRouter(setting)
