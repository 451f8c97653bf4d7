"""The `/da` and `da` command grammar, shared by Slack and the terminal.

`parse("assign fix the user's login --machine mac")` → Command(verb="assign",
text="fix the user's login", words=("fix", "the", "user's", "login"), options={"machine": "mac"}).
Every verb is declared once in `VERBS` (its words, options, flags and sub-verbs); the checks,
the usage lines and `help` all come from those declarations. A malformed command raises
UsageError carrying the usage line of its verb, which both front ends show as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from da.queue.models import RESOLVE_TO, STATUSES


class UsageError(Exception):
    """The command is malformed; `usage` is the line to show."""

    def __init__(self, problem: str, usage: str) -> None:
        super().__init__(f"{problem}\nusage: {usage}")
        self.problem = problem
        self.usage = usage


@dataclass(frozen=True)
class Arg:
    """One word a verb takes, in order; `rest` takes every word from there on, kept as typed."""

    name: str
    # How an error names it: "one task id", "a description of the work".
    what: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    rest: bool = False

    @property
    def usage(self) -> str:
        shown = "|".join(self.choices) if self.choices else self.name
        return f"[{shown}]" if self.optional else f"<{shown}>"


@dataclass(frozen=True)
class Option:
    """A `--name=value` (or `--name value`) option and what its value may be."""

    name: str
    placeholder: str = "X"
    choices: tuple[str, ...] = ()
    # The value must be a whole number in this range (no upper end when None).
    number: tuple[int, int | None] | None = None
    # A free sentence (notes, a folder) rather than one name: an error suggests quoting it.
    sentence: bool = False
    # Given more than once, every value is kept (Command.values); `options` holds the first.
    repeatable: bool = False

    @property
    def usage(self) -> str:
        more = " ..." if self.repeatable else ""
        return f"[{dashed(self.name)}={self.placeholder}{more}]"

    def problem(self, value: str) -> str | None:
        """Why `value` is refused, or None."""
        if self.choices and value not in self.choices:
            return f"unknown {self.name} {value!r}; use one of {', '.join(self.choices)}."
        if self.number is not None:
            low, high = self.number
            if not value.isdigit() or int(value) < low or (high is not None and int(value) > high):
                span = f" from {low} to {high}" if high is not None else ""
                return f"{dashed(self.name)} must be a number{span}, got {value!r}."
        return None


@dataclass(frozen=True)
class Flag:
    """A `--name` switch; `shown` puts it in the usage line."""

    name: str
    shown: bool = True

    @property
    def usage(self) -> str:
        return f"[{dashed(self.name)}]"


@dataclass(frozen=True)
class Verb:
    """Everything the grammar knows about a verb: its words, options, flags and sub-verbs."""

    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    options: tuple[Option, ...] = ()
    flags: tuple[Flag, ...] = ()
    subverbs: tuple[Verb, ...] = ()
    changes_state: bool = False
    # Runs only in the terminal client, on the machine it is typed on.
    local: bool = False
    # A rule between its words that the declarations above cannot say.
    check: Callable[[Command], None] | None = None

    @property
    def usage(self) -> str:
        parts = [self.name, *(arg.usage for arg in self.args), *(option.usage for option in self.options),
                 *(flag.usage for flag in self.flags if flag.shown)]
        if self.subverbs:
            parts.insert(1, "[" + " | ".join(sub.usage for sub in self.subverbs) + "]")
        return " ".join(parts)

    @property
    def help(self) -> str:
        """The usage line and summary, then each sub-verb's."""
        lines = [self.usage, self.summary]
        lines += [f"  {self.name} {sub.usage}\n      {sub.summary}" for sub in self.subverbs]
        return "\n".join(lines)

    def subverb(self, word: str | None) -> Verb | None:
        return next((sub for sub in self.subverbs if sub.name == word), None)

    def with_subverb(self, sub: Verb) -> Verb:
        """The verb as `skills install` is: the sub-verb's words, both option sets, the sub-verb's effect."""
        return Verb(f"{self.name} {sub.name}", sub.summary, args=sub.args, options=self.options + sub.options,
                    flags=self.flags + sub.flags, changes_state=sub.changes_state, local=self.local or sub.local,
                    check=sub.check)

    def option(self, name: str) -> Option | None:
        return next((option for option in self.options if option.name == name), None)

    def flag(self, name: str) -> Flag | None:
        return next((flag for flag in self.flags if flag.name == name), None)

    @property
    def free_text(self) -> Arg | None:
        """The words kept as typed (assign's description, run's prompt), if the verb has them."""
        return self.args[-1] if self.args and self.args[-1].rest else None


