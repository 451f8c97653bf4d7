"""Which tool a project uses, judged from the files in its folder (shared by several handlers)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from da.handlers.api import Context, NeedsHuman, Result, text_field, timeout_field


def command_field(command: str | None) -> list[str] | None:
    """A payload `command` split like a shell would, but run without one."""
    if command is None:
        return None
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise NeedsHuman(f"payload field 'command' cannot be parsed ({exc})", "fix the quoting and resubmit") from exc
    if not argv:
        raise NeedsHuman("payload field 'command' is empty", "resubmit with a command or without the field")
    return argv


def has_python(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("pyproject.toml", "setup.py", "setup.cfg", "pytest.ini",
                                                       "tox.ini")) or any(folder.glob("*.py"))


def gradle(folder: Path) -> list[str]:
    """The project's gradle wrapper when it has one, else gradle on PATH."""
    wrapper = folder / "gradlew"
    return [str(wrapper)] if wrapper.exists() else ["gradle"]


def has_gradle(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("gradlew", "build.gradle", "build.gradle.kts",
                                                       "settings.gradle", "settings.gradle.kts"))


def xcode_container(folder: Path) -> list[str]:
    """`-workspace X` or `-project Y` for xcodebuild, preferring a workspace."""
    for pattern, flag in (("*.xcworkspace", "-workspace"), ("*.xcodeproj", "-project")):
        found = sorted(folder.glob(pattern))
        if found:
            return [flag, found[0].name]
    return []


def test_command(folder: Path) -> tuple[list[str], str]:
    """The test command for a project, and the tool's name for messages."""
    if has_python(folder):
        return ["python", "-m", "pytest", "-q"], "pytest"
    if (folder / "package.json").exists():
        return ["npm", "test"], "npm"
    if has_gradle(folder):
        return [*gradle(folder), "test"], "gradle"
    container = xcode_container(folder)
    if container:
        return ["xcodebuild", "test", *container], "xcodebuild"
    raise NeedsHuman(f"cannot tell how to test {folder}: no pyproject.toml, package.json, gradle or Xcode project",
                     "resubmit with a 'command', e.g. {\"command\": \"make test\"}")


def lint_command(folder: Path) -> tuple[list[str], str]:
    """The lint command for a project, and the tool's name for messages."""
    if has_python(folder):
        return ["ruff", "check", "."], "ruff"
    if (folder / "package.json").exists():
        return ["npx", "--no-install", "eslint", "."], "eslint"
    if has_gradle(folder):
        return ["ktlint"], "ktlint"
    if (folder / "Package.swift").exists() or any(folder.glob("*.swift")) or xcode_container(folder):
        return ["swiftlint"], "swiftlint"
    raise NeedsHuman(f"cannot tell how to lint {folder}: no Python, JavaScript, Kotlin or Swift project found",
                     "resubmit with a 'command', e.g. {\"command\": \"make lint\"}")


async def run_in_project(ctx: Context, payload: dict[str, Any], detect: Any, default_timeout: float) -> Result:
    """Run the payload's `command`, else the detected one, in the project folder `cwd`."""
    cwd = ctx.check_cwd(text_field(payload, "cwd", required=True))
    argv = command_field(text_field(payload, "command"))
    tool = argv[0] if argv else ""
    if argv is None:
        argv, tool = detect(cwd)
    process = await ctx.run(argv, cwd=cwd, timeout=timeout_field(payload, default_timeout))
    return ctx.classify(process, tool=tool)
