"""Run a project's tests: the given command, else pytest, npm test, gradle test or xcodebuild test."""

from __future__ import annotations

from typing import Any

from da.handlers import _detect
from da.worker.models import Context, Result, text_field, timeout_field

TYPE = "test_run"
# Tests read the tree; a rerun is what people do anyway.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 1800.0


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    cwd = ctx.check_cwd(text_field(payload, "cwd", required=True))
    assert cwd is not None
    argv = _detect.command_field(text_field(payload, "command"))
    tool = argv[0] if argv else ""
    if argv is None:
        argv, tool = _detect.test_command(cwd)
    process = await ctx.run(argv, cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT))
    return ctx.classify(process, tool=tool)