def resolve_needs_a_status(command: Command) -> None:
    """`resolve all` settles as done; one task needs its status said."""
    if len(command.words) == 1 and command.words[0] != "all":
        raise UsageError(f"say how to resolve it: {', '.join(RESOLVE_TO)}.", command.usage())


JSON = Flag("json")
JSON_QUIET = Flag("json", shown=False)
YES = Flag("yes")
YES_QUIET = Flag("yes", shown=False)
NOTES = Option("notes", "...", sentence=True)
VERBS: dict[str, Verb] = {verb.name: verb for verb in (
    Verb("help", "this list, or one verb's usage", args=(Arg("verb", "one verb", optional=True),)),
    Verb("assign", "queue work; missing flags are suggested by the router",
         args=(Arg("description", "a description of the work", rest=True),),
         options=(Option("machine"), Option("agent", "Y"), Option("type", "Z"), Option("cwd", "PATH", sentence=True),
                  Option("priority", "N", number=(0, 10)), Option("repo", "PATH", sentence=True, repeatable=True),
                  Option("base", "BRANCH")),
         flags=(YES, JSON_QUIET, Flag("wait_for_machine"), Flag("push"), Flag("pr")), changes_state=True),
    Verb("queue", "tasks, newest first",
         options=(Option("status", "S", choices=STATUSES), Option("limit", "N", number=(0, None))), flags=(JSON,)),
    Verb("show", "one task with its output", args=(Arg("id", "one task id"),), flags=(JSON,)),
    Verb("diff", "an agent task's changes against its base branch", args=(Arg("id", "one task id"),), flags=(JSON,)),
    Verb("review", "tasks that need a person", flags=(JSON,)),
    Verb("failures", "failed tasks with their errors", flags=(JSON,)),
    Verb("resolve", "settle tasks that need a person (pending = run again)",
         args=(Arg("id|all", "a task id (or all)"), Arg("status", "a status", optional=True, choices=RESOLVE_TO)),
         options=(NOTES,), flags=(YES, JSON_QUIET), changes_state=True, check=resolve_needs_a_status),
    Verb("cancel", "stop a task that has not finished", args=(Arg("id", "one task id"),), options=(NOTES,),
         flags=(JSON_QUIET,), changes_state=True),
    Verb("status", "each machine: online, active, done/failed, top agent", flags=(JSON,)),
    Verb("skills", "what each machine can do, and installing more", flags=(JSON_QUIET, YES_QUIET), subverbs=(
        Verb("available", "the skills registry, checked on each machine over SSH",
             options=(Option("category", "C"),)),
        Verb("list", "the skills registry, checked on one machine", args=(Arg("machine", "one machine"),)),
        Verb("install", "run the skill's install recipe on the machine over SSH, streamed",
             args=(Arg("machine", "a machine"), Arg("skill", "a skill")), changes_state=True),
        Verb("add", "add a capability to the machine in machines.yaml (comments kept)",
             args=(Arg("machine", "a machine"), Arg("capability", "a capability")), changes_state=True),
        Verb("create", "write a new handler and register it as a skill, asking for its details",
             args=(Arg("name", "one handler name"),), changes_state=True),
    )),
    # Supervised agent sessions: what the agents ask, and steering them.
    Verb("asks", "open asks across the fleet: task, machine, kind, title, age", flags=(JSON,)),
    Verb("approve", "approve a running agent's ask (its oldest open one unless named)",
         args=(Arg("task", "one task id"), Arg("ask", "an ask number", optional=True)), options=(NOTES,),
         flags=(JSON_QUIET,), changes_state=True),
    Verb("deny", "deny a running agent's ask (a plan: request changes, said in --notes)",
         args=(Arg("task", "one task id"), Arg("ask", "an ask number", optional=True)), options=(NOTES,),
         flags=(JSON_QUIET,), changes_state=True),
    Verb("answer", "answer a running agent's open ask with one of its options",
         args=(Arg("task", "one task id"), Arg("option", "one of the ask's options")), options=(NOTES,),
         flags=(JSON_QUIET,), changes_state=True),
    Verb("watch", "follow a task's progress (plan, tool calls, answer, asks) until it ends",
         args=(Arg("id", "one task id"),)),
    Verb("say", "send a running agent a message: its next prompt, or at once with --interrupt",
         args=(Arg("id", "one task id"), Arg("text", "a message", rest=True)), flags=(Flag("interrupt"), JSON_QUIET),
         changes_state=True),
    Verb("run", "run an agent on this machine and stream its answer",
         args=(Arg("agent", "an agent"), Arg("prompt", "a prompt", rest=True)), local=True),
    Verb("test", "smoke-test the agents on this machine", args=(Arg("agent", "one agent", optional=True),),
         flags=(JSON_QUIET,), local=True),
    Verb("ssh", "open ssh to a machine of the fleet", args=(Arg("machine", "one machine name"),), local=True),
    Verb("attach", "the commands to continue an agent task by hand in its worktree; --ssh opens them",
         args=(Arg("id", "one task id"),), flags=(Flag("ssh"), JSON)),
    Verb("push", "push a finished agent task's branch from the machine holding its worktree; --pr also opens "
         "its pull/merge request", args=(Arg("id", "one task id"),), flags=(Flag("pr"), JSON_QUIET),
         changes_state=True),
)}


