"""Supervised agent sessions over ACP: the driver against a fake adapter that really speaks the
protocol over stdio (tests/fakes/fake_acp_agent.py, on PATH as claude-agent-acp), as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until
from da.worker import agent_session
from da.worker.agent_session import AcpCommand, AgentSession, Answer, Ask, Policy, TurnRequest
from da.worker.redact import Redactor

FAKE_AGENT = Path(__file__).parent / "fakes" / "fake_acp_agent.py"
# The real adapter's path; .ci/run installs it and sets this, so its test never skips there. Read
# at import, before the autouse fixture clears DA_* variables.
CLAUDE_ACP = os.environ.get("DA_TEST_CLAUDE_ACP", "")
CLAUDE_ACP_PACKAGE = "@zed-industries/claude-agent-acp"


class Recorder:
    """A reporter that records what the run reports and answers asks from a script; an answer of
    None is never given (the ask waits until it expires or the turn stops)."""

    def __init__(self, *answers: Answer | None) -> None:
        self.answers = list(answers)
        self.asks: list[Ask] = []
        self.expired_asks: list[Ask] = []
        self.updates: list[dict[str, Any]] = []

    async def progress(self, progress: dict[str, Any]) -> None:
        self.updates.append(progress)

    async def ask(self, ask: Ask) -> Answer:
        self.asks.append(ask)
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            await asyncio.Event().wait()
        assert answer is not None
        return answer

    async def expired(self, ask: Ask) -> None:
        self.expired_asks.append(ask)

    @property
    def latest(self) -> dict[str, Any]:
        return self.updates[-1] if self.updates else {}


class Fake:
    """The fake adapter on PATH under the adapter's name, its state folder and a task folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "claude-agent-acp").symlink_to(FAKE_AGENT)
        self.state = tmp_path / "state"
        self.cwd = tmp_path / "repo"
        self.cwd.mkdir()
        # The fake runs on this interpreter (it needs the acp package): its `python3` comes first.
        self.path = os.pathsep.join([str(self.bin), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": self.path, "FAKE_ACP_STATE": str(self.state)}

    def request(self, prompt: str, **fields: Any) -> TurnRequest:
        command = agent_session.acp_command("claude", path=self.path)
        assert command is not None
        return TurnRequest(command=command, cwd=self.cwd, prompt=prompt, env=self.env, **fields)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        path = self.state / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [event for event in map(json.loads, lines) if kind is None or event["event"] == kind]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


async def run(fake: Fake, prompt: str, reporter: Recorder | None = None, **fields: Any) -> agent_session.TurnResult:
    return await asyncio.wait_for(AgentSession(fake.request(prompt, **fields), reporter or Recorder()).run(), 60)


def test_the_acp_command_comes_from_machines_yaml_then_the_well_known_adapter_on_path(fake: Fake) -> None:
    assert agent_session.acp_command("claude", {"claude": "/opt/acp/claude-acp --verbose"}, path=fake.path) == \
        AcpCommand("claude", ("/opt/acp/claude-acp", "--verbose"))
    found = agent_session.acp_command("claude", {}, path=fake.path)
    assert found == AcpCommand("claude", (str(fake.bin / "claude-agent-acp"),))
    assert agent_session.acp_command("codex", {}, path=fake.path) is None
    assert agent_session.acp_command("groq", {}, path=fake.path) is None


def test_policy_allows_looking_asks_before_changing_and_refuses_what_the_machine_refuses() -> None:
    policy = Policy(refuse=frozenset({"delete"}))
    assert [policy.decide(kind) for kind in ("read", "search", "think")] == ["allow"] * 3
    assert [policy.decide(kind) for kind in ("execute", "edit", "move", "fetch", "other", None)] == ["ask"] * 6
    assert policy.decide("delete") == "refuse"
    assert policy.decide("execute", {"execute"}) == "allow"
    assert replace(policy, yolo=True).decide("execute") == "allow"
    assert replace(policy, yolo=True).decide("delete") == "refuse"


async def test_a_plain_prompt_streams_the_answer_and_reports_a_supervised_result(fake: Fake) -> None:
    result = await run(fake, "hello TOOLS")
    assert result.status == "done", result.reason
    assert result.stop_reason == "end_turn"
    assert "Done: hello TOOLS (turn 1)" in result.answer
    assert result.session_id == fake.events("new")[0]["session"]
    assert fake.events("new")[0]["cwd"] == str(fake.cwd)
    details = result.to_details()
    assert details["supervised"] is True
    assert details["usage"] == {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25}
    assert fake.events("permission") == []


async def test_an_execute_is_asked_and_allowed_once(fake: Fake) -> None:
    reporter = Recorder(Answer("allow", answered_by="ann"))
    result = await run(fake, "EXECUTE", reporter)
    assert result.status == "done", result.reason
    [ask] = reporter.asks
    assert (ask.kind, ask.title, ask.tool_kind) == ("permission", "Run make test", "execute")
    assert "make test" in ask.detail
    assert [(option.id, option.label) for option in ask.options] == [
        ("allow", "Allow"), ("always", "Always allow"), ("reject", "Reject")]
    assert "permission 1: allow" in result.answer
    assert result.asks == 1


async def test_allow_always_is_not_asked_again_for_that_kind_in_the_session(fake: Fake) -> None:
    reporter = Recorder(Answer("always"))
    result = await run(fake, "EXECUTE2", reporter)
    assert result.status == "done", result.reason
    assert len(reporter.asks) == 1
    assert [event["outcome"] for event in fake.events("permission")] == ["always", "allow"]
    # Only that session: the next task asks again.
    again = Recorder(Answer("reject"))
    await run(fake, "EXECUTE", again)
    assert len(again.asks) == 1


async def test_a_rejected_ask_reaches_the_agent_as_a_reject(fake: Fake) -> None:
    result = await run(fake, "EXECUTE", Recorder(Answer("reject", note="not now")))
    assert "permission 1: reject" in result.answer
    assert fake.events("permission")[0]["outcome"] == "reject"


async def test_an_unanswered_ask_expires_as_a_reject_and_is_recorded(fake: Fake) -> None:
    reporter = Recorder(None)
    result = await run(fake, "EXECUTE", reporter, ask_timeout=0.5)
    assert result.status == "done", result.reason
    assert [ask.id for ask in reporter.expired_asks] == [reporter.asks[0].id]
    assert "permission 1: reject" in result.answer
    assert any("nobody answered" in note for note in result.notes)


async def test_a_refused_kind_is_rejected_without_asking(fake: Fake) -> None:
    reporter = Recorder()
    result = await run(fake, "EXECUTE", reporter, policy=Policy(refuse=frozenset({"execute"})))
    assert reporter.asks == []
    assert "permission 1: reject" in result.answer
    assert any("refused by policy" in note for note in result.notes)


async def test_yolo_allows_without_asking(fake: Fake) -> None:
    reporter = Recorder()
    result = await run(fake, "EXECUTE", reporter, policy=Policy(yolo=True))
    assert reporter.asks == []
    assert "permission 1: allow" in result.answer


async def test_plan_mode_asks_to_approve_the_plan_and_goes_on_when_approved(fake: Fake) -> None:
    reporter = Recorder(Answer("approve", answered_by="ann"))
    result = await run(fake, "PLANMODE", reporter, plan=True)
    assert result.status == "done", result.reason
    assert fake.events("set_mode")[0]["mode"] == "plan"
    assert fake.events("prompt")[0]["mode"] == "plan"
    [ask] = reporter.asks
    assert ask.kind == "plan"
    assert [option.id for option in ask.options] == ["approve", "changes"]
    assert "Write the parser" in ask.detail
    # Approved with edits still asked for, one by one.
    assert "plan approved (default), coding" in result.answer
    assert fake.events("permission")[0]["outcome"] == "default"


async def test_a_plan_change_request_is_the_next_prompt_and_the_revised_plan_is_asked_again(fake: Fake) -> None:
    reporter = Recorder(Answer("changes", note="Also write the docs"), Answer("approve"))
    result = await run(fake, "PLANMODE", reporter, plan=True)
    assert result.status == "done", result.reason
    assert "plan rejected, still planning" in result.answer
    prompts = fake.events("prompt")
    assert [(event["text"], event["mode"]) for event in prompts] == [
        ("PLANMODE", "plan"), ("Also write the docs", "plan"), (agent_session.APPROVED_PROMPT, "default")]
    # The second turn ended still planning: its plan was asked at the turn's end.
    assert [ask.kind for ask in reporter.asks] == ["plan", "plan"]
    assert [event["mode"] for event in fake.events("set_mode")] == ["plan", "default"]


async def test_a_cancel_withdraws_the_plan_asked_at_the_turns_end(fake: Fake) -> None:
    reporter = Recorder(None)
    session = AgentSession(fake.request("PLAN", plan=True), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async(bool(reporter.asks)), timeout=20)
    assert reporter.asks[0].kind == "plan"
    assert "1. Read the code\n2. Change it" in reporter.asks[0].detail
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert reporter.expired_asks == []
    assert len(fake.events("prompt")) == 1


async def test_the_agents_question_is_asked_with_its_choices(fake: Fake) -> None:
    reporter = Recorder(Answer("green"))
    result = await run(fake, "QUESTION", reporter)
    [ask] = reporter.asks
    assert (ask.kind, ask.title) == ("question", "Which colour?")
    assert [(option.id, option.label) for option in ask.options] == [("red", "Red"), ("green", "Green"),
                                                                     ("blue", "Blue")]
    assert "colour: green" in result.answer


async def test_progress_shows_plan_tools_and_answer_while_the_agent_runs(fake: Fake) -> None:
    reporter = Recorder()
    session = AgentSession(fake.request("PLAN TOOLS SLOW"), reporter)
    running = asyncio.create_task(session.run())

    async def shown() -> bool:
        latest = reporter.latest
        return bool(latest.get("plan") and len(latest.get("tools", [])) == 3 and "line 5" in latest["answer_tail"])

    await wait_until(shown, timeout=20)
    assert not running.done()
    latest = reporter.latest
    assert latest["plan"] == [{"content": "Read the code", "status": "completed"},
                              {"content": "Change it", "status": "in_progress"}]
    assert [(tool["title"], tool["kind"], tool["status"]) for tool in latest["tools"]] == [
        ("Read README.md", "read", "completed"), ("Search for TODO", "search", "completed"),
        ("Run ls", "execute", "completed")]
    assert len(latest["answer_tail"].splitlines()) <= agent_session.PROGRESS_LINES
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    # Coalesced: ten lines a second from the agent, at most one update per interval.
    assert len(reporter.updates) <= len(fake.events("prompt")) + 2 + int(
        (fake.events("cancel")[0]["at"] - fake.events("prompt")[0]["at"]) / agent_session.PROGRESS_INTERVAL) + 2


async def test_a_steering_message_is_the_next_prompt_at_the_turn_boundary(fake: Fake) -> None:
    session = AgentSession(fake.request("BRIEF"), Recorder())
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async(bool(fake.events("prompt"))), timeout=20)
    session.say("now the tests")
    result = await asyncio.wait_for(running, 30)
    assert result.status == "done", result.reason
    assert [event["text"] for event in fake.events("prompt")] == ["BRIEF", "now the tests"]
    assert fake.events("cancel") == []
    assert "Done: BRIEF (turn 1)" in result.answer and "Done: now the tests (turn 2)" in result.answer


async def test_an_interrupting_message_cancels_the_turn_and_is_sent_at_once(fake: Fake) -> None:
    reporter = Recorder()
    session = AgentSession(fake.request("SLOW"), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async("line 2" in reporter.latest.get("answer_tail", "")), timeout=20)
    session.say("stop, do this instead", interrupt=True)
    result = await asyncio.wait_for(running, 30)
    assert result.status == "done", result.reason
    events = [event["event"] for event in fake.events() if event["event"] in ("prompt", "cancel")]
    assert events == ["prompt", "cancel", "prompt"]
    assert fake.events("prompt")[1]["text"] == "stop, do this instead"
    assert "Done: stop, do this instead (turn 2)" in result.answer
    assert [turn.input_tokens for turn in result.turns] == [100, 100]


async def test_cancel_sends_session_cancel_and_the_agent_ends_its_turn_without_a_signal(fake: Fake) -> None:
    reporter = Recorder()
    session = AgentSession(fake.request("SLOW"), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async("line 1" in reporter.latest.get("answer_tail", "")), timeout=20)
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert result.stop_reason == "cancelled"
    assert "line 1" in result.answer
    assert len(fake.events("cancel")) == 1
    assert fake.events("sigterm") == []


async def test_a_cancel_before_the_session_is_open_stops_at_once(fake: Fake) -> None:
    fake.env["FAKE_ACP_MODE"] = "slow_init"
    session = AgentSession(fake.request("hello"), Recorder())
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async(bool(fake.events("initialize"))), timeout=20)
    session.cancel()
    result = await asyncio.wait_for(running, 15)
    assert result.status == "cancelled"
    assert fake.events("prompt") == []


