"""Build an Android app with the project's gradle wrapper (or gradle on PATH)."""

from __future__ import annotations

import re
from typing import Any

from da.handlers import _detect
from da.handlers.api import Context, NeedsHuman, Result, text_field, timeout_field

TYPE = "android_build"
# A build writes only its own output folder.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 3600.0
# The payload field naming the project folder; assign asks for it (--cwd) up front.
FOLDER_FIELD = "cwd"
GRADLE_TASK = re.compile(r"^:?[A-Za-z0-9_:.-]+$")


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    cwd = ctx.check_cwd(text_field(payload, "cwd", required=True))
    assert cwd is not None
    task = text_field(payload, "task", default="assembleDebug") or "assembleDebug"
    if not GRADLE_TASK.match(task):
        raise NeedsHuman(f"gradle task {task[:60]!r} is not a task name", "resubmit with e.g. assembleRelease")
    argv = [*_detect.gradle(cwd), task]
    process = await ctx.run(argv, cwd=cwd, timeout=timeout_field(payload, DEFAULT_TIMEOUT))
    return ctx.classify(process, tool="gradle")
