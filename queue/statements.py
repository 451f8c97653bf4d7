"""Named SQL statements and numbered migrations, read once from `queue/sql/<dialect>/`.

Every statement lives in that dialect's `queries.sql` under a header such as `-- claim_task --`,
with `:name` placeholders; each backend's runner binds them (and encodes list parameters its own way).
"""

from __future__ import annotations

import importlib.resources
import re

_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_\w+\.sql$")
# A `:name` placeholder; not a PostgreSQL cast (`::text`) nor a time inside a word.
PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_]\w*)")
COMMENT = re.compile(r"--[^\n]*")


def placeholders(sql: str) -> tuple[str, ...]:
    """The parameter names a statement takes, in order of first use (comments left out)."""
    return tuple(dict.fromkeys(PLACEHOLDER.findall(COMMENT.sub("", sql))))


class Statements:
    """The named statements (`queries.sql`) and numbered migrations of one SQL dialect."""

    def __init__(self, package: str) -> None:
        self.package = package
        text = importlib.resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
        parts = _HEADER.split(text)
        self.queries = {name: body.strip().rstrip(";")
                        for name, body in zip(parts[1::2], parts[2::2], strict=True)}

    def __getitem__(self, name: str) -> str:
        return self.queries[name]

    def parameters(self, name: str) -> tuple[str, ...]:
        """The parameter names the statement `name` takes."""
        return placeholders(self.queries[name])

    def migrations(self) -> list[tuple[int, str]]:
        """Numbered migration scripts (`0001_initial.sql` ...) in order."""
        found = []
        for entry in importlib.resources.files(self.package).iterdir():
            match = _MIGRATION.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
        return sorted(found)

    def latest(self) -> int:
        return max(number for number, _ in self.migrations())


def migrated(where: str, before: int, after: int) -> str:
    """One line for a schema change: a first start creates the database, it is not ten upgrades."""
    if before == 0:
        return f"created queue database {where} (schema {after})"
    return f"migrated queue database {where} from schema {before} to {after}"
