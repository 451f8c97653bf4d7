"""Importing the `acp` package the quick way.

`acp.schema` declares about 280 pydantic models. At import pydantic builds every one's validator and
reads each class's source for its fields' docstrings (used only in JSON schemas): about 0.3 s of CPU
before a worker's first supervised turn, and before every adapter written with the package starts.
Deferred, a model is built the first time it is used, and a session uses a few dozen of them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_acp() -> ModuleType:
    """`import acp`, with model builds deferred to first use and field docstrings left unread.

    Both switches are pydantic internals, so each is set only where this pydantic has it; without
    them the import is slower, never different.
    """
    try:
        from pydantic._internal import _config, _fields
    except ImportError:
        return importlib.import_module("acp")
    defaults = getattr(_config, "config_defaults", None)
    if isinstance(defaults, dict) and "defer_build" in defaults:
        defaults["defer_build"] = True
    if hasattr(_fields, "extract_docstrings_from_cls"):
        _fields.extract_docstrings_from_cls = _no_docstrings
    return importlib.import_module("acp")


def _no_docstrings(cls: type, use_inspect: bool = False) -> dict[str, str]:
    return {}
