"""The verb declarations: every option and flag of every verb through both parsers, the
`--flag value` form, the errors that name their fix, usage and help drawn from the declarations,
and the command layer's table agreeing with them."""

from __future__ import annotations

import re

import pytest

from da.bot import commands, grammar, views
from da.bot.commands import CommandLayer
from da.bot.grammar import UsageError, Verb
from da.bot.terminal import local
from da.queue.client import QueueClient
from da.queue.models import DONE, NEEDS_HUMAN


def every_verb() -> list[tuple[str, Verb]]:
    """(the words that name it, its declaration) for every verb and sub-verb."""
    found = []
    for verb in grammar.VERBS.values():
        found.append((verb.name, verb))
        found += [(f"{verb.name} {sub.name}", verb.with_subverb(sub)) for sub in verb.subverbs]
    return found


def words_for(verb: Verb) -> list[str]:
    """Words the verb accepts (as a shell would split them): the required ones, and a choice where it has one."""
    return [arg.choices[0] if arg.choices else ("fix the login" if arg.rest else "abcd1234")
            for arg in verb.args if not arg.optional or arg.choices]


def value_for(option: grammar.Option) -> str:
    if option.choices:
        return option.choices[-1]
    if option.number is not None:
        return str(option.number[0] + 1)
    return "vm"


OPTIONS = [pytest.param(line, verb, option, id=f"{line} --{option.name}")
           for line, verb in every_verb() for option in verb.options]
FLAGS = [pytest.param(line, verb, flag, id=f"{line} --{flag.name}")
         for line, verb in every_verb() for flag in verb.flags]


