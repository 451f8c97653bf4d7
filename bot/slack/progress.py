"""An agent's progress drawn for its Slack thread: chunks for a streamed message, or one card to edit.

The progress record is the one the agent session driver reports on the task (the worker's
`AgentSession.progress()`): `plan` entries `{content, status}`, the last `tools` calls `{id, title,
kind, status}`, `answer_tail` (the answer's last lines), `mode`, `usage` `{input_tokens,
output_tokens, cost_usd}`, `context` `{used, size}`. `Progress.of` reads it leniently, so a record
from an older or newer worker still draws. Everything here is pure: what to show, never how.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, PlainTextObject, SectionBlock

from da.bot.slack import blocks as drawing
from da.queue import models

# Slack's task statuses (task_update) and ACP's plan and tool statuses. Three words are spelled as the
# queue's task statuses (pending, in_progress, failed): those come from the models, where the structure
# rule keeps every spelling of them.
PENDING, RUNNING, COMPLETE, ERROR = models.PENDING, models.IN_PROGRESS, "complete", "error"
ACP_COMPLETED, ACP_FAILED = "completed", models.FAILED
TASK_STATUS = {PENDING: PENDING, RUNNING: RUNNING, ACP_COMPLETED: COMPLETE, ACP_FAILED: ERROR}
STATUS_EMOJI = {PENDING: ":white_circle:", RUNNING: ":arrows_counterclockwise:", COMPLETE: ":white_check_mark:",
                ERROR: ":x:"}
# A task's title is cut near 256 characters by Slack; ours stay well inside.
MAX_TITLE = 200
# One markdown_text chunk holds 12,000 characters.
MAX_MARKDOWN = 12_000
# The card shows this many of the latest tool calls, and the answer's tail up to a section's limit.
CARD_TOOLS = 5
CARD_ANSWER = 2500
# A header holds 150 characters.
MAX_HEADER = 150


@dataclass(frozen=True)
class Step:
    """One line of the thread's plan or timeline: a plan entry or a tool call."""

    id: str
    title: str
    status: str  # pending | in_progress | complete | error


@dataclass(frozen=True)
class Progress:
    """What an agent at work has reported so far."""

    plan: tuple[Step, ...] = ()
    tools: tuple[Step, ...] = ()
    answer_tail: str = ""
    mode: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    # Turns the session finished so far: a new one starts a new message in the thread.
    turns: int = 0

    @classmethod
    def of(cls, record: Mapping[str, Any] | None) -> Progress:
        """The progress record of a task, leniently (missing or odd fields are left out)."""
        record = record or {}
        plan = tuple(Step(f"plan-{n}", _text(entry.get("content")), task_status(entry.get("status")))
                     for n, entry in enumerate(_dicts(record.get("plan"))) if _text(entry.get("content")))
        tools = tuple(Step(f"tool-{_text(tool.get('id')) or n}", _text(tool.get("title")) or _text(tool.get("kind"))
                           or "a tool call", task_status(tool.get("status")))
                      for n, tool in enumerate(_dicts(record.get("tools"))))
        found = record.get("usage")
        usage: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        cost = usage.get("cost_usd")
        return cls(plan=plan, tools=tools, answer_tail=_text(record.get("answer_tail")),
                   mode=_text(record.get("mode")) or None, input_tokens=_int(usage.get("input_tokens")),
                   output_tokens=_int(usage.get("output_tokens")),
                   cost_usd=float(cost) if isinstance(cost, (int, float)) else None, turns=_int(record.get("turns")))

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.plan + self.tools


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def task_status(status: Any) -> str:
    """An ACP status as Slack's task status (an unknown or missing one is still running)."""
    return TASK_STATUS.get(status, RUNNING) if isinstance(status, str) else RUNNING


def inert(text: str) -> str:
    """Agent text that cannot ping or link a conversation: Slack's `<!…>`, `<@…>`, `<#…>` broken apart."""
    for opener in ("<!", "<@", "<#"):
        text = text.replace(opener, opener[0] + "\u200b" + opener[1])
    return text


