"""Run a shell script on the machine: the one handler that uses a shell, on purpose."""

from __future__ import annotations

from typing import Any

from da.handlers.api import Context, Result, text_field, timeout_field

TYPE = "run_script"
# A script may deploy or migrate; only a person knows whether running it twice is safe.
SAFE_TO_RETRY = False
DEFAULT_TIMEOUT = 120.0


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    script = text_field(payload, "script", required=True) or ""
    cwd = ctx.check_cwd(text_field(payload, "cwd"))
    process = await ctx.run(script, cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT), shell=True)
    return ctx.classify(process, tool="script")
