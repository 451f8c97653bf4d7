"""Keep secrets out of everything the worker stores: results, notes and log files.

Every value of an environment variable whose name says it is a secret is replaced wherever it
appears as is. The credential the worker holds for the queue (DA_TOKEN, or SECRET_KEY) is also
found reversed and base64-encoded (standard or URL-safe alphabet, at any offset in a longer
encoded text): a task can read it and might print it so. Queue credentials this worker does not
hold are found in the forms the docs show them in: any scoped token (`daw_`, `dac_`, `dar_` and
43 characters), and the value after `SECRET_KEY=`, `DA_TOKEN=` (or `:`), `x-secret-key:` and
`Authorization: Bearer` (a `.env` or a request a task prints). Other transformations (hex, split
in pieces, compressed, encrypted) are not found; with scoped tokens, what leaks that way is only
a worker token, which can do nothing but run this machine's tasks.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
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
# Queue credentials in the shapes the docs show them in; group `lead` is kept, the rest redacted.
# Each is scanned only in text holding one of its anchors (a substring test is nearly free, a
# regex like these over every byte of output is not). Bounded lengths keep `Redactor.longest`
# (and so how much a long line holds back) finite; a value starting with `$` is a shell
# reference, not a secret.
MAX_FORM_VALUE = 1024
_VALUE = rf"(?!\$)[^\s\"'`]{{{MIN_SECRET_LENGTH},{MAX_FORM_VALUE}}}"
FORMS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("dac_", "dar_", "daw_"), re.compile(r"da[crw]_[A-Za-z0-9_-]{43}")),
    (("SECRET_KEY", "DA_TOKEN"),
     re.compile(r"(?P<lead>\b(?:SECRET_KEY|DA_TOKEN)[\"']?[ \t]{0,8}[=:][ \t]{0,8}[\"']?)" + _VALUE)),
    (("ecret-",), re.compile(r"(?P<lead>(?i:\bx-secret-key):[ \t]{0,8})" + _VALUE)),
    (("earer",), re.compile(r"(?P<lead>(?i:\bauthorization:[ \t]{0,8}bearer)[ \t]{1,8})" + _VALUE)),
)
FORMS_LONGEST = 64 + MAX_FORM_VALUE


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

    def __init__(self, secrets: Iterable[str], *, disguised: Iterable[str] = (), forms: bool = False) -> None:
        wanted = {s for s in secrets if s}
        wanted |= {d for s in disguised if s and len(s) >= MIN_SECRET_LENGTH for d in (s, *disguises(s))}
        values = sorted({s for s in wanted if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self._forms = FORMS if forms else ()
        self.longest = max([len(v) for v in values] + [FORMS_LONGEST if forms else 0])

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        database_password = urllib.parse.urlsplit(env.get("QUEUE_DB_URL", "")).password or ""
        return cls([*(value for key, value in env.items() if SECRET_NAME.search(key)), database_password],
                   disguised=(env.get(key, "") for key in DISGUISED), forms=True)

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for pattern in self._patterns(text):
            text = pattern.sub(_replace, text)
        return text

    def _patterns(self, text: str) -> list[re.Pattern[str]]:
        """The patterns that can match in this text: the known values, and the forms whose anchor it holds."""
        found = [self._pattern] if self._pattern is not None else []
        return found + [pattern for anchors, pattern in self._forms if any(anchor in text for anchor in anchors)]

    def safe_end(self, text: str) -> int:
        """Where `text` may be split when more follows, so that no secret is cut in two.

        Everything before the returned position can be redacted on its own: a secret that
        starts there also ends there, and one that would need later text starts after it.
        """
        patterns = self._patterns(text)
        if not patterns:
            return len(text)
        end = len(text) - (self.longest - 1)
        if end <= 0:
            return 0
        split = end
        for pattern in patterns:
            for match in pattern.finditer(text, max(0, end - self.longest)):
                if match.start() >= end:
                    break
                split = max(split, match.end())
        return split


def _replace(match: re.Match[str]) -> str:
    lead = match.group("lead") if "lead" in match.re.groupindex else None
    return REDACTED if lead is None else lead + REDACTED
