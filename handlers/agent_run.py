"""Run an AI coding agent (claude, gemini, codex as CLIs; groq over its HTTP API) on a prompt.

A task can continue a conversation: `resume` names the session an earlier run reported (claude
and codex resume it), `context` carries the earlier turns for an agent that cannot resume. The
result carries the agent's `answer` and, when it reported one, the `session_id` to resume next.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from da import agents
from da.handlers import _agent_session
from da.handlers.api import (
    DONE,
    FAILED,
    Context,
    NeedsHuman,
    Result,
    TurnOptions,
    flag_field,
    number_field,
    text_field,
    timeout_field,
)

TYPE = "agent_run"
# An agent edits files and may push: running it twice is not harmless.
SAFE_TO_RETRY = False
DEFAULT_TIMEOUT = 1800.0
# The answer kept in a result; the full output is in the task's log file.
MAX_ANSWER = 64 * 1024
# A thread of this many turns is long past what fits as context anyway.
MAX_CONTEXT_TURNS = 500
SESSIONS_FILE = "agent-sessions.json"
# What claude and codex say when the session to resume is not on this machine (or in this folder).
SESSION_GONE = re.compile(r"no conversation found|no rollout found|session .*not found", re.IGNORECASE)
FIX_PAYLOAD = "fix the payload and resubmit"
# How to give an agent its ACP adapter, so it runs supervised (asks, progress, steering, budgets).
ADAPTERS = {
    "claude": "run `npm install -g @zed-industries/claude-agent-acp`",
    "codex": "run `npm install -g @zed-industries/codex-acp`",
    "gemini": "use a gemini CLI that has `gemini --acp`",
}


def adapter_hint(agent: str) -> str:
    """One sentence on how the agent could run supervised."""
    how = ADAPTERS.get(agent)
    return (f"{agent} ran headless (no ACP adapter on this machine); to run it supervised, "
            + (f"{how} and " if how else "") + f"set `agents: {{{agent}: {{acp: ...}}}}` in machines.yaml"
            + (" if it is not on PATH" if how and agent != "gemini" else ""))


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    agent = text_field(payload, "agent", required=True) or ""
    prompt = text_field(payload, "prompt", required=True) or ""
    model = text_field(payload, "model")
    timeout = timeout_field(payload, DEFAULT_TIMEOUT)
    session = resume_field(payload)
    turns = context_field(payload)
    if session is not None and turns:
        raise NeedsHuman("payload fields 'resume' and 'context' cannot be used together",
                         "send 'resume' when the earlier result has a session_id, else 'context'")
    if ctx.agents and agent not in ctx.agents:
        raise NeedsHuman(f"agent {agent} is not available on {ctx.machine} (it has {', '.join(ctx.agents)})",
                         f"assign it to a machine that has {agent}, or add {agent} to {ctx.machine} in "
                         "config/machines.yaml")
    if agent == "groq":
        if session is not None:
            raise cannot_resume(agent)
        return await run_groq(ctx, prompt, turns, model, timeout)
    options = turn_options(payload, timeout)
    supervised = await ctx.supervised_turn(
        agent, prompt_with_context(prompt, turns, left_out_field(payload)),
        cwd=ctx.check_cwd(text_field(payload, "cwd")), session_id=session, options=options)
    if supervised is not None:
        return supervised
    result = await run_headless(ctx, payload, agent, prompt, model, timeout, session, turns)
    result.details["supervised"] = False
    result.details["supervision_notes"] = [adapter_hint(agent)]
    return result


def turn_options(payload: dict[str, Any], timeout: float) -> TurnOptions:
    """The payload's supervision fields: `plan`, `yolo`, `budget` (USD), `ask_timeout` (seconds)."""
    return TurnOptions(timeout=timeout, plan=flag_field(payload, "plan"), yolo=flag_field(payload, "yolo"),
                       budget_usd=number_field(payload, "budget", "US dollars"),
                       ask_timeout=number_field(payload, "ask_timeout", "seconds"))


async def run_headless(ctx: Context, payload: dict[str, Any], agent: str, prompt: str, model: str | None,
                       timeout: float, session: str | None, turns: list[agents.Turn]) -> Result:
    """Today's one-shot run of the agent's CLI, for an agent with no ACP adapter."""
    spec = ctx.agent_command(agent)
    if spec is None:
        raise NeedsHuman(f"no command is configured for agent {agent}",
                         "add it under `agents:` in config/agents.yaml")
    if session is not None and not spec.resume:
        raise cannot_resume(agent)
    cwd = ctx.check_cwd(text_field(payload, "cwd"))
    prompt = prompt_with_context(prompt, turns, left_out_field(payload))
    book = _agent_session.SessionBook(ctx.state_file(SESSIONS_FILE))
    resumed = book.newest(agent, session) if session is not None else None
    # The other repositories of a task on several (the worker's worktrees), for the agent to edit too.
    added = [str(folder) for folder in payload.get("additional_dirs") or () if isinstance(folder, str)]
    argv = spec.build(prompt, model, session=resumed, structured=True, add_dirs=added)
    reader = _agent_session.ReplyReader()
    process = await ctx.run(argv, cwd=cwd, timeout=timeout, watch=reader.feed)
    reply = reader.finish(process.stdout)
    result = ctx.classify(process, tool=argv[0], agent=agent)
    if resumed is not None:
        if result.status == FAILED and SESSION_GONE.search(f"{process.stderr}\n{reply.error}"):
            raise NeedsHuman(f"{agent} has no session {resumed} on {ctx.machine}",
                             "resume it from the folder it ran in (the first task's cwd), start a new task, or "
                             "resend the follow-up with the earlier turns as 'context'",
                             result.details)
        book.record(agent, resumed, reply.session_id)
        result.details["resumed"] = resumed
    if result.status == FAILED and reply.error:
        result.notes = f"{argv[0]} exited {process.returncode}: {reply.error}"[:400]
        result.action = f"read the error: {reply.error}"[:400]
    result.details.update(reply_fields(reply.answer, reply.session_id, process.log_path))
    if added and not spec.add_dir:
        result.details["additional_dirs_not_passed"] = (f"{agent} is configured without an add_dir form, so it was not "
                                                       f"given {', '.join(added)}")
    return result