@pytest.mark.parametrize(("prompt", "signalled"), [("SLOW", []), ("STUBBORN", ["sigterm"])])
async def test_cancelling_the_worker_task_still_sends_session_cancel_before_any_signal(
        fake: Fake, prompt: str, signalled: list[str]) -> None:
    reporter = Recorder()
    running = asyncio.create_task(AgentSession(fake.request(prompt, cancel_grace=0.5), reporter).run())
    await wait_until(lambda: _async("line 1" in reporter.latest.get("answer_tail", "")), timeout=20)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 30)
    assert [event["event"] for event in fake.events() if event["event"] in ("cancel", "sigterm")] == [
        "cancel", *signalled]


async def test_an_agent_that_ignores_cancel_is_stopped_after_the_grace_period(fake: Fake) -> None:
    reporter = Recorder()
    session = AgentSession(fake.request("STUBBORN", cancel_grace=0.5), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async("line 1" in reporter.latest.get("answer_tail", "")), timeout=20)
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert [event["event"] for event in fake.events() if event["event"] in ("cancel", "sigterm")] == [
        "cancel", "sigterm"]
    assert any("did not end its turn" in note for note in result.notes)
    assert "line 1" in result.answer


async def test_a_cancel_while_an_ask_is_open_answers_it_cancelled(fake: Fake) -> None:
    reporter = Recorder(None)
    session = AgentSession(fake.request("EXECUTE"), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async(bool(reporter.asks)), timeout=20)
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert fake.events("permission")[0]["outcome"] == "cancelled"
    assert reporter.expired_asks == []


