"""An agent's ask drawn for its thread: the card with the command or diff and the options as buttons, and
what it becomes once answered or expired. Pure: what to show, never how.
"""

from __future__ import annotations

import json
import re
import time

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    InputBlock,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from da.bot.slack import blocks as drawing
from da.bot.slack import ids
from da.queue import models
from da.queue.models import Ask

# The command or diff shown on a card: a section's text holds 3,000 characters, fences and notes included.
MAX_DETAIL = 2600
# An actions block holds 25 elements; a button's text 75 characters.
MAX_BUTTONS = 24
MAX_LABEL = 75
# Words that make an option a refusal, which can carry a note (Deny, Reject, Request changes).
REFUSALS = ("deny", "reject", "changes", "no")
STYLE = {"allow": "primary", "approve": "primary", "deny": "danger", "reject": "danger"}
# Secrets that must never reach a channel, whatever the agent put in its command.
SECRETS = re.compile(r"(xox[abprs]-[\w-]+|xapp-[\w-]+|gh[pousr]_\w{20,}|github_pat_\w{20,}|sk-[\w-]{16,}|"
                     r"AKIA[0-9A-Z]{16}|glpat-[\w-]{16,}|(?i:(?:password|passwd|secret|token|api_key)\s*[=:]\s*)\S+)")
KIND_TITLE = {"permission": ":lock: Permission needed", "plan": ":clipboard: Plan to approve",
              "question": ":question: A question"}


def redact(text: str) -> str:
    """Text with anything that looks like a token or a password replaced."""
    return SECRETS.sub(lambda found: _kept_key(found.group(0)) + "[redacted]", text)


def _kept_key(found: str) -> str:
    key = re.match(r"(?i)(?:password|passwd|secret|token|api_key)\s*[=:]\s*", found)
    return key.group(0) if key else ""


def value(ask: Ask, option: str = "") -> str:
    """A button's value: which ask, and which option it answers."""
    return json.dumps({"task": ask.task_id, "ask": ask.id, "option": option})


def refusal_option(ask: Ask) -> str | None:
    """The option a note goes with (Deny, Reject, Request changes), if the ask has one."""
    for option in ask.options:
        words = f"{option.id} {option.label}".lower()
        if any(re.search(rf"\b{word}\b", words.replace("_", " ").replace("-", " ")) for word in REFUSALS):
            return option.id
    return None


def detail(ask: Ask) -> str:
    """The command or diff as a code block: redacted, escaped and cut to fit a section."""
    text = redact(ask.detail.strip())
    if len(text) > MAX_DETAIL:
        text = text[:MAX_DETAIL] + "\n… (cut; the whole of it is on the task)"
    return f"```{drawing.escape(text)}```" if text else ""


def block_id(ask: Ask, part: str) -> str:
    """A block id unique to this ask, so several asks can share one view (the Home tab)."""
    return f"ask:{ask.task_id[:8]}:{ask.id}:{part}"


def card(ask: Ask, *, requester: str) -> drawing.Drawn:
    """An open ask: what is asked, the detail, the options as buttons; the requester is mentioned."""
    who = f"<@{requester}> " if requester.startswith(("U", "W")) else ""
    heading = f"{KIND_TITLE.get(ask.kind, 'A question')}: {drawing.escape(redact(ask.title))}"
    drawn: list[Block] = [SectionBlock(block_id=block_id(ask, "head"),
                                       text=drawing.md(drawing.clip(f"{who}{heading}")))]
    if shown := detail(ask):
        drawn.append(SectionBlock(block_id=block_id(ask, "detail"), text=drawing.md(shown)))
    buttons = [ButtonElement(action_id=ids.ASK_ANSWERS[n], value=value(ask, option.id),
                             text=PlainTextObject(text=drawing.clip(option.label, MAX_LABEL) or option.id),
                             style=_style(option.id, option.label))
               for n, option in enumerate(ask.options[:MAX_BUTTONS])]
    if refusal_option(ask) is not None:
        buttons.append(ButtonElement(action_id=ids.ASK_NOTE, value=value(ask),
                                     text=PlainTextObject(text="With a note…")))
    if buttons:
        drawn.append(ActionsBlock(block_id=block_id(ask, "options"), elements=buttons))
    expires = time.strftime("%H:%M", time.gmtime(ask.expires_at)) if ask.expires_at else ""
    if expires:
        drawn.append(ContextBlock(block_id=block_id(ask, "expires"),
                                  elements=[drawing.md(f"Expires at {expires} UTC")]))
    return drawing.clip(f"{who}{ask.title}", 300), drawn


def _style(option_id: str, label: str) -> str | None:
    words = f"{option_id} {label}".lower()
    return next((style for word, style in STYLE.items() if word in words), None)


def label_of(ask: Ask, option: str | None) -> str:
    return next((o.label for o in ask.options if o.id == option), option or "answered")


def settled(ask: Ask) -> drawing.Drawn:
    """An ask that is over: who answered what and when (or that it expired), no buttons left."""
    heading = f"{KIND_TITLE.get(ask.kind, 'A question')}: {drawing.escape(redact(ask.title))}"
    if ask.status == models.ASK_EXPIRED:
        outcome = ":hourglass: Expired without an answer"
    else:
        when = time.strftime("%H:%M", time.gmtime(ask.answered_at)) if ask.answered_at else ""
        who = drawing.escape(ask.answered_by or "someone")
        who = f"<@{who}>" if who.startswith(("U", "W")) else who
        outcome = f"*{drawing.escape(label_of(ask, ask.answer))}* by {who}" + (f" at {when}" if when else "")
        if ask.note:
            outcome += f": {drawing.escape(ask.note)}"
    drawn: list[Block] = [SectionBlock(block_id="ask", text=drawing.md(drawing.clip(heading)))]
    if shown := detail(ask):
        drawn.append(SectionBlock(block_id="detail", text=drawing.md(shown)))
    drawn.append(ContextBlock(block_id="outcome", elements=[drawing.md(drawing.clip(outcome, 2900))]))
    plain = outcome.replace("*", "")
    return drawing.clip(f"{ask.title}: {plain}", 300), drawn


def answered_line(ask: Ask) -> str:
    """What a late click is told."""
    if ask.status == models.ASK_EXPIRED:
        return "That ask expired before anyone answered it."
    who = f"<@{ask.answered_by}>" if (ask.answered_by or "").startswith(("U", "W")) else (ask.answered_by or "someone")
    return f"{who} already answered: {label_of(ask, ask.answer)}."


def note_modal(ask: Ask, option: str, origin: dict[str, str]) -> View:
    """The modal of "With a note…": the note that goes with the refusal."""
    return View(type="modal", callback_id=ids.ASK_NOTE_SUBMIT, title=PlainTextObject(text="Answer with a note"),
                submit=PlainTextObject(text=drawing.clip(label_of(ask, option), 24)),
                close=PlainTextObject(text="Cancel"),
                private_metadata=json.dumps({"task": ask.task_id, "ask": ask.id, "option": option, **origin}),
                blocks=[InputBlock(block_id="note", label=PlainTextObject(text="Note for the agent"),
                                   element=PlainTextInputElement(action_id="text", multiline=True, max_length=2000))])
