"""The skills registry, `config/skills.yaml`: what can be installed on a machine, and how.

Parsed here (for `da doctor` and the terminal's `skills` verbs); installing and checking
over SSH is the terminal's part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from da.config import ConfigError, read_yaml

SKILLS_FILE = "skills.yaml"
CATEGORIES = ("ai-agent", "mobile", "backend", "infrastructure")


@dataclass(frozen=True)
class Skill:
    """One entry of skills.yaml."""

    name: str
    category: str
    description: str
    check: str
    install: dict[str, str]
    task_types: tuple[str, ...] = ()
    handler: str = ""


def load_registry(path: Path) -> dict[str, Skill]:
    """Parse skills.yaml, naming the first bad entry."""
    if not path.is_file():
        return {}
    data = read_yaml(path) or {}
    entries = data.get("skills") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a top-level `skills:` mapping.")
    registry = {}
    for name, entry in entries.items():
        where = f"{path}: skills.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping.")
        install = entry.get("install") or {}
        if not isinstance(install, dict) or not all(isinstance(v, str) for v in install.values()):
            raise ConfigError(f"{where}.install must map an os (macos, linux) to a command.")
        if entry.get("category") not in CATEGORIES:
            raise ConfigError(f"{where}.category must be one of {', '.join(CATEGORIES)}.")
        if not isinstance(entry.get("check"), str):
            raise ConfigError(f"{where}.check must be a command.")
        registry[str(name)] = Skill(str(name), entry["category"], str(entry.get("description", "")), entry["check"],
                                    dict(install), tuple(entry.get("task_types") or ()),
                                    str(entry.get("handler") or ""))
    return registry