async def test_usage_is_summed_per_turn_and_for_the_run(fake: Fake) -> None:
    session = AgentSession(fake.request("hello"), Recorder())
    session.say("again")
    result = await asyncio.wait_for(session.run(), 30)
    assert [turn.to_dict() for turn in result.turns] == [
        {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25}] * 2
    assert result.usage.to_dict() == {"input_tokens": 200, "output_tokens": 40, "cost_usd": 0.5}


async def test_a_run_past_its_budget_is_cancelled_and_needs_a_person(fake: Fake) -> None:
    result = await run(fake, "BUDGET", budget_usd=0.5)
    assert result.status == "needs_human"
    assert "budget of $0.50" in result.reason
    assert result.usage.cost_usd is not None and result.usage.cost_usd > 0.5
    assert len(fake.events("cancel")) == 1


async def test_a_follow_up_loads_the_session_in_a_new_process(fake: Fake) -> None:
    first = await run(fake, "first")
    assert first.session_id
    second = await run(fake, "second", session_id=first.session_id)
    assert second.status == "done", second.reason
    assert second.session_id == first.session_id
    [load] = fake.events("load")
    assert load["session"] == first.session_id
    assert load["pid"] != fake.events("new")[0]["pid"]
    assert "Done: second (turn 2)" in second.answer
    # The replayed history is not this run's answer, nor its cost.
    assert "earlier answer" not in second.answer and "first" not in second.answer
    assert second.usage.cost_usd == 0.25


