"""Routing tables for both routers, and the validation every assign passes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

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
    ("slow", "thinkpad-x1", "LLM router fell back to rules: no answer within 2s"),
])
async def test_llm_router_answers_or_falls_back(fake_claude, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                machine: str, reason: str) -> None:
    monkeypatch.setenv("ROUTER_MODE", mode)
    # Long enough that a busy machine starting the fake is not taken for a slow model.
    suggestion = await LlmRouter("claude", timeout=2.0).suggest("refactor the auth module", FLEET)
    assert suggestion.machine == machine
    assert reason in suggestion.reason


async def test_llm_router_timeout_holds_for_a_wrapper_with_children(fake_claude, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import time

    from tests.support.waiting import wait_until

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
