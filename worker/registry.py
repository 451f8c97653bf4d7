"""Handler discovery: each module in da.handlers (and in DA_HANDLERS_PATH folders) is a task type.

A handler module sets `TYPE` (defaults to its file name), `SAFE_TO_RETRY` (may it run twice
if its worker is lost mid-run), optionally `DEFAULT_TIMEOUT`, and defines
`async def run(ctx, payload) -> Result` (names from `da.handlers.api`); `FOLDER_FIELD` names
the payload field holding its folder when it needs one (one of `FOLDER_FIELDS`, so its folder is locked).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from da import handlers as builtin_handlers
from da.queue import models as queue_models
from da.worker.errors import HandlerError

# Used when a handler does not say: long enough for a script, short enough to notice a hang.
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Handler:
    """A validated handler module."""

    type: str
    run: Any
    safe_to_retry: bool
    default_timeout: float
    source: str
    folder_field: str | None = None


def validate(module: ModuleType, source: str) -> Handler:
    """Check the contract; the error names the file and what is wrong."""
    name = builtin_handlers.type_of(module)
    if not isinstance(name, str) or not name:
        raise HandlerError(f"{source}: TYPE must be a non-empty string.")
    run = getattr(module, "run", None)
    if run is None or not inspect.iscoroutinefunction(run):
        raise HandlerError(f"{source}: define `async def run(ctx, payload) -> Result`.")
    if len(inspect.signature(run).parameters) != 2:
        raise HandlerError(f"{source}: run must take exactly (ctx, payload).")
    safe = getattr(module, "SAFE_TO_RETRY", False)
    if not isinstance(safe, bool):
        raise HandlerError(f"{source}: SAFE_TO_RETRY must be True or False.")
    timeout = getattr(module, "DEFAULT_TIMEOUT", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise HandlerError(f"{source}: DEFAULT_TIMEOUT must be a positive number of seconds.")
    folder = getattr(module, "FOLDER_FIELD", None)
    if folder is not None and folder not in queue_models.FOLDER_FIELDS:
        raise HandlerError(f"{source}: FOLDER_FIELD must be one of {', '.join(queue_models.FOLDER_FIELDS)} "
                           "(the payload fields the queue locks a folder by).")
    return Handler(name, run, safe, float(timeout), source, folder)


def _load_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"da_user_handlers.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise HandlerError(f"{path}: cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HandlerError(f"{path}: fails to import: {type(exc).__name__}: {exc}") from exc
    return module


def discover(extra_paths: Sequence[Path] = ()) -> dict[str, Handler]:
    """Every handler by type; later folders override built-ins of the same type."""
    found: dict[str, Handler] = {}
    for name in builtin_handlers.module_names():
        source = f"handlers/{name}.py"
        try:
            module = builtin_handlers.load(name)
        except Exception as exc:
            raise HandlerError(f"{source}: fails to import: {type(exc).__name__}: {exc}") from exc
        handler = validate(module, source)
        found[handler.type] = handler
    for folder in extra_paths:
        if not folder.is_dir():
            raise HandlerError(f"DA_HANDLERS_PATH entry {folder} is not a folder.")
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            handler = validate(_load_file(path), str(path))
            found[handler.type] = handler
    return found
