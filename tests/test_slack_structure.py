"""Rules of the Slack front end's shape, read from its source: one poster, state written only by
its owners, action ids shared by drawing and listening, typed listeners."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from da.bot.slack import delivery, ids, listeners, state

SLACK = Path(__file__).resolve().parent.parent / "bot" / "slack"
# The Web API methods that show something in Slack: only the poster may call them.
POSTING = frozenset({"chat_postMessage", "chat_update", "chat_postEphemeral", "chat_delete", "chat_meMessage",
                     "chat_scheduleMessage", "files_upload", "files_upload_v2", "files_completeUploadExternal",
                     "chat_startStream", "chat_appendStream", "chat_stopStream", "chat_stream", "api_call"})
# The fields of what the state keeps: only its owners change them.
STATE_FIELDS = frozenset(name for kind in (state.Card, state.Thread, state.Waiting, state.Seen,
                                           state.BulkConfirmation)
                         for name in kind.__dataclass_fields__)
MUTATORS = frozenset({"append", "pop", "clear", "update", "add", "remove", "extend", "insert", "discard"})


def sources(skip: Path | None = None) -> Iterator[tuple[Path, ast.AST]]:
    for path in sorted(SLACK.rglob("*.py")):
        if path != skip:
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SLACK.parent.parent)}:{getattr(node, 'lineno', 0)}"


def test_only_the_poster_posts() -> None:
    found = [f"{where(path, node)} calls {node.attr}" for path, tree in sources(skip=Path(delivery.__file__))
             for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in POSTING]
    found += [f"{where(path, node)} names {node.value}" for path, tree in sources(skip=Path(delivery.__file__))
              for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith(("chat.", "files."))]
    assert found == [], "post, edit and upload through delivery.Poster:\n" + "\n".join(found)


def test_the_structure_rule_sees_a_post_outside_the_poster(tmp_path: Path) -> None:
    sample = ast.parse("async def f(web):\n    await web.chat_postMessage(channel='C', text='x')\n")
    assert [n.attr for n in ast.walk(sample) if isinstance(n, ast.Attribute) and n.attr in POSTING] == \
        ["chat_postMessage"]


def test_only_the_states_owners_change_it() -> None:
    found: list[str] = []
    for path, tree in sources(skip=Path(state.__file__)):
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in STATE_FIELDS \
                        and not (isinstance(target.value, ast.Name) and target.value.id == "self"):
                    found.append(f"{where(path, node)} sets .{target.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if node.func.attr in MUTATORS and isinstance(owner, ast.Attribute) and owner.attr in STATE_FIELDS \
                        | {"delivered", "handled"}:
                    found.append(f"{where(path, node)} changes .{owner.attr}")
                if node.func.attr in ("save", "_write"):
                    found.append(f"{where(path, node)} calls {node.func.attr}()")
    assert found == [], "change the state through its owners (state.py):\n" + "\n".join(found)


class Registrations:
    """What `listeners.register` asks of the app, by kind and id (bolt keeps its matchers in closures)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Callable[..., Any]]] = {}

    def __getattr__(self, kind: str) -> Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]:
        def declare(name: Any = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def keep(listener: Callable[..., Any]) -> Callable[..., Any]:
                self.seen.setdefault(kind, {})[str(name if name is not None else listener.__name__)] = listener
                return listener
            return keep
        return declare


def registered() -> dict[str, dict[str, Callable[..., Any]]]:
    app = Registrations()
    listeners.register(app)  # type: ignore[arg-type]
    return app.seen


def test_every_drawn_action_has_its_listener_by_the_same_constant() -> None:
    seen = registered()
    assert set(seen["action"]) == ids.ACTIONS
    assert set(seen["view"]) == {ids.NOTE_SUBMIT, ids.NEW_TASK_SUBMIT, ids.ASK_NOTE_SUBMIT}
    manifest = yaml.safe_load((SLACK.parent.parent / "config" / "slack-manifest.yaml").read_text())
    shortcuts = {s["type"]: s["callback_id"] for s in manifest["features"]["shortcuts"]}
    assert (set(seen["global_shortcut"]), set(seen["message_shortcut"])) == \
        ({shortcuts["global"]}, {shortcuts["message"]}) == ({ids.GLOBAL_SHORTCUT}, {ids.MESSAGE_SHORTCUT})
    literal = [where(path, node) for path, tree in sources() for node in ast.walk(tree)
               if isinstance(node, ast.Call) and isinstance(id_argument(node), ast.Constant)]
    assert literal == [], "use the ids module's constant:\n" + "\n".join(literal)


def id_argument(call: ast.Call) -> ast.expr | None:
    """The id a `button(label, action_id, ...)`, `app.action(id)` or `app.view(id)` call names."""
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    position = {"button": 1, "action": 0, "view": 0}.get(name)
    return call.args[position] if position is not None and len(call.args) > position else None


def test_listeners_are_typed() -> None:
    expected = {"ack": "AsyncAck", "client": "AsyncWebClient", "context": "AsyncBoltContext"}
    untyped = []
    for kind, found in registered().items():
        for name, listener in found.items():
            for parameter in inspect.signature(listener).parameters.values():
                want = expected.get(parameter.name)
                if want and want not in str(parameter.annotation):
                    untyped.append(f"{kind} {name}: {parameter.name} is {parameter.annotation}")
    assert untyped == []


def test_the_emulators_facts_are_written_in_the_repository() -> None:
    tests = Path(__file__).resolve().parent
    facts = (tests / "SLACK_FACTS.md").read_text(encoding="utf-8")
    for name in ("slack_emulator.py", "slack_limits.py"):
        source = (tests / "support" / name).read_text(encoding="utf-8")
        assert "tests/SLACK_FACTS.md" in source and "/work/" not in source, name
    for fact in ("response_url", "Retry-After", "msg_blocks_too_long", "envelope_id", "missing_scope",
                 "files.completeUploadExternal", "UNCONFIRMED"):
        assert fact in facts, fact