@pytest.mark.parametrize(("line", "problem"), [
    ("assign", "assign needs a description of the work."),
    ("assign fix it --colour=red", "unknown option --colour for assign (to keep it in the description"),
    ("assign fix it --machine", "--machine needs a value, like --machine=X."),
    ("frobnicate", "unknown command 'frobnicate'"),
    ("resolve abcd", "say how to resolve it: done, failed, pending."),
    ("resolve abcd maybe", "unknown status 'maybe'"),
    ("queue --status", "--status needs a value"),
    ('resolve abcd done --notes="unclosed', "close the quote after --notes=."),
    ("assign --machine=mac fix the login", "put --machine at the end: options come after the description"),
    ("skills teleport", "unknown skills command 'teleport'; use one of available, list, install, add, create."),
    ("assign x --priority=99", "--priority must be a number from 0 to 10"),
])
def test_malformed_commands_answer_with_the_verbs_usage(line: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        grammar.parse(line)
    assert caught.value.problem.startswith(problem)
    assert "usage: " in str(caught.value)


def test_parse_keeps_the_description_as_typed_and_options_at_the_end() -> None:
    command = grammar.parse('assign "fix the login bug" now --machine=mac --agent=claude --yes')
    assert command.text == '"fix the login bug" now'
    assert command.options == {"machine": "mac", "agent": "claude"} and command.flags == {"yes"}
    assert command.changes_state


@pytest.mark.parametrize(("line", "text"), [
    ("assign fix the user’s login page", "fix the user’s login page"),
    ("assign fix the user's login page --machine=mac", "fix the user's login page"),
    ('assign rename "Save" to “Keep” in the toolbar', 'rename "Save" to “Keep” in the toolbar'),
    ("assign step one\nstep two\n  indented --yes", "step one\nstep two\n  indented"),
    ('assign "run pytest --verbose"', "run pytest --verbose"),
    ("assign “it’s all quoted” --yes", "it’s all quoted"),
    ("assign explain --machine=X then stop there", None),
])
def test_prompts_reach_the_task_as_people_type_them(line: str, text: str | None) -> None:
    if text is None:
        with pytest.raises(UsageError, match="put --machine at the end"):
            grammar.parse(line)
        return
    assert grammar.parse(line).text == text


def test_option_values_may_be_quoted_and_dashes_may_be_autocorrected() -> None:
    command = grammar.parse("resolve abcd done —notes=“it’s fixed, by hand”")
    assert command.words == ("abcd", "done") and command.options == {"notes": "it’s fixed, by hand"}
    assert grammar.parse("resolve abcd done --notes='logged in'").options == {"notes": "logged in"}
    assert grammar.parse("queue –status=done").options == {"status": "done"}


def test_the_shell_split_words_of_the_terminal_parse_the_same_way() -> None:
    typed = grammar.parse("assign fix the user's login --machine=mac --yes")
    split = grammar.parse_argv(["assign", "fix the user's login", "--machine=mac", "--yes"])
    assert (split.text, split.options, split.flags) == (typed.text, typed.options, typed.flags)
    notes = grammar.parse_argv(["resolve", "abcd", "done", "--notes=installed ruff by hand"])
    assert notes.words == ("abcd", "done") and notes.options == {"notes": "installed ruff by hand"}
    with pytest.raises(UsageError, match="unknown option --colour for assign"):
        grammar.parse_argv(["assign", "fix it", "--colour=red"])


def test_the_declarations_give_options_and_flags_to_check() -> None:
    assert OPTIONS and FLAGS, "the declarations name options and flags"


@pytest.mark.parametrize(("line", "verb", "option"), OPTIONS)
def test_each_option_takes_its_value_after_a_space_or_an_equals_sign(line: str, verb: Verb,
                                                                       option: grammar.Option) -> None:
    value = value_for(option)
    argv = [*line.split(), *words_for(verb)]
    joined = grammar.parse_argv([*argv, f"--{option.name}={value}"])
    spaced = grammar.parse_argv([*argv, f"--{option.name}", value])
    typed = grammar.parse(" ".join([*argv, f"--{option.name}", value]))
    assert joined.options == spaced.options == typed.options == {option.name: value}
    assert joined.words == spaced.words == typed.words
    with pytest.raises(UsageError, match=f"--{option.name} needs a value"):
        grammar.parse(" ".join([*argv, f"--{option.name}"]))


@pytest.mark.parametrize(("line", "verb", "flag"), FLAGS)
def test_each_flag_is_a_switch_and_a_word_after_it_is_refused(line: str, verb: Verb, flag: grammar.Flag) -> None:
    switch = grammar.dashed(flag.name)
    typed = [*line.split(), *words_for(verb), switch]
    assert grammar.parse(" ".join(typed)).flags == {flag.name}
    assert grammar.parse_argv(typed).flags == {flag.name}
    with pytest.raises(UsageError) as caught:
        grammar.parse(" ".join([*typed, "extra"]))
    assert caught.value.problem.startswith(f"{switch} takes no value")
    with pytest.raises(UsageError, match=re.escape(f"{switch} takes no value; use {switch} alone.")):
        grammar.parse(" ".join([*typed[:-1], f"{switch}=1"]))


@pytest.mark.parametrize(("typed", "options", "flags"), [
    ("queue --status done", {"status": DONE}, set()),
    ("queue --json --status needs_human --limit 5", {"status": NEEDS_HUMAN, "limit": "5"}, {"json"}),
    ("assign fix the user's login --machine vm --agent claude --yes", {"machine": "vm", "agent": "claude"}, {"yes"}),
    ("resolve abcd done --notes fixed", {"notes": "fixed"}, set()),
    ('resolve abcd done --notes "fixed it by hand"', {"notes": "fixed it by hand"}, set()),
    ("resolve abcd done \u2014notes \u201cit\u2019s fixed\u201d --yes", {"notes": "it\u2019s fixed"}, {"yes"}),
    ("cancel abcd --notes wrong-machine", {"notes": "wrong-machine"}, set()),
    ("skills available --category languages", {"category": "languages"}, set()),
])
def test_flag_value_works_wherever_flag_equals_value_does(typed: str, options: dict[str, str],
                                                          flags: set[str]) -> None:
    command = grammar.parse(typed)
    assert command.options == options and command.flags == flags
    assert grammar.parse(typed.replace(" --status ", " --status=").replace(" --notes ", " --notes=")).options == options


def test_the_free_text_before_spaced_options_is_kept_as_typed() -> None:
    command = grammar.parse("assign step one\nstep two, it's \"quoted\" --machine mac --type agent_run")
    assert command.text == "step one\nstep two, it's \"quoted\""
    assert command.options == {"machine": "mac", "type": "agent_run"}
    assert grammar.parse('assign "explain --machine vm to me"').text == "explain --machine vm to me"
    assert grammar.parse_argv(["assign", "explain --machine vm to me", "--yes"]).text == "explain --machine vm to me"
    # A word that is not one of the verb's options stays in the description, with what follows it.
    assert grammar.parse("assign run pytest --maxfail 1").text == "run pytest --maxfail 1"


@pytest.mark.parametrize(("typed", "problem"), [
    ("queue --json done", "--json takes no value; if 'done' is the status, use --status=done."),
    ("resolve abcd --yes done", "--yes takes no value, so 'done' after it is not one: put --yes at the end, after "
                                "the other words."),
    ("assign fix it --yes now", "--yes takes no value, so 'now' after it is not one: put --yes at the end, after "
                                "the description."),
    ("resolve abcd done --notes fixed it by hand", "--notes fixed is followed by more words, so where its value "
     "ends is unclear: use --notes=fixed after the other words, or --notes=\"fixed it by hand\" for a value with "
     "spaces."),
    ("assign --machine vm fix the login", "--machine vm is followed by more words, so where its value ends is "
     "unclear: use --machine=vm after the description, or put the description in quotes."),
    ("assign fix the login --agent claude and test it", "--agent claude is followed by more words"),
    ('resolve abcd done --notes "fixed it', "close the quote after --notes."),
    ("queue --status done extra", "--status done is followed by more words, so where its value ends is unclear: "
                                  "use --status=done after the verb."),
    ("queue --colour red", "unknown option --colour for queue."),
    ("queue --status finished", "unknown status 'finished'; use one of"),
    ("queue --limit many", "--limit must be a number, got 'many'."),
    ("assign x --priority 11", "--priority must be a number from 0 to 10, got '11'."),
])
def test_an_ambiguous_or_bad_value_names_the_fix(typed: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        grammar.parse(typed)
    assert caught.value.problem.startswith(problem)
    assert caught.value.usage.startswith(typed.split()[0])


@pytest.mark.parametrize(("argv", "problem"), [
    (["queue", "--json", "done"], "--json takes no value; if 'done' is the status, use --status=done."),
    (["assign", "--machine", "vm", "fix the login"], "--machine vm is followed by more words"),
    (["resolve", "abcd", "done", "--notes", "fixed", "it"], '--notes="fixed it" for a value with spaces'),
])
def test_the_shell_split_words_name_the_same_fixes(argv: list[str], problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        grammar.parse_argv(argv)
    assert problem in caught.value.problem


@pytest.mark.parametrize(("typed", "problem"), [
    ("show", "show takes one task id."),
    ("show a b", "show takes one task id."),
    ("resolve", "resolve takes a task id (or all) and a status."),
    ("resolve abcd", "say how to resolve it: done, failed, pending."),
    ("resolve abcd maybe", "unknown status 'maybe'; use one of done, failed, pending."),
    ("help a b", "help takes at most one verb."),
    ("run claude", "run needs an agent and a prompt."),
    ("ssh", "ssh takes one machine name."),
    ("skills list", "skills list takes one machine."),
    ("skills install box", "skills install takes a machine and a skill."),
    ("skills available extra", "skills available takes no words, only options."),
    ("skills list box --category dev", "unknown option --category for skills list."),
])
def test_each_verbs_words_are_checked_from_its_declaration(typed: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        grammar.parse(typed)
    assert caught.value.problem == problem or caught.value.problem.startswith(problem)


def test_sub_verbs_carry_their_own_effect() -> None:
    assert not grammar.parse("skills").changes_state
    assert not grammar.parse("skills available").changes_state
    assert grammar.parse("skills add box docker").changes_state
    assert grammar.parse("skills install box ruff").usage() == "skills install <machine> <skill>"


def test_usage_and_help_are_drawn_from_the_declarations() -> None:
    for line, verb in every_verb():
        assert verb.usage.startswith(line)
        for option in verb.options:
            assert f"--{option.name}={option.placeholder}" in verb.usage
        for flag in verb.flags:
            assert (f"[--{flag.name.replace('_', '-')}]" in verb.usage) == flag.shown
    assert grammar.VERBS["assign"].usage == ("assign <description> [--machine=X] [--agent=Y] [--type=Z] [--cwd=PATH] "
                                             "[--priority=N] [--repo=PATH ...] [--base=BRANCH] [--yes] "
                                             "[--wait-for-machine] [--push] [--pr]")
    skills = grammar.VERBS["skills"]
    assert all(f"skills {sub.usage}" in skills.help and sub.summary in skills.help for sub in skills.subverbs)


def test_every_declared_verb_has_one_function_in_a_table() -> None:
    shared = {name for name, verb in grammar.VERBS.items() if not verb.local}
    assert set(commands.VERB_FUNCTIONS) == shared
    assert set(local.LOCAL_VERBS) == set(grammar.VERBS) - shared
    with pytest.raises(ValueError, match=r"declare it in grammar\.VERBS first"):
        commands.verb("frobnicate")
    with pytest.raises(ValueError, match="runs only in the terminal client"):
        commands.verb("ssh")
    with pytest.raises(ValueError, match="has two functions"):
        commands.verb("queue")(commands.CommandLayer.queue)


async def test_help_and_a_terminal_verb_answer_without_the_queue() -> None:
    # Nothing listens on port 9: help and the terminal-only refusal never touch the network.
    layer = CommandLayer(QueueClient("http://127.0.0.1:9", "unused-secret"))
    try:
        listing = await layer.run(grammar.parse("help"))
        assert isinstance(listing, views.Help)
        assert [usage for usage, _ in listing.verbs] == [verb.usage for verb in grammar.VERBS.values()]
        detail = await layer.run(grammar.parse("help skills"))
        assert isinstance(detail, views.Help) and detail.detail == grammar.VERBS["skills"].help
        refused = await layer.run(grammar.parse("run claude hi"))
        assert refused == views.Message("run runs only in the terminal client.", ok=False)
        with pytest.raises(UsageError, match="unknown command 'frob'"):
            await layer.run(grammar.parse("help frob"))
    finally:
        await layer.client.close()