@dataclass(frozen=True)
class Command:
    """A parsed command: verb, the text as typed between the verb and the options, its words,
    --key=value options and --flags."""

    verb: str
    words: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    text: str = ""
    # Every value of a repeatable option, in the order typed.
    repeated: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def values(self, name: str) -> tuple[str, ...]:
        """All values of an option: each of a repeatable one, else the one given (or none)."""
        return self.repeated.get(name) or ((self.options[name],) if name in self.options else ())

    def declaration(self) -> Verb:
        """The verb as declared, narrowed to its sub-verb (`skills install`) when it names one."""
        return narrowed(VERBS[self.verb], self.words[0] if self.words else None)

    @property
    def changes_state(self) -> bool:
        return self.declaration().changes_state

    def usage(self) -> str:
        return self.declaration().usage


# Quotes people type, straight or as a phone or Slack turns them: a value in them may hold spaces.
QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019"}
# A value: bare, or in quotes (then it may hold spaces).
VALUE = r"(?:\"[^\"]*\"|\u201c[^\u201d]*\u201d|'[^']*'|\u2018[^\u2019]*\u2019|[^\s\"'\u201c\u2018]\S*)"
# An option word at the end of a line: --name or --name=value. Phones and macOS turn a typed -- into
# an em or en dash, so those start an option too.
OPTION_AT_END = re.compile(rf"(?:^|\s)((?:--|\u2014|\u2013)([A-Za-z][\w-]*)(?:=({VALUE}|))?)\s*$")
# A word at the end of a line that may be the value of a `--name` before it.
VALUE_AT_END = re.compile(rf"(?:^|\s)({VALUE})\s*$")
VERB_AND_REST = re.compile(r"\s*(\S+)(?:\s+(.*))?", re.DOTALL)
OPTION_WORD = re.compile(r"(?:--|\u2014|\u2013)([A-Za-z][\w-]*)(=.*)?", re.DOTALL)


def parse(text: str, *, allow_local: bool = True) -> Command:
    """Parse one typed line (Slack, the REPL); raise UsageError with the verb's usage on any mistake.

    Options are the `--name=value`, `--name value` and `--flag` words at the end; everything
    between the verb and them is kept as typed (apostrophes, quotes, newlines), so a prompt
    reaches its task unchanged. A description wholly in quotes loses those quotes.
    """
    match = VERB_AND_REST.fullmatch(text)
    if match is None:
        return Command("help")
    verb_name, rest = match.group(1), (match.group(2) or "").rstrip()
    verb = known_verb(verb_name, allow_local)
    declared = narrowed(verb, rest.split(None, 1)[0] if rest else None)
    trailing: list[tuple[str, str | None]] = []
    while True:
        if found := OPTION_AT_END.search(rest):
            trailing.insert(0, (found.group(2), unquoted(found.group(3)) if found.group(3) is not None else None))
            rest = rest[: found.start()].rstrip()
        elif spaced := spaced_option_at_end(rest, declared):
            trailing.insert(0, spaced[:2])
            rest = rest[: spaced[2]].rstrip()
        else:
            break
    text = rest.strip()
    bare = unquoted(text)
    return build(verb_name, verb, bare, trailing, loose=text.split() if bare == text else [])


