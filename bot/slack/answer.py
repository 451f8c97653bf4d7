"""An agent's answer drawn for its thread, within Slack's limits.

A message shows as much of the answer as fits in a few sections (each at most 3,000
characters after escaping, all of them well under Slack's ~12,000 characters of block text);
a longer answer also goes in the thread as a file, so nothing is cut off for good. The output
the worker kept with the result (stdout and stderr, head and tail when it was long) goes with it
as the task's log file.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ContextBlock, PlainTextObject, SectionBlock

from da.bot.slack import blocks, ids
from da.bot.slack.progress import Progress, usage_line
from da.queue.models import Task

# Escaped characters per section (Slack's section limit is 3,000) and sections per message.
SECTION_CHARS = 2900
MAX_SECTIONS = 3
# The notification fallback (`text`) shows the start of the answer.
FALLBACK_CHARS = 300


def text(task: Task) -> str:
    """What the agent said (its result's `answer`), or ""."""
    said = (task.result or {}).get("answer")
    return said if isinstance(said, str) and said.strip() else ""


def log(task: Task) -> str:
    """The output kept with the task's result, as the log file's text ("" when there is none)."""
    result = task.result or {}
    kept = [(name, result.get(name)) for name in ("stdout", "stderr")]
    return "\n".join(f"----- {name} -----\n{value.rstrip()}\n" for name, value in kept
                     if isinstance(value, str) and value.strip())


def files(task: Task, *, above: bool = False) -> list[dict[str, str]]:
    """What goes in the thread as files after the answer: the whole answer when neither the message nor
    the stream `above` could show it, and the log."""
    found = []
    if not above and not complete(task):
        found.append({"content": text(task), "filename": f"answer-{task.short_id}.md",
                      "title": f"{task.agent or 'agent'} answer, task {task.short_id}"})
    if output := log(task):
        found.append({"content": output, "filename": f"log-{task.short_id}.txt",
                      "title": f"output of task {task.short_id} on {task.assigned_to or '-'}"})
    return found


def sections(said: str) -> tuple[list[str], bool]:
    """The answer as escaped section texts, and whether they hold all of it."""
    parts: list[str] = []
    rest = said
    while rest and len(parts) < MAX_SECTIONS:
        piece, size = "", 0
        for n, char in enumerate(rest):
            escaped = blocks.escape(char)
            if size + len(escaped) > SECTION_CHARS:
                rest = rest[n:]
                break
            piece += escaped
            size += len(escaped)
        else:
            rest = ""
        parts.append(piece)
    return parts, not rest


def complete(task: Task) -> bool:
    """True when the thread's message shows the whole answer (else it is attached as a file)."""
    return sections(text(task))[1]


def drawn(task: Task, *, above: bool = False) -> tuple[str, list[Block]]:
    """The answer message: who answered where, then the answer (its start, when it is long); only the
    result when the thread's stream already showed the whole answer `above`."""
    said = text(task)
    parts, whole = ([], True) if above else sections(said)
    head = (f":white_check_mark: `{task.short_id}` {blocks.escape(task.agent or task.type)} on "
            f"{blocks.escape(task.assigned_to or '-')} answered" + (" above" if above else ""))
    if not whole:
        head += f" (the whole answer, {len(said)} characters, is in the file below)"
    drawn_blocks: list[Block] = [SectionBlock(block_id="answer_head", text=blocks.md(head + ("." if above else ":")))]
    drawn_blocks += [SectionBlock(block_id=f"answer:{n}", text=blocks.md(part)) for n, part in enumerate(parts)]
    drawn_blocks += workspace(task)
    fallback = f"{task.short_id} answered: {blocks.escape(' '.join(said[:FALLBACK_CHARS].split()))}"
    return fallback, drawn_blocks


def workspace_of(task: Task) -> dict[str, Any]:
    """The result's workspace (the branch the agent worked on), or {}."""
    found = (task.result or {}).get("workspace")
    return found if isinstance(found, dict) else {}


def diff_of(task: Task) -> str:
    found = (task.result or {}).get("diff")
    return found if isinstance(found, str) else ""


def workspace(task: Task) -> list[Block]:
    """The work the agent left: branch, commits and diffstat, the pull request, and what it cost; with a Diff
    button when the result carries the diff and the pull request's link when there is one."""
    found = workspace_of(task)
    drawn: list[Block] = []
    if found.get("branch"):
        commits = found.get("commits")
        count = len(commits) if isinstance(commits, list) else 0
        line = (f":twisted_rightwards_arrows: `{blocks.escape(str(found['branch']))}` "
                f"(from `{blocks.escape(str(found.get('base') or '-'))}`): {count} commit(s), "
                f"{int(found.get('files_changed') or 0)} file(s), +{int(found.get('insertions') or 0)} "
                f"-{int(found.get('deletions') or 0)}")
        line += ", pushed" if found.get("pushed") else ", not pushed"
        pr = found.get("pr_url")
        if isinstance(pr, str) and pr.startswith("https://"):
            line += f" · <{pr}|pull request>"
        drawn.append(SectionBlock(block_id="workspace", text=blocks.md(blocks.clip(line))))
        buttons = []
        if diff_of(task):
            buttons.append(ButtonElement(action_id=ids.WORKSPACE_DIFF, text=PlainTextObject(text="Diff"),
                                         value=json.dumps({"id": task.id})))
        if isinstance(pr, str) and pr.startswith("https://"):
            buttons.append(ButtonElement(action_id=ids.OPEN_PULL_REQUEST, url=pr[:3000],
                                         text=PlainTextObject(text="Open pull request")))
        else:
            buttons += delivery_buttons(task, found)
        if buttons:
            drawn.append(ActionsBlock(block_id="workspace_actions", elements=buttons))
    used = usage_line(Progress.of({"usage": task.usage or (task.progress_record or {}).get("usage")}))
    if used:
        drawn.append(ContextBlock(block_id="usage", elements=[blocks.md(used)]))
    return drawn


def delivery_buttons(task: Task, found: dict[str, Any]) -> list[ButtonElement]:
    """Push (while the branch is not pushed) and Open pull request (while it has none) for work that changed
    something; each click queues the push on the machine holding the worktree."""
    if found.get("changed") is False or not found.get("path"):
        return []
    value = json.dumps({"id": task.id})
    drawn = [] if found.get("pushed") else [
        ButtonElement(action_id=ids.WORKSPACE_PUSH, text=PlainTextObject(text="Push"), value=value)]
    return [*drawn, ButtonElement(action_id=ids.WORKSPACE_OPEN_PR, text=PlainTextObject(text="Open pull request"),
                                  value=value)]


def diff_file(task: Task) -> list[dict[str, str]]:
    """The diff as a file for the thread."""
    found = workspace_of(task)
    return [{"content": diff_of(task), "filename": f"{task.short_id}.diff",
             "title": f"diff of {found.get('branch') or task.short_id}"}]
