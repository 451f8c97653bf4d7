#!/usr/bin/env python3
"""A stand-in for an ACP adapter (claude-agent-acp, codex-acp): the real protocol over stdio,
written with the `acp` package's agent side, with behaviour chosen by words in the prompt.

Every prompt streams an answer that names the prompt and the session's turn number, reports
`usage_update` (the session's cumulative cost, +0.25 USD a turn) and usage in its response
(100 input, 20 output tokens). Words in the prompt add to that:
- PLAN: a plan of two entries, updated as they are done. TOOLS: a read, a search and an
  execute tool call, each from pending to completed.
- EXECUTE: asks permission to run `make test` (allow once / allow always / reject); EXECUTE2 asks
  twice. The answer says which option it got.
- EDIT: asks permission for an edit of config.py, with its diff (it writes FAKE_ACP_SECRET into it).
- LONG: streams 200,000 characters of answer in 1,000-character chunks.
- QUESTION: asks which colour, as a permission request whose options are the choices.
- PLANMODE (in the `plan` mode): a plan, then asks to leave plan mode (kind switch_mode) as
  Claude's ExitPlanMode does; approval switches to `default` and the turn goes on.
- BRIEF: streams five lines, 0.1 s apart. SLOW: a line every 0.1 s for up to 30 s.
  STUBBORN: the same, ignoring session/cancel.
- BUDGET: reports a rising cost every 0.05 s for up to 30 s.
- FLOOD: asks permission for an execute, 1000 times in a row.
- MALFORMED: answers the prompt with a stop reason that is not one.
- CRASH: exits with status 3 mid-turn, saying why on stderr. BROKEN: writes a line that is not
  JSON-RPC, then hangs.
FAKE_ACP_MODE=broken_init answers `initialize` with a line that is not JSON; slow_init answers it after
a minute.

Sessions are kept in FAKE_ACP_STATE/sessions.json (id → folder and prompts), so another process
can `session/load` one: it replays the earlier turns as user/agent message chunks. Everything the
agent hears (initialize, new, load, prompt, cancel, set_mode, permission outcomes, SIGTERM) is
appended with its pid to FAKE_ACP_STATE/events.jsonl.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from da.worker.acp_loading import load_acp

load_acp()  # the suite starts this fake some fifty times

import acp  # noqa: E402
from acp import schema  # noqa: E402

STATE = Path(os.environ.get("FAKE_ACP_STATE") or Path(__file__).parent)
SESSIONS = STATE / "sessions.json"
EVENTS = STATE / "events.jsonl"
COST_PER_TURN = 0.25
PERMISSION_OPTIONS = [
    schema.PermissionOption(option_id="allow", name="Allow", kind="allow_once"),
    schema.PermissionOption(option_id="always", name="Always allow", kind="allow_always"),
    schema.PermissionOption(option_id="reject", name="Reject", kind="reject_once"),
]
COLOURS = [schema.PermissionOption(option_id=colour, name=colour.title(), kind="allow_once")
           for colour in ("red", "green", "blue")]
EXIT_PLAN_OPTIONS = [
    schema.PermissionOption(option_id="acceptEdits", name="Yes, and auto-accept edits", kind="allow_always"),
    schema.PermissionOption(option_id="default", name="Yes, and manually approve edits", kind="allow_once"),
    schema.PermissionOption(option_id="plan", name="No, keep planning", kind="reject_once"),
]
MODES = schema.SessionModeState(current_mode_id="default", available_modes=[
    schema.SessionMode(id="default", name="Default"), schema.SessionMode(id="plan", name="Plan mode")])


def record(event: str, **fields: Any) -> None:
    with EVENTS.open("a") as file:
        file.write(json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **fields}) + "\n")


def load_sessions() -> dict[str, Any]:
    return json.loads(SESSIONS.read_text()) if SESSIONS.exists() else {}


def save_session(session_id: str, cwd: str, prompts: list[str]) -> None:
    sessions = load_sessions()
    sessions[session_id] = {"cwd": cwd, "prompts": prompts}
    SESSIONS.write_text(json.dumps(sessions))


class Session:
    def __init__(self, session_id: str, cwd: str, prompts: list[str]) -> None:
        self.id = session_id
        self.cwd = cwd
        self.prompts = prompts
        self.mode = "default"
        self.cost = 0.0
        self.cancelled = asyncio.Event()


class FakeAgent:
    def __init__(self) -> None:
        self.client: Any = None
        self.sessions: dict[str, Session] = {}

    def on_connect(self, conn: Any) -> None:
        self.client = conn

    async def initialize(self, protocol_version: int, client_capabilities: Any = None, client_info: Any = None,
                         **kwargs: Any) -> schema.InitializeResponse:
        record("initialize", client=client_info.name if client_info else None)
        if os.environ.get("FAKE_ACP_MODE") == "slow_init":
            await asyncio.sleep(60)
        if os.environ.get("FAKE_ACP_MODE") == "broken_init":
            sys.stdout.write("this is not JSON-RPC\n")
            sys.stdout.flush()
            await asyncio.sleep(60)
        return schema.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=schema.AgentCapabilities(load_session=True),
            agent_info=schema.Implementation(name="fake-acp-agent", version="1.0"))

    async def new_session(self, cwd: str, additional_directories: list[str] | None = None,
                          mcp_servers: Any = None, **kwargs: Any) -> schema.NewSessionResponse:
        session = Session(str(uuid.uuid4()), cwd, [])
        self.sessions[session.id] = session
        save_session(session.id, cwd, [])
        record("new", session=session.id, cwd=cwd, additional_directories=additional_directories)
        return schema.NewSessionResponse(session_id=session.id, modes=MODES)

    async def load_session(self, cwd: str, session_id: str, mcp_servers: Any = None,
                           additional_directories: list[str] | None = None,
                           **kwargs: Any) -> schema.LoadSessionResponse:
        stored = load_sessions().get(session_id)
        if stored is None or stored["cwd"] != cwd:
            record("load_refused", session=session_id, cwd=cwd)
            raise acp.RequestError.resource_not_found(session_id)
        session = Session(session_id, cwd, list(stored["prompts"]))
        self.sessions[session_id] = session
        record("load", session=session_id, cwd=cwd)
        for number, prompt in enumerate(session.prompts, 1):
            await self.say(session, acp.update_user_message_text(prompt))
            await self.say(session, acp.update_agent_message_text(f"(earlier answer {number})"))
        return schema.LoadSessionResponse(modes=MODES)

    async def set_session_mode(self, session_id: str, mode_id: str, **kwargs: Any) -> schema.SetSessionModeResponse:
        record("set_mode", session=session_id, mode=mode_id)
        session = self.sessions[session_id]
        session.mode = mode_id
        await self.say(session, acp.helpers.update_current_mode(mode_id))
        return schema.SetSessionModeResponse()

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        record("cancel", session=session_id)
        if session := self.sessions.get(session_id):
            session.cancelled.set()

    async def say(self, session: Session, update: Any) -> None:
        await self.client.session_update(session_id=session.id, update=update)

    async def ask(self, session: Session, tool_call: schema.ToolCallUpdate,
                  options: list[schema.PermissionOption]) -> str:
        """The option the client chose, or "cancelled"."""
        response = await self.client.request_permission(session_id=session.id, tool_call=tool_call, options=options)
        outcome = response.outcome
        chosen = outcome.option_id if isinstance(outcome, schema.AllowedOutcome) else "cancelled"
        record("permission", session=session.id, title=tool_call.title, outcome=chosen)
        return chosen

    async def prompt(self, prompt: list[Any], session_id: str, **kwargs: Any) -> schema.PromptResponse:
        session = self.sessions[session_id]
        session.cancelled.clear()
        text = " ".join(block.text for block in prompt if getattr(block, "text", None))
        words = set(text.replace(",", " ").replace(".", " ").split())
        session.prompts.append(text)
        save_session(session.id, session.cwd, session.prompts)
        record("prompt", session=session_id, text=text, mode=session.mode)
        turn = len(session.prompts)
        stop = await self.turn(session, text, words)
        if "MALFORMED" in words:
            return {"stopReason": 42}  # type: ignore[return-value]
        if stop != "cancelled":
            await self.say(session, acp.update_agent_message_text(f"\nDone: {text} (turn {turn})"))
        session.cost += COST_PER_TURN
        await self.say(session, schema.UsageUpdate(session_update="usage_update", used=1000 * turn, size=200000,
                                                   cost=schema.Cost(amount=session.cost, currency="USD")))
        return schema.PromptResponse(stop_reason=stop, usage=schema.Usage(
            input_tokens=100, output_tokens=20, total_tokens=120))

    async def turn(self, session: Session, text: str, words: set[str]) -> str:
        await self.say(session, acp.update_agent_message_text(f"Working on: {text}"))
        if "CRASH" in words:
            sys.stderr.write("fake agent crashed: segmentation fault\n")
            sys.stderr.flush()
            os._exit(3)
        if "BROKEN" in words:
            sys.stdout.write("{\"jsonrpc\": \"2.0\", \"method\": oops}\n")
            sys.stdout.flush()
            await asyncio.sleep(60)
        if "PLAN" in words:
            entries = [acp.plan_entry("Read the code"), acp.plan_entry("Change it")]
            await self.say(session, acp.update_plan(entries))
            entries[0] = acp.plan_entry("Read the code", status="completed")
            entries[1] = acp.plan_entry("Change it", status="in_progress")
            await self.say(session, acp.update_plan(entries))
        if "TOOLS" in words:
            for number, (title, kind) in enumerate((("Read README.md", "read"), ("Search for TODO", "search"),
                                                    ("Run ls", "execute")), 1):
                await self.say(session, acp.start_tool_call(f"t{number}", title, kind=kind, status="pending"))
                await self.say(session, acp.update_tool_call(f"t{number}", status="completed"))
        if "PLANMODE" in words and session.mode == "plan":
            await self.say(session, acp.update_plan([acp.plan_entry("Write the parser"),
                                                     acp.plan_entry("Test it")]))
            plan = "1. Write the parser\n2. Test it"
            chosen = await self.ask(session, schema.ToolCallUpdate(
                tool_call_id="exit-plan", title="Ready to code?", kind="switch_mode",
                content=[acp.tool_content(acp.text_block(plan))], raw_input={"plan": plan}), EXIT_PLAN_OPTIONS)
            if chosen == "cancelled":
                return "cancelled"
            if chosen == "plan":
                await self.say(session, acp.update_agent_message_text("\nplan rejected, still planning"))
                return "end_turn"
            session.mode = chosen
            await self.say(session, acp.helpers.update_current_mode(chosen))
            await self.say(session, acp.update_agent_message_text(f"\nplan approved ({chosen}), coding"))
        for word, times in (("EXECUTE", 1), ("EXECUTE2", 2)):
            if word in words:
                for number in range(times):
                    chosen = await self.ask(session, schema.ToolCallUpdate(
                        tool_call_id=f"exec{number}", title="Run make test", kind="execute", status="pending",
                        raw_input={"command": "make test"}), PERMISSION_OPTIONS)
                    if chosen == "cancelled":
                        return "cancelled"
                    await self.say(session, acp.update_agent_message_text(f"\npermission {number + 1}: {chosen}"))
        if "EDIT" in words:
            secret = os.environ.get("FAKE_ACP_SECRET", "")
            chosen = await self.ask(session, schema.ToolCallUpdate(
                tool_call_id="edit", title="Edit config.py", kind="edit", status="pending",
                content=[acp.tool_diff_content(f"{session.cwd}/config.py", f"TOKEN = '{secret}'\n", "TOKEN = ''\n")]),
                PERMISSION_OPTIONS)
            await self.say(session, acp.update_agent_message_text(f"\nedit: {chosen}"))
        if "LONG" in words:
            for number in range(200):
                await self.say(session, acp.update_agent_message_text(f"{number:04d}" + "x" * 996))
        if "QUESTION" in words:
            chosen = await self.ask(session, schema.ToolCallUpdate(
                tool_call_id="question", title="Which colour?", kind="other"), COLOURS)
            if chosen == "cancelled":
                return "cancelled"
            await self.say(session, acp.update_agent_message_text(f"\ncolour: {chosen}"))
        if "FLOOD" in words:
            outcomes: dict[str, int] = {}
            for number in range(1000):
                chosen = await self.ask(session, schema.ToolCallUpdate(
                    tool_call_id=f"flood{number}", title=f"Run step {number}", kind="execute",
                    raw_input={"command": f"step {number}"}), PERMISSION_OPTIONS)
                outcomes[chosen] = outcomes.get(chosen, 0) + 1
            await self.say(session, acp.update_agent_message_text(f"\nflood outcomes: {json.dumps(outcomes)}"))
        if words & {"SLOW", "STUBBORN", "BRIEF"}:
            for number in range(5 if "BRIEF" in words else 300):
                if session.cancelled.is_set() and "STUBBORN" not in words:
                    return "cancelled"
                await self.say(session, acp.update_agent_message_text(f"\nline {number}"))
                await asyncio.sleep(0.1)
        if "BUDGET" in words:
            for _ in range(600):
                if session.cancelled.is_set():
                    return "cancelled"
                session.cost += 0.1
                await self.say(session, schema.UsageUpdate(session_update="usage_update", used=5000, size=200000,
                                                           cost=schema.Cost(amount=session.cost, currency="USD")))
                await asyncio.sleep(0.05)
        return "cancelled" if session.cancelled.is_set() else "end_turn"


def on_sigterm(*_: Any) -> None:
    record("sigterm")
    os._exit(143)


def main() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    asyncio.run(acp.run_agent(FakeAgent()))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
