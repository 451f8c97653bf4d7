"""The `/da` and `da` command grammar, shared by Slack and the terminal.

`parse("assign fix the user's login --machine=mac")` → Command(verb="assign",
text="fix the user's login", words=("fix", "the", "user's", "login"), options={"machine": "mac"}).
A malformed command raises UsageError carrying the usage line of its verb, which both front
ends show as is.
"""

from __future__ import annotations

import re
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
                   "[--wait-for-machine] [--repo=PATH] [--base=BRANCH] [--push] [--pr]",
                   "queue work; missing flags are suggested by the router",
                   ("machine", "agent", "type", "cwd", "priority", "repo", "base"),
                   ("yes", "json", "wait_for_machine", "push", "pr"), changes_state=True),
    "queue": Verb("queue [--status=S] [--limit=N] [--json]", "tasks, newest first", ("status", "limit"), READ_FLAGS),
    "show": Verb("show <id> [--json]", "one task with its output", (), READ_FLAGS),
    "diff": Verb("diff <id> [--json]", "an agent task's changes against its base branch", (), READ_FLAGS),
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
    """A parsed command: verb, the text as typed between the verb and the options, its words,
    --key=value options and --flags."""

    verb: str
    words: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    text: str = ""

    @property
    def changes_state(self) -> bool:
        if self.verb == "skills":
            return bool(self.words) and self.words[0] in SKILLS_CHANGING
        return VERBS[self.verb].changes_state

    def usage(self) -> str:
        return VERBS[self.verb].usage


# Quotes people type, straight or as a phone or Slack turns them: a value in them may hold spaces.
QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}
# An option word at the end of a line: --name or --name=value, the value bare or in quotes. Phones
# and macOS turn a typed -- into an em or en dash, so those start an option too.
OPTION_AT_END = re.compile(
    r"(?:^|\s)((?:--|\u2014|\u2013)([A-Za-z][\w-]*)(?:=(\"[^\"]*\"|\u201c[^\u201d]*\u201d|'[^']*'|"
    r"\u2018[^\u2019]*\u2019|[^\s\"'\u201c\u2018]\S*|))?)\s*$")
VERB_AND_REST = re.compile(r"\s*(\S+)(?:\s+(.*))?", re.DOTALL)


def parse(text: str, *, allow_local: bool = True) -> Command:
    """Parse one typed line (Slack, the REPL); raise UsageError with the verb's usage on any mistake.

    Flags are only `--name=value` (or `--flag`) words at the end; everything between the verb
    and them is kept as typed (apostrophes, quotes, newlines), so a prompt reaches its task
    unchanged. A description wholly in quotes loses those quotes.
    """
    match = VERB_AND_REST.fullmatch(text)
    if match is None:
        return Command("help")
    verb_name, rest = match.group(1), (match.group(2) or "").rstrip()
    verb = known_verb(verb_name, allow_local)
    trailing: list[tuple[str, str | None]] = []
    while found := OPTION_AT_END.search(rest):
        value = found.group(3)
        if value is not None and value[:1] in QUOTES:
            value = value[1:-1]
        trailing.insert(0, (found.group(2), value))
        rest = rest[: found.start()].rstrip()
    return build(verb_name, verb, unquoted(rest.strip()), trailing)


def parse_argv(argv: list[str], *, allow_local: bool = True) -> Command:
    """Parse words a shell already split (`da assign "fix the user's login" --yes`)."""
    if not argv:
        return Command("help")
    verb = known_verb(argv[0], allow_local)
    tokens = list(argv[1:])
    trailing: list[tuple[str, str | None]] = []
    while tokens and tokens[-1].startswith(("--", "\u2014", "\u2013")) and tokens[-1].lstrip("-\u2014\u2013"):
        name, sep, value = tokens.pop().lstrip("-\u2014\u2013").partition("=")
        trailing.insert(0, (name, value if sep else None))
    return build(argv[0], verb, " ".join(tokens).strip(), trailing)


def known_verb(name: str, allow_local: bool) -> Verb:
    verb = VERBS.get(name.lower())
    if verb is None or (verb.local and not allow_local):
        known = ", ".join(n for n, v in VERBS.items() if allow_local or not v.local)
        raise UsageError(f"unknown command {name!r}; known commands: {known}.", "help [verb]")
    return verb


def unquoted(text: str) -> str:
    """A text wholly inside one pair of quotes, without them; any other text as is."""
    if len(text) >= 2 and QUOTES.get(text[0]) == text[-1] and text[-1] not in text[1:-1]:
        return text[1:-1]
    return text


def build(verb_name: str, verb: Verb, text: str, trailing: list[tuple[str, str | None]]) -> Command:
    """Check the trailing options against the verb and make the Command."""
    verb_name = verb_name.lower()
    options: dict[str, str] = {}
    flags: set[str] = set()
    for raw_key, value in trailing:
        key = raw_key.lower().replace("-", "_")
        if value is not None and key in verb.options:
            if not value:
                raise UsageError(f"--{key} needs a value.", verb.usage)
            options[key] = value
        elif value is None and key in verb.flags:
            flags.add(key)
        elif key in verb.options:
            raise UsageError(f"--{key} needs a value, like --{key}=X.", verb.usage)
        else:
            hint = " (to keep it in the description, put the description in quotes)" if verb_name == "assign" else ""
            raise UsageError(f"unknown option --{key} for {verb_name}{hint}.", verb.usage)
    words = tuple(text.split())
    for word in words:
        name = word.lstrip("-\u2014\u2013").partition("=")[0].lower().replace("-", "_")
        if word.startswith(("--", "\u2014", "\u2013")) and name in verb.options + verb.flags:
            if word.partition("=")[2][:1] in QUOTES:
                raise UsageError(f"close the quote after --{name}=.", verb.usage)
            raise UsageError(f"put --{name} at the end: options come after the {describe(verb_name)}, and a value "
                             f'with spaces goes in quotes (--{name}="two words").', verb.usage)
    command = Command(verb_name, words, options, frozenset(flags), text)
    check_arity(command)
    return command


def describe(verb_name: str) -> str:
    return "description" if verb_name == "assign" else "other words"


def check_arity(command: Command) -> None:
    """Each verb's positional words, so a bad command fails before any network call."""
    words, usage = command.words, command.usage()
    verb = command.verb
    if verb == "assign" and not command.text:
        raise UsageError("assign needs a description of the work.", usage)
    if verb in ("show", "cancel", "diff") and len(words) != 1:
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
