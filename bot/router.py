"""Choosing where work goes: a rules router that always answers, an LLM router that may,
and the validation every assign passes whatever the front end.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from typing import Protocol

from da import agents, handlers
from da.fleet import Fleet, Machine

# The type of work with no build/test words, and the one a plain command falls back to.
AGENT_RUN = "agent_run"
RUN_SCRIPT = "run_script"
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
# Text that is shell, whatever its words: pipes, redirections, variables, paths, options.
SHELL_SYNTAX = re.compile(r"[|;&<>`$]|(^|\s)\.{0,2}/|\s--?[A-Za-z]")
# Words a sentence has and a command line rarely does.
SENTENCE_WORDS = frozenset({"the", "a", "an", "please", "to", "my", "our", "this", "that", "it", "is", "are", "and",
                            "for", "of", "in", "with", "why", "what", "how", "so", "can", "you", "we", "i"})


def looks_like_command(text: str) -> bool:
    """Whether text reads as a command line rather than a sentence: only then do the rules send it to a shell
    without asking."""
    words = text.split()
    if not words:
        return False
    if SHELL_SYNTAX.search(text):
        return True
    if text.rstrip()[-1] in ".?!" or not re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", words[0]):
        return False
    if any(word.lower().strip(",.!?:;'\"") in SENTENCE_WORDS for word in words[1:]):
        return False
    return shutil.which(words[0]) is not None


def known_types(fleet: Fleet) -> tuple[str, ...]:
    """The built-in task types (from the handler modules) and every type a machine declares."""
    declared = {t for m in fleet.machines for t in (*m.capabilities, *m.runs)}
    return tuple(sorted(set(handlers.folder_fields()) | declared))


def known_agents(fleet: Fleet) -> tuple[str, ...]:
    """The agents da knows and every agent a machine lists."""
    return tuple(sorted(set(agents.KNOWN_AGENTS) | {a for m in fleet.machines for a in (*m.agents, *m.runs_agents)}))


@dataclass(frozen=True)
class Suggestion:
    """Where the router would send a piece of work, and why."""

    type: str
    machine: str
    agent: str | None
    reason: str
    router: str = "rules"
    warnings: tuple[str, ...] = ()
    # Asked even with --yes: a sentence about to run in a shell as typed.
    ask: bool = False


@dataclass(frozen=True)
class Verdict:
    """Validation of an assignment: errors block it, warnings do not."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.errors


def name_errors(fleet: Fleet, task_type: str | None, machine: str | None, agent: str | None) -> list[str]:
    """Names that are not known at all, each with the names that are."""
    errors = []
    types, known = known_types(fleet), known_agents(fleet)
    if task_type is not None and task_type not in types:
        errors.append(f"unknown type {task_type!r}; known types: {', '.join(types)}.")
    if agent is not None and agent not in known:
        errors.append(f"unknown agent {agent!r}; known agents: {', '.join(known)}.")
    if machine is not None and fleet.find(machine) is None:
        errors.append(f"unknown machine {machine!r}; known machines: {', '.join(fleet.names) or 'none yet'}.")
    return errors


def validate(fleet: Fleet, task_type: str, machine: str | None, agent: str | None, *,
             wait_for_machine: bool = False) -> Verdict:
    """The rules every assign passes: known names, a capable machine, an agent it lists.

    A task for an agent its machine does not list would wait forever (no worker there claims
    it), so it is refused, naming the machines that could run it, unless the person says
    they will add a worker for it (`wait_for_machine`). What the fleet file declares but the
    machine's online worker does not offer is queued with a warning: it waits for that worker.
    """
    errors = name_errors(fleet, task_type, machine, agent)
    warnings: list[str] = []
    found = fleet.find(machine) if machine is not None else None
    if errors or found is None:
        return Verdict(tuple(errors))
    listed = set(found.capabilities) | set(found.runs)
    listed_agents = (*found.agents, *(a for a in found.runs_agents if a not in found.agents))
    if task_type in listed and task_type not in found.runs:
        warnings.append(f"{found.name}'s online worker does not offer {task_type} (it offers "
                        f"{', '.join(found.runs) or 'nothing'}); the task waits until it does.")
    elif (task_type == AGENT_RUN and agent is not None and agent in listed_agents
          and agent not in found.runs_agents):
        warnings.append(f"{found.name}'s online worker does not offer agent {agent} (it offers "
                        f"{', '.join(found.runs_agents) or 'none'}); the task waits until it does.")
    if task_type not in listed:
        others = ", ".join(m.name for m in fleet.capable(task_type)) or "none"
        errors.append(f"{found.name} cannot run {task_type}; machines that can: {others}.")
    elif task_type == AGENT_RUN and agent is not None and agent not in listed_agents:
        others = ", ".join(m.name for m in fleet.with_agent(agent) if task_type in m.runs) or "none"
        problem = (f"{found.name} does not list agent {agent} (it lists {', '.join(listed_agents) or 'none'}); "
                   f"machines that have {agent}: {others}.")
        if wait_for_machine:
            warnings.append(f"{problem} Queued anyway: it waits until {found.name} runs a worker with {agent}.")
        else:
            errors.append(f"{problem} Pick one of them, or add --wait-for-machine to queue it for {found.name} "
                          "anyway.")
    elif task_type == AGENT_RUN and agent is None and not listed_agents:
        errors.append(f"{found.name} lists no agents; pick --agent or another machine.")
    return Verdict(tuple(errors), tuple(warnings))