def spaced_option_at_end(rest: str, verb: Verb) -> tuple[str, str, int] | None:
    """`... --name value` at the end, for an option of the verb: its name, value and where it starts."""
    value = VALUE_AT_END.search(rest)
    if value is None or OPTION_WORD.fullmatch(value.group(1)):
        return None
    option = OPTION_AT_END.search(rest[: value.start()].rstrip())
    if option is None or option.group(3) is not None or not takes_value(verb, option.group(2)):
        return None
    return option.group(2), unquoted(value.group(1)), option.start()


def parse_argv(argv: list[str], *, allow_local: bool = True) -> Command:
    """Parse words a shell already split (`da assign "fix the user's login" --machine mac --yes`)."""
    if not argv:
        return Command("help")
    verb = known_verb(argv[0], allow_local)
    tokens = list(argv[1:])
    declared = narrowed(verb, tokens[0] if tokens else None)
    trailing: list[tuple[str, str | None]] = []
    while tokens:
        if found := OPTION_WORD.fullmatch(tokens[-1]):
            tokens.pop()
            trailing.insert(0, (found.group(1), found.group(2)[1:] if found.group(2) else None))
        elif len(tokens) >= 2 and (found := OPTION_WORD.fullmatch(tokens[-2])) and not found.group(2) \
                and takes_value(declared, found.group(1)):
            value = tokens.pop()
            tokens.pop()
            trailing.insert(0, (found.group(1), value))
        else:
            break
    return build(argv[0], verb, " ".join(tokens).strip(), trailing, loose=tokens)


def known_verb(name: str, allow_local: bool) -> Verb:
    verb = VERBS.get(name.lower())
    if verb is None or (verb.local and not allow_local):
        known = ", ".join(n for n, v in VERBS.items() if allow_local or not v.local)
        raise UsageError(f"unknown command {name!r}; known commands: {known}.", "help [verb]")
    return verb


def narrowed(verb: Verb, first_word: str | None) -> Verb:
    """The verb with the options and flags of the sub-verb its first word names."""
    sub = verb.subverb(first_word)
    return verb.with_subverb(sub) if sub else verb


def key(raw: str) -> str:
    """An option's name as declared: `--Wait-For-Machine` is wait_for_machine."""
    return raw.lower().replace("-", "_")


def dashed(name: str) -> str:
    """An option's name as people type it: wait_for_machine is --wait-for-machine."""
    return "--" + name.replace("_", "-")


def takes_value(verb: Verb, raw: str) -> bool:
    return verb.option(key(raw)) is not None


def unquoted(text: str) -> str:
    """A text wholly inside one pair of quotes, without them; any other text as is."""
    if len(text) >= 2 and QUOTES.get(text[0]) == text[-1] and text[-1] not in text[1:-1]:
        return text[1:-1]
    return text


def as_option(name: str, value: str) -> str:
    """How to type an option so that its value cannot be misread: `--notes="fixed it"`."""
    return f'--{name}="{value}"' if not value or any(c.isspace() for c in value) else f"--{name}={value}"


def build(verb_name: str, verb: Verb, text: str, trailing: list[tuple[str, str | None]],
          loose: Sequence[str] = ()) -> Command:
    """Check the trailing options and the words against the declaration and make the Command.

    `loose` holds the words (as typed, not inside quotes) that may be misplaced options.
    """
    verb_name = verb_name.lower()
    words = tuple(text.split())
    declared = narrowed(verb, words[0] if words else None)
    usage = declared.usage
    options: dict[str, str] = {}
    repeated: dict[str, tuple[str, ...]] = {}
    flags: set[str] = set()
    for raw_key, value in trailing:
        name = key(raw_key)
        typed = dashed(name)
        option = declared.option(name)
        if option is not None and value is not None:
            if not value:
                raise UsageError(f"{typed} needs a value.", usage)
            problem = option.problem(value)
            if problem:
                raise UsageError(problem, usage)
            if option.repeatable:
                repeated[name] = (*repeated.get(name, ()), value)
                options.setdefault(name, value)
            else:
                options[name] = value
        elif option is not None:
            raise UsageError(f"{typed} needs a value, like {typed}=X.", usage)
        elif declared.flag(name) is not None and value is None:
            flags.add(name)
        elif declared.flag(name) is not None:
            raise UsageError(f"{typed} takes no value; use {typed} alone.", usage)
        else:
            free = declared.free_text
            hint = f" (to keep it in the {free.name}, put the {free.name} in quotes)" if free else ""
            raise UsageError(f"unknown option {typed} for {verb_name}{hint}.", usage)
    misplaced(declared, list(loose))
    command = Command(verb_name, words, options, frozenset(flags), text, repeated)
    check_words(command)
    return command


