"""What the Slack bot must remember across restarts: the last event it posted and the cards
of tasks assigned from Slack. Written atomically after every post, so a restart resumes where
it stopped: no event missed, none posted twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Cards of finished tasks are forgotten after this many, oldest first.
MAX_CARDS = 500


@dataclass
class Card:
    """Where a task's card is, and what it last showed."""

    channel: str
    ts: str
    status: str = ""
    progress: str = ""
    updated: float = 0.0


@dataclass
class BotState:
    path: Path
    last_event: int | None = None
    cards: dict[str, Card] = field(default_factory=dict)
    # Bulk confirmations already applied in this process (a redelivered click is ignored).
    handled_bulk: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> BotState:
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        cards = {task_id: Card(**card) for task_id, card in data.get("cards", {}).items()}
        return cls(path, data.get("last_event"), cards)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if len(self.cards) > MAX_CARDS:
            for task_id in list(self.cards)[: len(self.cards) - MAX_CARDS]:
                del self.cards[task_id]
        data: dict[str, Any] = {"last_event": self.last_event,
                                "cards": {task_id: vars(card) for task_id, card in self.cards.items()}}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)