async def test_a_follow_up_from_another_folder_needs_a_person(fake: Fake, tmp_path: Path) -> None:
    first = await run(fake, "first")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    request = replace(fake.request("second", session_id=first.session_id), cwd=elsewhere)
    result = await asyncio.wait_for(AgentSession(request, Recorder()).run(), 30)
    assert result.status == "needs_human"
    assert f"has no session {first.session_id} in {elsewhere}" in result.reason


async def test_an_adapter_that_crashes_fails_the_run_with_its_last_output(fake: Fake) -> None:
    result = await run(fake, "CRASH")
    assert result.status == "failed"
    assert "exited with status 3" in result.reason
    assert "segmentation fault" in result.reason and "segmentation fault" in result.output
    assert "Working on: CRASH" in result.answer


async def test_broken_json_rpc_fails_the_run_and_stops_the_adapter(fake: Fake) -> None:
    result = await run(fake, "BROKEN")
    assert result.status == "failed"
    assert "broken JSON-RPC" in result.reason and "oops" in result.reason
    assert "Working on: BROKEN" in result.answer


async def test_a_malformed_answer_fails_the_run_saying_what_was_wrong(fake: Fake) -> None:
    result = await run(fake, "MALFORMED")
    assert result.status == "failed"
    assert "sent a message that is not ACP (PromptResponse stopReason" in result.reason
    assert "Working on: MALFORMED" in result.answer


