"""Keep secrets out of everything the worker stores: results, notes and log files."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
# Names of environment variables whose values are secrets.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|_KEY$|CREDENTIAL)", re.IGNORECASE)
# Shorter values would redact ordinary words.
MIN_SECRET_LENGTH = 6


class Redactor:
    """Replaces each known secret value with [redacted]."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self.longest = len(values[0]) if values else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        return cls(value for key, value in env.items() if SECRET_NAME.search(key))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)

    def safe_end(self, text: str) -> int:
        """Where `text` may be split when more follows, so that no secret is cut in two.

        Everything before the returned position can be redacted on its own: a secret that
        starts there also ends there, and one that would need later text starts after it.
        """
        if self._pattern is None:
            return len(text)
        end = len(text) - (self.longest - 1)
        if end <= 0:
            return 0
        for match in self._pattern.finditer(text, max(0, end - self.longest)):
            if match.start() >= end:
                break
            if match.end() > end:
                return match.end()
        return end
