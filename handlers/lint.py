"""Lint a project: the given command, else ruff, eslint, ktlint or swiftlint by what the folder holds."""

from __future__ import annotations

from typing import Any

from da.handlers import _detect
from da.handlers.api import Context, Result

TYPE = "lint"
# Linters only read (we never pass --fix).
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 600.0
# The payload field naming the project folder; assign asks for it (--cwd) up front.
FOLDER_FIELD = "cwd"


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    return await _detect.run_in_project(ctx, payload, _detect.lint_command, DEFAULT_TIMEOUT)
