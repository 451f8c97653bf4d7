"""Rules of the layout that keep each front end in its own room and each fact in one place.

They read the source (imports, string constants), so breaking one fails here with the file
and line, before it becomes a tangle.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from da import handlers
from da.bot import commands, router, views
from da.bot.slack import blocks
from da.bot.terminal import render as terminal_render
from da.queue import models

ROOT = Path(__file__).resolve().parent.parent
# Folder -> import name, as pyproject's package-dir maps them.
PACKAGES = {"da": "da", "queue": "da.queue", "worker": "da.worker", "handlers": "da.handlers", "bot": "da.bot"}


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the project: (import name, file)."""
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            yield ".".join((package, *parts)), path


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module a file imports, at any depth (lazy imports too), with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def forbidden(module: str) -> tuple[str, ...]:
    """What a module may not import, by where it lives."""
    if within(module, "da.bot.terminal"):
        return ("da.bot.slack", "da.worker")
    if within(module, "da.bot.slack"):
        return ("da.bot.terminal",)
    if within(module, "da.bot"):
        return ("da.bot.slack", "da.bot.terminal")
    if within(module, "da.queue"):
        return ("da.bot", "da.worker", "da.handlers")
    if within(module, "da.worker") or within(module, "da.handlers"):
        return ("da.bot",)
    if module in ("da.cli", "da.up"):  # the composition roots: `da` and `da up` put the parts together
        return ()
    return ("da.bot",)


def test_front_ends_and_packages_import_only_what_they_may() -> None:
    broken = [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for module, path in modules() for name, line in imports(path)
              if any(within(name, rule) for rule in forbidden(module))]
    assert broken == []


def test_the_import_rules_see_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from da.bot.slack import blocks\n")
    assert ("da.bot.slack", 2) in list(imports(sample))


VIEW_TYPES = views.View.__subclasses__()


def test_every_view_has_a_renderer_in_both_front_ends() -> None:
    assert len(VIEW_TYPES) >= 12
    for renderer in (terminal_render.render, blocks.render):
        missing = [view.__name__ for view in VIEW_TYPES if renderer.dispatch(view) is renderer.dispatch(views.View)]
        assert missing == [], f"{renderer.__module__} has no renderer for {missing}"


def test_a_view_without_a_renderer_fails_instead_of_printing_itself() -> None:
    class Forgotten(views.View):
        pass

    with pytest.raises(TypeError, match="no renderer for Forgotten"):
        terminal_render.render(Forgotten(), style=terminal_render.Style.plain(), width=80)
    with pytest.raises(TypeError, match="no renderer for Forgotten"):
        blocks.render(Forgotten())


def status_literals(path: Path) -> Iterator[int]:
    """Lines where a status is spelled as a value; a mapping key that happens to match is a field name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keys = {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    keys |= {id(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
             and isinstance(node.func, ast.Attribute) and node.func.attr == "get"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in models.STATUSES and id(node) not in keys:
            yield node.lineno


def test_statuses_are_spelled_only_in_the_queue_models() -> None:
    spelled = [f"{path.relative_to(ROOT)}:{line}" for module, path in modules() if module != "da.queue.models"
               for line in status_literals(path)]
    assert spelled == []


def test_task_types_and_folder_fields_come_from_the_handlers() -> None:
    fields = handlers.folder_fields()
    assert fields["git_pull"] == "repo_path" and fields["lint"] == "cwd" and fields["agent_run"] is None
    assert {task_type for _, task_type in router.TYPE_RULES} <= set(fields)
    for task_type, field in fields.items():
        if field:
            payload = commands.build_payload(task_type, "work", None, "/src")
            assert payload[field] == "/src"
    source = inspect.getsource(commands) + inspect.getsource(router)
    assert "repo_path" not in source


def test_there_is_one_fleet_type() -> None:
    defined = [str(path.relative_to(ROOT)) for _, path in modules()
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ClassDef) and node.name in ("Fleet", "MachineInfo")]
    assert defined == ["da/fleet.py"]


def test_each_slack_listener_kind_registers_itself() -> None:
    from da.bot.slack import listeners

    kinds = sorted(path.stem for path in (ROOT / "bot" / "slack" / "listeners").glob("*.py")
                   if path.stem != "__init__")
    registered = inspect.getsource(listeners.register)
    for kind in kinds:
        module = __import__(f"da.bot.slack.listeners.{kind}", fromlist=["register"])
        assert callable(module.register), kind
        assert f"{kind}.register(app)" in registered, f"listeners.register does not call {kind}.register"
