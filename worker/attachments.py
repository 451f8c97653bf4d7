"""Files a person attached to an agent task (in Slack), written where the agent works before it starts.

The bot downloads them and the task's payload carries them (`attachments`: name, mimetype, size,
base64 data), so no Slack token ever reaches this machine. They land in `.da-files/` of the task's
folder (its worktree), which ignores itself so that the files are not committed with the agent's work,
and the prompt names them.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path
from typing import Any

FOLDER = ".da-files"
# The bot never sends more than this (SLACK_FILES_MAX_COUNT is a handful); a payload with more is not its.
MAX_FILES = 100


class AttachmentError(Exception):
    """The payload's attachments cannot be written; the message says which and why."""


def folder_for(payload: dict[str, Any], task_id: str) -> Path:
    """Where a task without a worktree gets its files: its folder, else one of its own in the temp folder."""
    cwd = payload.get("cwd")
    if isinstance(cwd, str) and cwd and Path(cwd).expanduser().is_dir():
        return Path(cwd).expanduser()
    return Path(tempfile.gettempdir()) / f"da-task-{task_id}"


def unpack(payload: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the payload's attachments into `folder`/.da-files and name them in the prompt; the payload the
    handler gets has no `attachments` (their bytes stay out of the agent's context and the logs)."""
    listed = payload.get("attachments")
    if listed is None:
        return payload
    if not isinstance(listed, list) or len(listed) > MAX_FILES:
        raise AttachmentError(f"payload field 'attachments' must be a list of at most {MAX_FILES} files")
    files = [_decoded(n, entry) for n, entry in enumerate(listed)]
    given = {key: value for key, value in payload.items() if key != "attachments"}
    if not files:
        return given
    target = folder / FOLDER
    try:
        target.mkdir(parents=True, exist_ok=True)
        # A .gitignore of "*" ignores the folder and itself: the files are never committed with the work.
        (target / ".gitignore").write_text("*\n", encoding="utf-8")
        for name, data in files:
            (target / name).write_bytes(data)
    except OSError as exc:
        raise AttachmentError(f"the attached files could not be written to {target}: {exc.strerror or exc}") from exc
    listing = ", ".join(name for name, _ in files)
    prompt = str(given.get("prompt") or "")
    given["prompt"] = f"{prompt}\n\nFiles attached to this request, in {target}: {listing}"
    return given


def _decoded(n: int, entry: Any) -> tuple[str, bytes]:
    if not isinstance(entry, dict):
        raise AttachmentError(f"attachment {n} must be an object with name and data")
    name, data = entry.get("name"), entry.get("data")
    if not isinstance(name, str) or not safe_name(name):
        raise AttachmentError(f"attachment {n} has no safe file name (a plain name, no folders, not hidden)")
    if not isinstance(data, str):
        raise AttachmentError(f"attachment {name} has no base64 data")
    try:
        return name, base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttachmentError(f"attachment {name} is not valid base64") from exc


def safe_name(name: str) -> bool:
    """A plain file name: no folder part, not hidden, not `.`/`..`, no NUL."""
    return bool(name) and "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
