"""Routing tables for both routers, and the validation every assign passes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from da.bot import grammar
from da.bot.grammar import UsageError
from da.bot.router import LlmRouter, RulesRouter, type_from_words, validate
from da.fleet import Fleet, Machine

MAC = Machine("mac-mini", capabilities=("ios_build", "xcode", "agent_run", "run_script", "git_pull"),
              agents=("claude", "gemini"), aliases=("mac",), os="macos", online=True, active=2)
LINUX = Machine("thinkpad-x1", capabilities=("android_build", "agent_run", "run_script", "test_run", "lint"),
                agents=("gemini",), aliases=("thinkpad",), os="linux", online=True, active=0)
ASLEEP = Machine("old-laptop", capabilities=("agent_run", "run_script", "test_run"), agents=("codex",), os="linux",
                 online=False)
FLEET = Fleet((MAC, LINUX, ASLEEP))


@pytest.mark.parametrize(("description", "expected"), [
    ("fix the SwiftUI crash on iOS", "ios_build"),
    ("xcode archive for testflight", "ios_build"),
    ("android release with gradle", "android_build"),
    ("lint the backend", "lint"),
    ("run the tests for payments", "test_run"),
    ("pull latest main", "git_pull"),
    ("npm build the docs site", "npm_build"),
    ("deploy staging", "run_script"),
    ("refactor the auth module", "agent_run"),
])
def test_rules_pick_the_type_from_words(description: str, expected: str) -> None:
    assert type_from_words(description)[0] == expected


async def test_rules_prefer_an_online_idle_capable_machine() -> None:
    suggestion = await RulesRouter().suggest("run the tests", FLEET)
    assert (suggestion.type, suggestion.machine, suggestion.agent) == ("test_run", "thinkpad-x1", None)
    assert "thinkpad-x1 can run it and is online with 0 active" in suggestion.reason


async def test_rules_pick_an_agent_the_machine_lists() -> None:
    suggestion = await RulesRouter().suggest("refactor auth", FLEET, agent="claude")
    assert (suggestion.machine, suggestion.agent) == ("mac-mini", "claude")
    suggestion = await RulesRouter().suggest("refactor auth", FLEET)
    assert (suggestion.machine, suggestion.agent) == ("thinkpad-x1", "gemini")


async def test_rules_with_no_capable_machine_say_so() -> None:
    suggestion = await RulesRouter().suggest("npm build it", FLEET)
    assert suggestion.machine == "" and "skills add <machine> npm_build" in suggestion.warnings[0]


@pytest.mark.parametrize(("args", "error"), [
    (("android_build", "mac-mini", None), "mac-mini cannot run android_build; machines that can: thinkpad-x1."),
    (("agent_run", "toaster", "claude"), "unknown machine 'toaster'; known machines: mac-mini, thinkpad-x1, "
                                         "old-laptop."),
    (("agent_run", "mac", "hal9000"), "unknown agent 'hal9000'; known agents: claude, codex, gemini, groq."),
    (("teleport", "mac", None), "unknown type 'teleport'"),
])
def test_validation_blocks_with_the_known_names(args, error: str) -> None:
    verdict = validate(FLEET, *args)
    assert not verdict.ok and verdict.errors[0].startswith(error)


def test_an_agent_the_machine_does_not_list_is_refused_naming_who_has_it() -> None:
    verdict = validate(FLEET, "agent_run", "thinkpad", "claude")
    assert verdict.errors == ("thinkpad-x1 does not list agent claude (it lists gemini); machines that have claude: "
                              "mac-mini. Pick one of them, or add --wait-for-machine to queue it for thinkpad-x1 "
                              "anyway.",)
    waiting = validate(FLEET, "agent_run", "thinkpad", "claude", wait_for_machine=True)
    assert waiting.ok and waiting.warnings[0].endswith("it waits until thinkpad-x1 runs a worker with claude.")


FAKE_CLAUDE = """#!/bin/sh
# Asked like the real CLI: -p is a flag, the prompt comes after --.
[ "$1" = "-p" ] && [ "$2" = "--" ] || { echo "error: unknown option '$2'" >&2; exit 1; }
case "$ROUTER_MODE" in
  good) echo 'Sure: {"machine": "mac-mini", "agent": "claude", "type": "ios_build", "reason": "it has Xcode"}' ;;
  bad) echo 'I think the mac, probably.' ;;
  wrong) echo '{"machine": "toaster", "agent": null, "type": "agent_run", "reason": "why not"}' ;;
  slow) sleep 5 ;;
  wrapper) sleep 60 & echo $! > "$CHILD_PID_FILE"; wait ;;
esac
"""


@pytest.fixture
def fake_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "claude"
    script.write_text(FAKE_CLAUDE)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("mode", "machine", "reason"), [
    ("good", "mac-mini", "it has Xcode"),
    ("bad", "thinkpad-x1", "LLM router fell back to rules: its answer had no JSON"),
    ("wrong", "thinkpad-x1", "LLM router fell back to rules: its answer was invalid (unknown machine 'toaster'"),
    ("slow", "thinkpad-x1", "LLM router fell back to rules: no answer within 0.5s"),
])
async def test_llm_router_answers_or_falls_back(fake_claude, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                machine: str, reason: str) -> None:
    monkeypatch.setenv("ROUTER_MODE", mode)
    suggestion = await LlmRouter("claude", timeout=0.5).suggest("refactor the auth module", FLEET)
    assert suggestion.machine == machine
    assert reason in suggestion.reason


async def test_llm_router_timeout_holds_for_a_wrapper_with_children(fake_claude, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import time

    from conftest import wait_until

    monkeypatch.setenv("ROUTER_MODE", "wrapper")
    monkeypatch.setenv("CHILD_PID_FILE", str(tmp_path / "child.pid"))
    started = time.monotonic()
    suggestion = await LlmRouter("claude", timeout=0.5).suggest("refactor the auth module", FLEET)
    assert "no answer within 0.5s" in suggestion.reason
    assert time.monotonic() - started < 30  # the child sleeps 60 s: waiting for it would take that long
    child = int((tmp_path / "child.pid").read_text())

    async def gone() -> bool:
        stat = Path(f"/proc/{child}/stat")
        # Killed and not yet reaped by init is gone too (state Z).
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"

    await wait_until(gone)


async def test_llm_router_without_the_cli_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    suggestion = await LlmRouter("claude").suggest("run the tests", FLEET)
    assert suggestion.router == "rules" and "claude is not installed here" in suggestion.reason


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
    ("skills teleport", "unknown skills command 'teleport'."),
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
