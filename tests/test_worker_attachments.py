"""The worker writes a task's attached files where the agent works, names them in the prompt, keeps them out
of git, and refuses a payload whose files it cannot write safely (one sentence)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from da.worker import attachments


def payload(*files: tuple[str, bytes]) -> dict:
    return {"agent": "claude", "prompt": "read them",
            "attachments": [{"name": name, "mimetype": "text/plain", "size": len(data),
                             "data": base64.b64encode(data).decode()} for name, data in files]}


def test_files_land_in_da_files_and_the_prompt_names_them(tmp_path: Path) -> None:
    given = attachments.unpack(payload(("a.txt", b"one"), ("b c.png", b"\x89PNG")), tmp_path)
    folder = tmp_path / attachments.FOLDER
    assert (folder / "a.txt").read_bytes() == b"one"
    assert (folder / "b c.png").read_bytes() == b"\x89PNG"
    assert (folder / ".gitignore").read_text() == "*\n"
    assert given["prompt"] == f"read them\n\nFiles attached to this request, in {folder}: a.txt, b c.png"
    assert "attachments" not in given


def test_a_payload_without_files_is_left_alone(tmp_path: Path) -> None:
    plain = {"agent": "claude", "prompt": "hi"}
    assert attachments.unpack(plain, tmp_path) is plain
    assert not (tmp_path / attachments.FOLDER).exists()


@pytest.mark.parametrize(("name", "why"), [("../escape.txt", "no safe file name"), (".bashrc", "no safe file name"),
                                           ("a/b.txt", "no safe file name")])
def test_an_unsafe_name_is_refused_and_nothing_is_written(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(attachments.AttachmentError, match=why):
        attachments.unpack(payload(("ok.txt", b"1"), (name, b"2")), tmp_path)
    assert not (tmp_path / attachments.FOLDER).exists()
    assert not (tmp_path / "escape.txt").exists()


def test_data_that_is_not_base64_is_refused(tmp_path: Path) -> None:
    broken = {"prompt": "x", "attachments": [{"name": "a.txt", "data": "not base64!"}]}
    with pytest.raises(attachments.AttachmentError, match=r"a\.txt is not valid base64"):
        attachments.unpack(broken, tmp_path)
