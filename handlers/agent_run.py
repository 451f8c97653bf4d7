"""Run an AI coding agent (claude, gemini, codex as CLIs; groq over its HTTP API) on a prompt."""

from __future__ import annotations

import time
from typing import Any

import httpx

from da.worker.errors import NeedsHuman
from da.worker.models import DONE, FAILED, Context, Result, text_field, timeout_field

TYPE = "agent_run"
# An agent edits files and may push: running it twice is not harmless.
SAFE_TO_RETRY = False
DEFAULT_TIMEOUT = 1800.0


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    agent = text_field(payload, "agent", required=True) or ""
    prompt = text_field(payload, "prompt", required=True) or ""
    model = text_field(payload, "model")
    timeout = timeout_field(payload, DEFAULT_TIMEOUT)
    if ctx.agents and agent not in ctx.agents:
        raise NeedsHuman(f"agent {agent} is not available on {ctx.machine} (it has {', '.join(ctx.agents)})",
                         f"assign it to a machine that has {agent}, or add {agent} to {ctx.machine} in "
                         "config/machines.yaml")
    if agent == "groq":
        return await run_groq(ctx, prompt, model, timeout)
    spec = ctx.agent_command(agent)
    if spec is None:
        raise NeedsHuman(f"no command is configured for agent {agent}",
                         "add it under `agents:` in config/agents.yaml")
    cwd = ctx.check_cwd(text_field(payload, "cwd"))
    argv = spec.build(prompt, model)
    process = await ctx.run(argv, cwd=cwd, timeout=timeout)
    return ctx.classify(process, tool=argv[0], agent=agent)


async def run_groq(ctx: Context, prompt: str, model: str | None, timeout: float) -> Result:
    """One chat completion on Groq's OpenAI-compatible API."""
    key = ctx.setting("GROQ_API_KEY")
    if not key:
        raise NeedsHuman(f"GROQ_API_KEY is not set on {ctx.machine}", f"add GROQ_API_KEY to .env on {ctx.machine} "
                         "and restart the worker")
    base = ctx.setting("GROQ_BASE_URL").rstrip("/")
    model = model or ctx.setting("GROQ_MODEL")
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(f"{base}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                       json={"model": model, "messages": [{"role": "user", "content": prompt}]})
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
    return Result(DONE, f"groq {model} answered", "", {**details, "returncode": 0, "stdout": answer})
