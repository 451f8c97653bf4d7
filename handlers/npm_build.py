"""Run an npm script (build by default) in a project."""

from __future__ import annotations

from typing import Any

from da.handlers.api import Context, Result, text_field, timeout_field

TYPE = "npm_build"
# A build writes only its own output folder.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 1800.0
# The payload field naming the project folder; assign asks for it (--cwd) up front.
FOLDER_FIELD = "cwd"


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    cwd = ctx.check_cwd(text_field(payload, "cwd", required=True))
    script = text_field(payload, "script", default="build") or "build"
    process = await ctx.run(["npm", "run", script], cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT))
    return ctx.classify(process, tool="npm")