def misplaced(verb: Verb, loose: list[str]) -> None:
    """An option of the verb among its words: say how to write it so that it cannot be misread."""
    free = verb.free_text
    after = f"the {free.name}" if free else "the other words" if verb.args else "the verb"
    for at, word in enumerate(loose):
        found = OPTION_WORD.fullmatch(word)
        if found is None:
            continue
        name, value = key(found.group(1)), found.group(2)
        typed = dashed(name)
        option, flag = verb.option(name), verb.flag(name)
        if option is None and flag is None:
            if free is None:
                raise UsageError(f"unknown option {typed} for {verb.name}.", verb.usage)
            continue
        following = loose[at + 1:]
        opening = value[1:2] if value is not None else following[0][:1] if following else ""
        if opening in QUOTES:
            raise UsageError(f"close the quote after {typed}{'=' if value is not None else ''}.", verb.usage)
        if value is not None or not following:
            raise UsageError(f"put {typed} at the end: options come after {after}, and a value with spaces goes "
                             f'in quotes ({typed}="two words").', verb.usage)
        if flag is not None:
            raise UsageError(flag_before_a_word(verb, name, following[0], after), verb.usage)
        assert option is not None
        problem = (f"{typed} {following[0]} is followed by more words, so where its value ends is unclear: "
                   f"use {as_option(name, following[0])} after {after}")
        if option.sentence and len(following) > 1:
            problem += f", or {as_option(name, ' '.join(following))} for a value with spaces"
        if free:
            problem += f", or put the {free.name} in quotes"
        raise UsageError(problem + ".", verb.usage)


def flag_before_a_word(verb: Verb, flag: str, word: str, after: str) -> str:
    """`queue --json done`: a switch takes no value, so say which option the word was probably for."""
    typed = dashed(flag)
    meant = next((option for option in verb.options if word in option.choices), None)
    if meant is not None:
        return f"{typed} takes no value; if {word!r} is the {meant.name}, use {as_option(meant.name, word)}."
    return f"{typed} takes no value, so {word!r} after it is not one: put {typed} at the end, after {after}."


def joined(parts: Iterable[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    items = list(parts)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def check_words(command: Command) -> None:
    """The verb's words against its declaration, so a bad command fails before any network call."""
    verb = VERBS[command.verb]
    words, usage = command.words, command.usage()
    if verb.subverbs and words:
        sub = verb.subverb(words[0])
        if sub is None:
            names = ", ".join(s.name for s in verb.subverbs)
            raise UsageError(f"unknown {verb.name} command {words[0]!r}; use one of {names}.", usage)
        verb, words = verb.with_subverb(sub), words[1:]
    args = verb.args
    required = [arg for arg in args if not arg.optional]
    free = verb.free_text
    if free is not None:
        if len(words) < len(required):
            raise UsageError(f"{verb.name} needs {joined(arg.what for arg in required)}.", usage)
    elif not args and words:
        raise UsageError(f"{verb.name} takes no words, only options.", usage)
    elif not len(required) <= len(words) <= len(args):
        phrase = joined(arg.what for arg in args)
        raise UsageError(f"{verb.name} takes {'at most ' if not required else ''}{phrase}.", usage)
    for arg, word in zip(args, words, strict=False):
        if arg.choices and word not in arg.choices:
            raise UsageError(f"unknown {arg.name} {word!r}; use one of {', '.join(arg.choices)}.", usage)
    if verb.check is not None:
        verb.check(command)
