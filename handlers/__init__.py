"""The built-in task types: one module per type, discovered by file name.

The worker's registry validates and runs them; the front ends read only what a module
declares (its TYPE and the payload field that names its folder) to build payloads. What a
handler imports is `api` (not a task type), never the worker.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

# Modules here that are not task types: the API every handler imports.
NOT_TASK_TYPES = frozenset({"api"})


def module_names() -> list[str]:
    """The built-in handler modules, by file name (the API and private helpers like `_detect` excluded)."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_") and info.name not in NOT_TASK_TYPES)


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def type_of(module: ModuleType) -> str:
    """A module's task type: its TYPE, else its file name."""
    return getattr(module, "TYPE", module.__name__.rsplit(".", 1)[-1])


def folder_fields() -> dict[str, str | None]:
    """Every built-in task type and the payload field naming its folder (None: it needs none)."""
    modules = [load(name) for name in module_names()]
    return {type_of(module): getattr(module, "FOLDER_FIELD", None) for module in modules}
