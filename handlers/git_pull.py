"""Bring a checkout up to date: fetch, then fast-forward only; never merge or discard work."""

from __future__ import annotations

import re
from typing import Any

from da.handlers.api import Context, NeedsHuman, Result, text_field, timeout_field

TYPE = "git_pull"
# Fetch and fast-forward change nothing a second run would not.
SAFE_TO_RETRY = True
DEFAULT_TIMEOUT = 300.0
# The payload field naming the checkout; assign asks for it (--cwd) up front.
FOLDER_FIELD = "repo_path"
BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


async def run(ctx: Context, payload: dict[str, Any]) -> Result:
    repo = ctx.check_cwd(text_field(payload, "repo_path", required=True), "repo_path")
    branch = text_field(payload, "branch")
    if branch is not None and (not BRANCH.match(branch) or ".." in branch):
        raise NeedsHuman(f"branch {branch[:60]!r} is not a valid branch name", "resubmit with a plain branch name")
    timeout = timeout_field(payload, DEFAULT_TIMEOUT)
    git = ["git", "-C", str(repo)]

    status = await ctx.run([*git, "status", "--porcelain"], timeout=timeout)
    if status.returncode != 0:
        return ctx.classify(status, tool="git")
    if status.stdout.strip():
        changed = len(status.stdout.strip().splitlines())
        raise NeedsHuman(f"{repo} has {changed} uncommitted change(s) on {ctx.machine}",
                         f"commit, stash or discard them in {repo} on {ctx.machine}, then retry",
                         {"stdout": status.stdout})
    fetched = await ctx.run([*git, "fetch", "--prune", "origin"], timeout=timeout)
    if fetched.returncode != 0:
        return ctx.classify(fetched, tool="git")
    if branch:
        current = await ctx.run([*git, "rev-parse", "--abbrev-ref", "HEAD"], timeout=timeout)
        if current.stdout.strip() != branch:
            switched = await ctx.run([*git, "checkout", branch], timeout=timeout)
            if switched.returncode != 0:
                return ctx.classify(switched, tool="git")
    upstream = f"origin/{branch}" if branch else "@{u}"
    merged = await ctx.run([*git, "merge", "--ff-only", upstream], timeout=timeout)
    text = f"{merged.stderr}\n{merged.stdout}".lower()
    if merged.returncode != 0 and ("not possible to fast-forward" in text or "diverg" in text):
        raise NeedsHuman(f"{repo} has diverged from {upstream} on {ctx.machine}",
                         f"rebase or merge by hand in {repo} on {ctx.machine}, then resolve this task",
                         merged.to_json())
    return ctx.classify(merged, tool="git")
