"""Run a project's tests: the given command, else pytest, npm test, gradle test or xcodebuild test."""

from __future__ import annotations

from typing import Any

from da.handlers import _detect
from da.handlers.api import Context, Result

TYPE = "test_run"
# Tests read the tree; a rerun is what people do anyway.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 1800.0
# The payload field naming the project folder; assign asks for it (--cwd) up front.
FOLDER_FIELD = "cwd"


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    return await _detect.run_in_project(ctx, payload, _detect.test_command, DEFAULT_TIMEOUT)
