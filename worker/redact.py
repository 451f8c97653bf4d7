"""Keep secrets out of everything the worker stores: results, notes and log files.

Every value of an environment variable whose name says it is a secret is replaced wherever it
appears as is. The credential the worker holds for the queue (DA_TOKEN, or SECRET_KEY) is also
found reversed and base64-encoded (standard or URL-safe alphabet, at any offset in a longer
encoded text): a task can read it and might print it so. Other transformations (hex, split in
pieces, compressed, encrypted) are not found; with scoped tokens, what leaks that way is only a
worker token, which can do nothing but run this machine's tasks.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"
# Names of environment variables whose values are secrets.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|_KEY$|CREDENTIAL)", re.IGNORECASE)
# Shorter values would redact ordinary words.
MIN_SECRET_LENGTH = 6
# Looked for in disguise too. Only these: each disguise costs as much scanning as another secret,
# and task output can run to hundreds of megabytes.
DISGUISED = ("DA_TOKEN", "SECRET_KEY")
_URL_SAFE = str.maketrans("+/", "-_")


def disguises(secret: str) -> set[str]:
    """The secret reversed, and the part of its base64 encoding that depends on it alone at each of
    the three byte offsets it can have in a longer encoded text (both alphabets)."""
    raw = secret.encode()
    found = {secret[::-1]}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        # Drop the characters that mix in bits of the bytes before and after it.
        core = encoded[(8 * offset + 5) // 6:(8 * (offset + len(raw))) // 6]
        found |= {core, core.translate(_URL_SAFE)}
    return found


class Redactor:
    """Replaces each known secret value with [redacted]."""

    def __init__(self, secrets: Iterable[str], *, disguised: Iterable[str] = ()) -> None:
        wanted = {s for s in secrets if s}
        wanted |= {d for s in disguised if s and len(s) >= MIN_SECRET_LENGTH for d in (s, *disguises(s))}
        values = sorted({s for s in wanted if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self.longest = len(values[0]) if values else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        return cls((value for key, value in env.items() if SECRET_NAME.search(key)),
                   disguised=(env.get(key, "") for key in DISGUISED))

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
