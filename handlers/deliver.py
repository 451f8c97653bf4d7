"""Deliver a finished agent task's work after the fact: push its branch and, with `pr`, open its pull or
merge request, on the machine whose worker holds its worktree (`da push`, Slack's Push button)."""

from __future__ import annotations

from typing import Any

from da.handlers.api import Context, Result, flag_field, text_field

TYPE = "deliver"
# Pushing the same branch again changes nothing, and a second PR/MR is refused as existing (its URL is kept).
SAFE_TO_RETRY = True
# A push and a PR/MR each get the workspace's network timeout; a few repositories fit in this.
DEFAULT_TIMEOUT = 1800.0
# The task's worktree: the queue's folder lock keeps a follow-up turn and this push from overlapping there.
FOLDER_FIELD = "cwd"


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    task = text_field(payload, "task", required=True)
    return await ctx.deliver(str(task), pr=flag_field(payload, "pr"), link=text_field(payload, "thread_url"))