def answer_delta(before: str, after: str) -> str:
    """What the answer gained between two tails: `after` less its longest start that ends `before`."""
    if not before:
        return after
    if after.startswith(before):
        return after[len(before):]
    for size in range(min(len(before), len(after)), 0, -1):
        if before.endswith(after[:size]):
            return after[size:]
    return after


def chunks(before: Progress | None, after: Progress, *, title: str) -> list[dict[str, Any]]:
    """The stream chunks that take the thread from `before` (None: nothing shown yet) to `after`: the plan's
    title first, then each step whose title or status changed, then the answer's new text."""
    drawn: list[dict[str, Any]] = []
    if before is None:
        drawn.append({"type": "plan_update", "title": inert(drawing.clip(title, MAX_TITLE))})
    shown = {step.id: step for step in before.steps} if before is not None else {}
    for step in after.steps:
        if shown.get(step.id) != step:
            drawn.append({"type": "task_update", "id": step.id, "title": inert(drawing.clip(step.title, MAX_TITLE)),
                          "status": step.status})
    return drawn + markdown(inert(answer_delta(before.answer_tail if before is not None else "", after.answer_tail)))


def markdown(text: str) -> list[dict[str, Any]]:
    """Text as markdown_text chunks, each within Slack's 12,000 characters."""
    return [{"type": "markdown_text", "text": text[start:start + MAX_MARKDOWN]}
            for start in range(0, len(text), MAX_MARKDOWN)]


def streamed_text(drawn: list[dict[str, Any]]) -> str:
    """The answer text a list of chunks adds to a stream."""
    return "".join(str(chunk.get("text") or "") for chunk in drawn if chunk.get("type") == "markdown_text")


def finishing(before: Progress | None, after: Progress, *, title: str, rest: str | None = None) -> list[dict[str, Any]]:
    """The last chunks of a turn: what changed, with every step still running marked complete; `rest` (the
    final answer's part the stream has not shown) replaces the tail's delta when given."""
    settled = dataclasses.replace(after, plan=tuple(_settled(step) for step in after.plan),
                                  tools=tuple(_settled(step) for step in after.tools))
    if rest is None:
        return chunks(before, settled, title=title)
    unchanged = dataclasses.replace(settled, answer_tail=before.answer_tail if before is not None else "")
    return chunks(before, unchanged, title=title) + markdown(rest)


def _settled(step: Step) -> Step:
    return Step(step.id, step.title, COMPLETE) if step.status in (PENDING, RUNNING) else step


def usage_line(progress: Progress) -> str:
    """Tokens and cost, when the agent reported them ("" when not)."""
    parts = []
    if progress.input_tokens or progress.output_tokens:
        parts.append(f"{progress.input_tokens:,} in / {progress.output_tokens:,} out tokens")
    if progress.cost_usd is not None:
        parts.append(f"${progress.cost_usd:.2f}")
    return " · ".join(parts)


def card(progress: Progress, *, title: str) -> drawing.Drawn:
    """The same progress as one message to edit in place, for a workspace without streaming."""
    lines = [f"{STATUS_EMOJI[step.status]} {drawing.escape(step.title)}" for step in progress.plan]
    drawn: list[Block] = [HeaderBlock(text=PlainTextObject(text=drawing.clip(title, MAX_HEADER) or "Working"))]
    if lines:
        drawn.append(SectionBlock(text=drawing.md("*Plan*\n" + "\n".join(lines))))
    tools = [f"{STATUS_EMOJI[step.status]} {drawing.escape(step.title)}" for step in progress.tools[-CARD_TOOLS:]]
    if tools:
        drawn.append(SectionBlock(text=drawing.md("*Steps*\n" + "\n".join(tools))))
    if progress.answer_tail.strip():
        tail = progress.answer_tail[-CARD_ANSWER:]
        drawn.append(SectionBlock(text=drawing.md(drawing.escape(tail))))
    if used := usage_line(progress):
        drawn.append(ContextBlock(elements=[drawing.md(used)]))
    running = next((step.title for step in reversed(progress.steps) if step.status == RUNNING), "")
    text = f"{title}: {running}" if running else title
    return drawing.clip(text, 300), drawn
