"""The `/da` and `da` command grammar, shared by Slack and the terminal.

`parse("assign fix login --machine=mac")` → Command(verb="assign", words=["fix", "login"],
options={"machine": "mac"}). A malformed command raises UsageError carrying the usage line
of its verb, which both front ends show as is.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from da.queue.models import RESOLVE_TO, STATUSES


class UsageError(Exception):
    """The command is malformed; `usage` is the line to show."""

    def __init__(self, problem: str, usage: str) -> None:
        super().__init__(f"{problem}\nusage: {usage}")
        self.problem = problem
        self.usage = usage


@dataclass(frozen=True)
class Verb:
    """A verb's usage line, the options it takes and which of them are flags."""

    usage: str
    summary: str
    options: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    changes_state: bool = False
    local: bool = False


READ_FLAGS = ("json",)
VERBS: dict[str, Verb] = {
    "help": Verb("help [verb]", "this list, or one verb's usage"),
    "assign": Verb("assign <description> [--machine=X] [--agent=Y] [--type=Z] [--cwd=PATH] [--priority=N] [--yes] "
                   "[--wait-for-machine]", "queue work; missing flags are suggested by the router",
                   ("machine", "agent", "type", "cwd", "priority"), ("yes", "json", "wait_for_machine"),
                   changes_state=True),
    "queue": Verb("queue [--status=S] [--limit=N] [--json]", "tasks, newest first", ("status", "limit"), READ_FLAGS),
    "show": Verb("show <id> [--json]", "one task with its output", (), READ_FLAGS),
    "review": Verb("review [--json]", "tasks that need a person", (), READ_FLAGS),
    "failures": Verb("failures [--json]", "failed tasks with their errors", (), READ_FLAGS),
    "resolve": Verb(f"resolve <id|all> [{'|'.join(RESOLVE_TO)}] [--notes=...] [--yes]",
                    "settle tasks that need a person (pending = run again)", ("notes",), ("yes", "json"),
                    changes_state=True),
    "cancel": Verb("cancel <id> [--notes=...]", "stop a task that has not finished", ("notes",), ("json",),
                   changes_state=True),
    "status": Verb("status [--json]", "each machine: online, active, done/failed, top agent", (), READ_FLAGS),
    "skills": Verb("skills [available [--category=C] | list <machine> | install <machine> <skill> | "
                   "add <machine> <capability> | create <name>]", "what each machine can do, and installing more",
                   ("category",), ("json", "yes")),
    "run": Verb("run <agent> <prompt>", "run an agent on this machine and stream its answer", (), (), local=True),
    "test": Verb("test [agent]", "smoke-test the agents on this machine", (), ("json",), local=True),
    "ssh": Verb("ssh <machine>", "open ssh to a machine of the fleet", (), (), local=True),
}
SKILLS_CHANGING = ("install", "add", "create")


@dataclass(frozen=True)
class Command:
    """A parsed command: verb, positional words, --key=value options and --flags."""

    verb: str
    words: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def changes_state(self) -> bool:
        if self.verb == "skills":
            return bool(self.words) and self.words[0] in SKILLS_CHANGING
        return VERBS[self.verb].changes_state

    def usage(self) -> str:
        return VERBS[self.verb].usage


def split(text: str) -> list[str]:
    """Words as a shell would split them; Slack's smart quotes count as quotes."""
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    return shlex.split(text)


def parse(text: str, *, allow_local: bool = True) -> Command:
    """Parse one command line; raise UsageError with the verb's usage on any mistake."""
    try:
        tokens = split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read that command ({exc}).", "help") from None
    if not tokens:
        return Command("help")
    verb_name = tokens[0].lower()
    verb = VERBS.get(verb_name)
    if verb is None or (verb.local and not allow_local):
        known = ", ".join(name for name, v in VERBS.items() if allow_local or not v.local)
        raise UsageError(f"unknown command {tokens[0]!r}; known commands: {known}.", "help [verb]")
    words: list[str] = []
    options: dict[str, str] = {}
    flags: set[str] = set()
    for token in tokens[1:]:
        if token.startswith("--") and len(token) > 2:
            key, sep, value = token[2:].partition("=")
            key = key.lower().replace("-", "_")
            if sep and key in verb.options:
                if not value:
                    raise UsageError(f"--{key} needs a value.", verb.usage)
                options[key] = value
            elif not sep and key in verb.flags:
                flags.add(key)
            elif key in verb.options:
                raise UsageError(f"--{key} needs a value, like --{key}=X.", verb.usage)
            else:
                raise UsageError(f"unknown option --{key} for {verb_name}.", verb.usage)
        else:
            words.append(token)
    command = Command(verb_name, tuple(words), options, frozenset(flags))
    check_arity(command)
    return command


def check_arity(command: Command) -> None:
    """Each verb's positional words, so a bad command fails before any network call."""
    words, usage = command.words, command.usage()
    verb = command.verb
    if verb == "assign" and not command.text.strip():
        raise UsageError("assign needs a description of the work.", usage)
    if verb in ("show", "cancel") and len(words) != 1:
        raise UsageError(f"{verb} takes one task id.", usage)
    if verb == "resolve":
        if not 1 <= len(words) <= 2:
            raise UsageError("resolve takes a task id (or all) and a status.", usage)
        if len(words) == 1 and words[0] != "all":
            raise UsageError(f"say how to resolve it: {', '.join(RESOLVE_TO)}.", usage)
        if len(words) == 2 and words[1] not in RESOLVE_TO:
            raise UsageError(f"unknown status {words[1]!r}; use {', '.join(RESOLVE_TO)}.", usage)
    if verb in ("queue", "review", "failures", "status") and words:
        raise UsageError(f"{verb} takes no words, only options.", usage)
    if verb == "help" and len(words) > 1:
        raise UsageError("help takes at most one verb.", usage)
    if verb == "run" and len(words) < 2:
        raise UsageError("run needs an agent and a prompt.", usage)
    if verb == "ssh" and len(words) != 1:
        raise UsageError("ssh takes one machine name.", usage)
    if verb == "test" and len(words) > 1:
        raise UsageError("test takes at most one agent.", usage)
    if verb == "skills" and words:
        sub, rest = words[0], words[1:]
        expected = {"available": 0, "list": 1, "install": 2, "add": 2, "create": 1}
        if sub not in expected:
            raise UsageError(f"unknown skills command {sub!r}.", usage)
        if len(rest) != expected[sub]:
            raise UsageError(f"skills {sub} takes {expected[sub]} argument(s).", usage)
    if "priority" in command.options:
        value = command.options["priority"]
        if not value.isdigit() or not 0 <= int(value) <= 10:
            raise UsageError(f"--priority must be a number from 0 to 10, got {value!r}.", usage)
    status = command.options.get("status")
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}.", usage)
    if "limit" in command.options and not command.options["limit"].isdigit():
        raise UsageError(f"--limit must be a number, got {command.options['limit']!r}.", usage)
