"""Rules of the layout that keep each front end in its own room and each fact in one place.

They read the source (imports, string constants), so breaking one fails here with the file
and line, before it becomes a tangle.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from da import handlers
from da.bot import commands, router, views
from da.bot.slack import blocks
from da.bot.terminal import render as terminal_render
from da.queue import models
from da.worker import registry
from da.worker.errors import HandlerError

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
    if within(module, "da.worker"):
        return ("da.bot",)
    if within(module, "da.handlers"):
        return ("da.bot", "da.worker")
    if module == "da.agents":
        return ("da.bot", "da.worker", "da.handlers")
    if module in ("da.cli", "da.up"):  # the composition roots: `da` and `da up` put the parts together
        return ()
    return ("da.bot",)


def test_front_ends_and_packages_import_only_what_they_may() -> None:
    broken = [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for module, path in modules() for name, line in imports(path)
              if any(within(name, rule) for rule in forbidden(module))]
    assert broken == []


# Imports every module given (a name that is an attribute of its parent, not a module, is skipped),
# then runs the paths that load modules by name at run time, then lists what is loaded.
LOADED_BY_FRONT_ENDS = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        parent, _, attr = name.rpartition(".")
        if exc.name != name or not hasattr(sys.modules.get(parent), attr):
            raise
from da.bot import commands, router
from da.fleet import Fleet
for task_type in router.known_types(Fleet()):
    commands.build_payload(task_type, "work", "claude", "/src")
print(json.dumps(sorted(sys.modules)))
"""


def test_the_front_ends_load_no_worker_module_at_run_time() -> None:
    front_ends = [(module, path) for module, path in modules() if within(module, "da.bot")]
    names = {module for module, _ in front_ends} | {"da.cli"}
    names |= {name for _, path in front_ends for name, _ in imports(path) if within(name, "da")}
    result = subprocess.run([sys.executable, "-c", LOADED_BY_FRONT_ENDS, json.dumps(sorted(names))], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "da.bot.slack.app" in loaded and "da.handlers.agent_run" in loaded and "da.doctor" in loaded
    assert [name for name in loaded if within(name, "da.worker")] == []


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
    keys |= {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys if key is not None}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in models.STATUSES and id(node) not in keys:
            yield node.lineno


# Words that became statuses after these lines used them for something else (none left).
NOT_STATUS_USES: set[str] = set()


def test_statuses_are_spelled_only_in_the_queue_models() -> None:
    spelled = [f"{path.relative_to(ROOT)}:{line}" for module, path in modules() if module != "da.queue.models"
               for line in status_literals(path)]
    assert [place for place in spelled if place not in NOT_STATUS_USES] == []


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


def test_every_handler_s_folder_field_is_one_the_checkout_lock_reads() -> None:
    discovered = registry.discover()
    fields = {handler.folder_field for handler in discovered.values()} - {None}
    assert fields and fields <= set(models.FOLDER_FIELDS)
    assert fields == {field for field in handlers.folder_fields().values() if field}
    for field in models.FOLDER_FIELDS:
        assert models.checkout_of({field: "/src"}) == "/src"


def test_a_handler_whose_folder_field_the_lock_cannot_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "deploy.py").write_text('FOLDER_FIELD = "project"\nasync def run(ctx, payload):\n    pass\n')
    with pytest.raises(HandlerError, match=r"deploy.py: FOLDER_FIELD must be one of cwd, repo_path"):
        registry.discover([tmp_path])