def unclaimable(fleet: Fleet, task_type: str, agent: str | None, target: str | None) -> str | None:
    """Why no online worker would take a pending task with these needs now, or None when one would."""
    pinned = fleet.find(target) if target else None

    def takes(machine: Machine) -> bool:
        return (machine.online and task_type in machine.runs and (agent is None or agent in machine.runs_agents)
                and (target is None or machine is pinned))

    if any(takes(machine) for machine in fleet.machines):
        return None
    needs = task_type + (f" with agent {agent}" if agent else "") + (f" on {target}" if target else "")
    return f"no online worker can run it now (it needs {needs}); it waits until one that can polls the queue."


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
    return AGENT_RUN, ""


class RulesRouter:
    """Type from keywords, then the least busy online machine that can run it, then its first agent."""

    name = "rules"

    async def suggest(self, description: str, fleet: Fleet, *, machine: str | None = None,
                      agent: str | None = None, task_type: str | None = None) -> Suggestion:
        reasons = []
        warnings: tuple[str, ...] = ()
        if task_type is None:
            task_type, word = type_from_words(description)
            reasons.append(f"type {task_type} from '{word}'" if word else "type agent_run (no build/test words)")
            if task_type == AGENT_RUN and agent is None and not any(m.runs_agents for m in fleet.capable(AGENT_RUN)) \
                    and fleet.capable(RUN_SCRIPT):
                task_type = RUN_SCRIPT
                reasons[-1] = "no machine lists an agent, so it runs as a shell command (run_script)"
                warnings = ("no machine lists an agent: this runs as a shell command (run_script); add "
                            "--type=agent_run --agent=NAME once a machine has one.",)
        chosen = fleet.find(machine) if machine else None
        if chosen is None:
            candidates = fleet.capable(task_type)
            if agent:
                candidates = [m for m in candidates if agent in m.runs_agents] or candidates
            if task_type == AGENT_RUN and not agent:
                candidates = [m for m in candidates if m.runs_agents] or candidates
            if not candidates:
                return Suggestion(task_type, "", agent, "no machine can run " + task_type, self.name,
                                  (f"no machine lists the capability {task_type}; add it with "
                                   f"`skills add <machine> {task_type}`",))
            chosen = min(candidates, key=lambda m: (not m.online, m.active, m.name))
            state = "online" if chosen.online else "offline"
            reasons.append(f"{chosen.name} can run it and is {state} with {chosen.active} active")
        if task_type == AGENT_RUN and agent is None and chosen.runs_agents:
            agent = chosen.runs_agents[0]
            reasons.append(f"agent {agent} is its first listed")
        ask = task_type == RUN_SCRIPT and not looks_like_command(description)
        if ask:
            warnings += ("this reads as a sentence, not a command, and would run in a shell as typed; confirm only "
                         "if that is meant (an agent needs a machine that lists one: --agent=NAME).",)
        return Suggestion(task_type, chosen.name, agent if task_type == AGENT_RUN or agent else None,
                          "; ".join(reasons) or "as given", self.name, warnings, ask)


class LlmRouter:
    """Ask an agent CLI for {machine, agent, type, reason}; fall back to the rules on any doubt."""

    def __init__(self, agent: str = "claude", *, timeout: float = LLM_TIMEOUT, fallback: Router | None = None) -> None:
        self.agent = agent
        self.timeout = timeout
        self.fallback = fallback or RulesRouter()
        self.name = f"llm:{agent}"

    def prompt(self, description: str, fleet: Fleet) -> str:
        machines = [{"name": m.name, "capabilities": list(m.runs), "agents": list(m.runs_agents),
                     "online": m.online, "active": m.active} for m in fleet.machines]
        return ("You route work to machines. Answer with one JSON object only: "
                '{"machine": "...", "agent": "... or null", "type": "...", "reason": "one short sentence"}. '
                f"Task types: {', '.join(known_types(fleet))}. Fleet: {json.dumps(machines)}. Work: {description}")

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
        command = agents.ASK_COMMANDS.get(self.agent)
        if command is None:
            return f"da cannot ask {self.agent} (it asks {', '.join(agents.ASK_COMMANDS)})"
        if shutil.which(command.program) is None:
            return f"{self.agent} is not installed here"
        try:
            finished = await agents.run_once(command.build(self.prompt(description, fleet)), self.timeout)
        except OSError as exc:
            return f"{self.agent} could not start ({exc})"
        if finished is None:
            return f"no answer within {self.timeout:g}s"
        text = finished[1]
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
