"""Delivering a finished agent task's work after the fact, on the machine whose worker holds its worktree.

A `deliver` task (handlers/deliver.py) names the finished task; this reads that task from the queue, reopens
the worktrees its result names, pushes the branch and, when asked, opens the PR/MR, then keeps the new
facts (pushed, the PR/MR URL) on the finished task (`POST /v1/tasks/{id}/workspace`), so `da show` and the
Slack card show them. Every fault is one sentence in the deliver task's result; the branch stays as it was.
"""

from __future__ import annotations

import logging
from typing import Any

from da.handlers.api import DONE, NEEDS_HUMAN, NeedsHuman, Result
from da.queue import errors as queue_errors
from da.queue import models
from da.queue.client import QueueClient
from da.queue.models import Task
from da.worker import workspace
from da.worker.workspace import Summary, WorkspaceError, WorkspaceSettings

logger = logging.getLogger(__name__)


async def deliver(client: QueueClient, settings: WorkspaceSettings, task_id: str, *, machine: str,
                  pr: bool, link: str | None = None) -> Result:
    """Push the finished task's branch (with `pr`, open its PR/MR) and record what changed on that task."""
    try:
        task = await client.get_task(task_id)
    except queue_errors.NotFound as exc:
        raise NeedsHuman(exc.detail.rstrip("."), "check the task id with `da queue`") from exc
    short = task.short_id
    if task.status not in models.TERMINAL:
        raise NeedsHuman(f"task {short} is still {task.status}, so its work was not pushed",
                         f"push it once it has finished (`da watch {short}`, then `da push {short}`)")
    if task.assigned_to != machine:
        raise NeedsHuman(f"task {short} ran on {task.assigned_to or 'no machine'}, not on {machine}, so its "
                         "worktree is not here", f"push it again with `da push {short}`")
    result = task.result or {}
    many = result.get("workspaces")
    stored: list[dict[str, Any]] = [facts for facts in (many if isinstance(many, list) else [result.get("workspace")])
                                    if isinstance(facts, dict)]
    if not stored:
        raise NeedsHuman(f"task {short} has no worktree (only an agent task that ran on a git repository has one)",
                         "nothing to push")
    prompt = str(task.payload.get("prompt") or "")
    link = link or task.payload.get("thread_url")
    summaries: list[Summary] = []
    fault: WorkspaceError | None = None
    try:
        made = [await workspace.reopen(settings, facts, task.id) for facts in stored]
        for space, facts in zip(made, stored, strict=True):
            await workspace.commit_leftovers(settings, space, prompt)
            found = await workspace.summary(settings, space)
            url = facts.get("pr_url")
            found.pr_url = url if isinstance(url, str) and url else None
            summaries.append(found)
        if not any(found.changed for found in summaries):
            return Result(DONE, f"task {short} changed nothing on {summaries[0].branch}, so nothing was pushed", "",
                          {"delivered": _delivered(task, summaries)})
        await workspace.deliver(settings, list(zip(made, summaries, strict=True)), push_too=True, pr=pr,
                                prompt=prompt, task_id=task.id, answer=str(result.get("answer") or ""),
                                link=link if isinstance(link, str) else "")
    except WorkspaceError as exc:
        fault = exc
    details: dict[str, Any] = {"delivered": _delivered(task, summaries)}
    if summaries:
        details["recorded"] = await _record(client, task, summaries)
    if fault is not None:
        return Result(NEEDS_HUMAN, fault.sentence, fault.action, details)
    return Result(DONE, _said(summaries), "", details)


def _delivered(task: Task, summaries: list[Summary]) -> dict[str, Any]:
    """What the deliver task's result says it did, per repository."""
    return {"task": task.id, "repositories": [{"repo": found.repo, "branch": found.branch, "pushed": found.pushed,
                                               **({"pr_url": found.pr_url} if found.pr_url else {})}
                                              for found in summaries]}


def _said(summaries: list[Summary]) -> str:
    """One sentence: what was pushed where, and the PR/MR links."""
    pushed = [found for found in summaries if found.pushed]
    if not pushed:
        return "nothing was pushed"
    line = f"pushed {pushed[0].branch} to {workspace.REMOTE}"
    if len(pushed) > 1:
        line += f" in {len(pushed)} repositories"
    urls = [str(found.pr_url) for found in pushed if found.pr_url]
    return line + (f"; {', '.join(urls)}" if urls else "")


async def _record(client: QueueClient, task: Task, summaries: list[Summary]) -> bool:
    """Keep the new facts on the finished task; False (logged) when the queue would not take them."""
    facts: dict[str, Any] = {"workspace": summaries[0].to_json()}
    if len(summaries) > 1:
        facts["workspaces"] = [found.to_json() for found in summaries]
    try:
        await client.record_workspace(task.id, facts)
    except queue_errors.QueueError as exc:
        logger.warning("the queue did not keep the delivery on task %s: %s", task.short_id, exc.detail,
                       extra={"task_id": task.id})
        return False
    return True