async def test_broken_json_rpc_before_initialize_fails_the_run(fake: Fake) -> None:
    fake.env["FAKE_ACP_MODE"] = "broken_init"
    result = await run(fake, "hello")
    assert result.status == "failed"
    assert "broken JSON-RPC during initialize" in result.reason


async def test_a_permission_flood_is_bounded(fake: Fake) -> None:
    reporter = Recorder(*[Answer("reject")] * 2000)
    result = await run(fake, "FLOOD", reporter)
    assert result.status == "done", result.reason
    assert len(reporter.asks) == agent_session.MAX_ASKS
    assert 'flood outcomes: {"reject": 1000}' in result.answer
    assert any(f"more than {agent_session.MAX_ASKS} times" in note for note in result.notes)


async def test_an_edit_is_asked_with_its_diff_and_secrets_are_redacted_everywhere(fake: Fake) -> None:
    secret = "hunter2-very-secret"
    fake.env["FAKE_ACP_SECRET"] = secret
    reporter = Recorder(Answer("allow"))
    result = await run(fake, f"EDIT the token {secret}", reporter, redact=Redactor.from_env({"API_TOKEN": secret}))
    [ask] = reporter.asks
    assert (ask.kind, ask.tool_kind, ask.title) == ("permission", "edit", "Edit config.py")
    assert f"--- {fake.cwd}/config.py" in ask.detail and "TOKEN = '[redacted]'" in ask.detail
    assert "edit: allow" in result.answer
    assert secret not in json.dumps([ask.to_dict(), result.to_details(), reporter.updates])
    assert "[redacted]" in result.answer


async def test_a_long_answer_keeps_its_end_and_says_how_much_was_cut(fake: Fake) -> None:
    reporter = Recorder()
    result = await run(fake, "LONG", reporter)
    details = result.to_details()
    assert len(details["answer"]) == agent_session.MAX_ANSWER
    assert "Done: LONG (turn 1)" in details["answer"]
    assert details["answer_truncated"].startswith("first ") and result.answer_cut > 130_000
    assert all(len(update["answer_tail"]) <= agent_session.PROGRESS_CHARS for update in reporter.updates)