def cannot_resume(agent: str) -> NeedsHuman:
    return NeedsHuman(f"agent {agent} cannot resume a session", "send the earlier turns as 'context' instead "
                      "of 'resume'")


def resume_field(payload: dict[str, Any]) -> str | None:
    """The payload's `resume`: a session id an earlier result reported."""
    value = payload.get("resume")
    if value is None:
        return None
    if not isinstance(value, str) or not agents.SESSION_ID.fullmatch(value):
        raise NeedsHuman("payload field 'resume' must be the session_id of an earlier result (letters, digits, "
                         "'-', '_', '.', ':')", FIX_PAYLOAD)
    return value


def context_field(payload: dict[str, Any]) -> list[agents.Turn]:
    """The payload's `context`: earlier turns, oldest first, each {"role": "user"|"assistant", "text": ...}."""
    value = payload.get("context")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_CONTEXT_TURNS:
        raise NeedsHuman(f"payload field 'context' must be a list of at most {MAX_CONTEXT_TURNS} turns like "
                         '{"role": "user", "text": "..."}', FIX_PAYLOAD)
    turns = []
    for number, turn in enumerate(value, 1):
        if not isinstance(turn, dict) or turn.get("role") not in agents.ROLES or not isinstance(turn.get("text"), str):
            raise NeedsHuman(f"payload field 'context' turn {number} must be {{\"role\": \"user\" or "
                             "\"assistant\", \"text\": a string}", FIX_PAYLOAD)
        turns.append(agents.Turn(turn["role"], turn["text"]))
    return turns


def left_out_field(payload: dict[str, Any]) -> int:
    """Earlier turns the sender already left out of `context` (payload `context_left_out`), so the
    agent is told the conversation is longer than what it sees."""
    value = payload.get("context_left_out", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise NeedsHuman("payload field 'context_left_out' must be a whole number of turns (0 or more)", FIX_PAYLOAD)
    return value


def prompt_with_context(prompt: str, turns: list[agents.Turn], left_out_before: int = 0) -> str:
    """The prompt with as many of the newest turns as fit in one argv element ahead of it."""
    room = max(0, agents.MAX_PROMPT_BYTES - len(prompt.encode()) - 200)
    kept, left_out = agents.fit_context(turns, min(room, agents.MAX_CONTEXT_BYTES))
    return agents.with_context(prompt, kept, left_out_before + left_out)


def reply_fields(answer: str, session_id: str | None, log_path: str = "") -> dict[str, Any]:
    """The result fields a conversation reads: the answer (capped) and the session to resume."""
    fields: dict[str, Any] = {"answer": answer[:MAX_ANSWER]}
    if len(answer) > MAX_ANSWER:
        fields["answer_truncated"] = f"last {len(answer) - MAX_ANSWER} characters cut" + (
            f"; full output in {log_path}" if log_path else "")
    if session_id:
        fields["session_id"] = session_id
    return fields


async def run_groq(ctx: Context, prompt: str, turns: list[agents.Turn], model: str | None,
                   timeout: float) -> Result:
    """One chat completion on Groq's OpenAI-compatible API; earlier turns go as chat messages."""
    key = ctx.setting("GROQ_API_KEY")
    if not key:
        raise NeedsHuman(f"GROQ_API_KEY is not set on {ctx.machine}", f"add GROQ_API_KEY to .env on {ctx.machine} "
                         "and restart the worker")
    base = ctx.setting("GROQ_BASE_URL").rstrip("/")
    model = model or ctx.setting("GROQ_MODEL")
    kept, _ = agents.fit_context(turns, agents.MAX_CONTEXT_BYTES)
    messages = [{"role": turn.role, "content": turn.text} for turn in kept] + [{"role": "user", "content": prompt}]
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(f"{base}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                       json={"model": model, "messages": messages})
    except httpx.TimeoutException as exc:
        raise NeedsHuman(f"groq did not answer within {timeout:g}s",
                         f"raise the payload's timeout (now {timeout:g}s) or retry later") from exc
    except httpx.HTTPError as exc:
        return Result(FAILED, f"groq unreachable at {base}: {type(exc).__name__}", "check the network and "
                      "GROQ_BASE_URL, then retry", {"error": str(exc)})
    details = {"model": model, "status_code": response.status_code, "duration": round(time.monotonic() - started, 3)}
    if response.status_code in (401, 403):
        raise NeedsHuman(f"groq refused the API key ({response.status_code})",
                         f"check GROQ_API_KEY on {ctx.machine}, then retry",
                         {**details, "stderr": response.text[:2000]})
    if response.status_code >= 400:
        return Result(FAILED, f"groq answered {response.status_code}: {response.text[:200]}",
                      "read the error; retry if it was a rate limit", {**details, "stderr": response.text[:4000]})
    try:
        answer = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return Result(FAILED, "groq answered with an unexpected body", "see stderr in the result",
                      {**details, "stderr": response.text[:4000]})
    text = answer if isinstance(answer, str) else ""
    return Result(DONE, f"groq {model} answered", "", {**details, "returncode": 0, "stdout": answer,
                                                       **reply_fields(text, None)})
