"""What someone asked da in Slack, whichever way they asked: who, where, what, and by which surface."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from da.bot import grammar
from da.bot.slack.delivery import Reply


class Surface(enum.Enum):
    """The ways to ask: where the answer goes and how a usage line reads differ, nothing else."""

    SLASH = "/da"
    MENTION = "@da"
    DM = "dm"
    FORM = "form"


@dataclass(frozen=True)
class Asked:
    """One request: `said` is the text typed, or the command a form filled in.

    `root` is the thread the answer belongs in (a mention's or a DM's message, the message a form
    was opened from); `reply` answers a slash command through its response_url.
    """

    user: str
    channel: str
    said: str | grammar.Command
    surface: Surface
    root: str | None = None
    reply: Reply | None = None
    # The files attached to the message (Slack's file objects), for the task it starts.
    files: tuple[dict[str, Any], ...] = ()


def refusal(user: str) -> str:
    """What someone not on SLACK_ALLOWED_USERS is told when they try to change something."""
    return (f"<@{user}> is not on SLACK_ALLOWED_USERS, so you can look but not change anything; "
            "ask whoever runs da to add your user id.")