async def test_a_run_past_its_timeout_is_stopped_and_fails(fake: Fake) -> None:
    result = await run(fake, "SLOW", timeout=5.0)
    assert result.status == "failed"
    assert "past the task's timeout of 5s" in result.reason
    assert len(fake.events("prompt")) == len(fake.events("cancel")) == 1
    assert "line 1" in result.answer


async def test_messages_not_sent_before_a_cancel_are_handed_back(fake: Fake) -> None:
    reporter = Recorder()
    session = AgentSession(fake.request("SLOW"), reporter)
    running = asyncio.create_task(session.run())
    await wait_until(lambda: _async("line 1" in reporter.latest.get("answer_tail", "")), timeout=20)
    session.say("later, please")
    session.cancel()
    result = await asyncio.wait_for(running, 30)
    assert result.status == "cancelled"
    assert result.to_details()["undelivered_messages"] == ["later, please"]
    assert len(fake.events("prompt")) == 1


async def test_a_missing_adapter_fails_with_a_sentence(fake: Fake) -> None:
    request = replace(fake.request("hello"), command=AcpCommand("claude", ("no-such-acp-adapter",)))
    result = await asyncio.wait_for(AgentSession(request, Recorder()).run(), 30)
    assert result.status == "failed"
    assert "cannot start no-such-acp-adapter for claude" in result.reason


def real_claude_acp(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The real adapter: DA_TEST_CLAUDE_ACP, else on PATH, else installed with npm into pytest's cache."""
    if CLAUDE_ACP:
        if not Path(CLAUDE_ACP).is_file():
            pytest.fail(f"DA_TEST_CLAUDE_ACP={CLAUDE_ACP} is not a file; install the adapter with "
                        f"`npm install --prefix <dir> {CLAUDE_ACP_PACKAGE}` and name <dir>/node_modules/.bin/"
                        "claude-agent-acp")
        return Path(CLAUDE_ACP)
    if found := shutil.which("claude-agent-acp"):
        return Path(found)
    npm = shutil.which("npm")
    if not shutil.which("node") or not npm:
        pytest.skip("node and npm are not installed (DA_TEST_CLAUDE_ACP names the adapter in CI)")
    cache = getattr(request.config, "cache", None)
    # Without pytest's cache (-p no:cacheprovider) it is installed for this test alone.
    folder = cache.mkdir("claude-agent-acp") if cache is not None else tmp_path / "claude-agent-acp"
    adapter = folder / "node_modules" / ".bin" / "claude-agent-acp"
    if not adapter.is_file():
        installed = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                                    CLAUDE_ACP_PACKAGE], capture_output=True, text=True, timeout=300)
        if installed.returncode != 0:
            pytest.skip(f"npm could not install {CLAUDE_ACP_PACKAGE}: {installed.stderr.strip()[-300:]}")
    return adapter


@pytest.mark.timeout(400)
async def test_the_real_claude_agent_acp_answers_das_initialize(request: pytest.FixtureRequest,
                                                                 tmp_path: Path) -> None:
    adapter = real_claude_acp(request, tmp_path)
    # Its own HOME: initialize must need no login, and the developer's Claude settings stay untouched.
    home = tmp_path / "home"
    home.mkdir()
    answer = await asyncio.wait_for(agent_session.handshake(
        AcpCommand("claude", (str(adapter),)), cwd=tmp_path, env={**os.environ, "HOME": str(home)}), 120)
    assert answer.ok, answer.reason
    assert answer.name == CLAUDE_ACP_PACKAGE
    assert answer.protocol_version == 1
    assert answer.load_session is True
    assert answer.capabilities["promptCapabilities"]["image"] is True


async def test_a_handshake_with_a_broken_adapter_says_why(fake: Fake) -> None:
    fake.env["FAKE_ACP_MODE"] = "broken_init"
    command = agent_session.acp_command("claude", path=fake.path)
    assert command is not None
    answer = await asyncio.wait_for(agent_session.handshake(command, cwd=fake.cwd, env=fake.env), 30)
    assert not answer.ok
    assert "broken JSON-RPC during initialize" in answer.reason


async def _async(value: Any) -> Any:
    return value
