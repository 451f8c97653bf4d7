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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        return cls(value for key, value in env.items() if SECRET_NAME.search(key))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(REDACTED, text)
