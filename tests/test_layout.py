"""The package layout: `queue/` must not shadow the standard library's `queue`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_queue_still_imports_from_the_repo_root() -> None:
    result = subprocess.run([sys.executable, "-c", "import queue, aiosqlite; print(queue.__file__)"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(ROOT / "queue"))


def test_sql_ships_as_package_data_for_both_dialects() -> None:
    from da.queue import pgdatabase, sqlite

    for statements in (sqlite.STATEMENTS, pgdatabase.STATEMENTS):
        assert "claim_task" in statements.queries
        assert next(number for number, _ in statements.migrations()) == 1
    # Both dialects name the same verbs; PostgreSQL adds its feed horizon, liveness and migration bookkeeping,
    # and SQLite its reads for `da migrate --to` (the copy into PostgreSQL).
    assert set(sqlite.STATEMENTS.queries) - set(pgdatabase.STATEMENTS.queries) == {
        "last_event", "export_tasks", "export_events", "export_pruned_counts", "export_tokens", "export_asks",
        "export_messages"}


def test_json_logs_carry_each_transition(tmp_path: Path) -> None:
    from tests.support import loopback
    from tests.support.processes import start_serve

    process, url, log = start_serve(tmp_path, SECRET_KEY="s3cret-value-123", LOG_FORMAT="json")
    try:
        headers = {"x-secret-key": "s3cret-value-123"}
        task = loopback.post(f"{url}/v1/tasks", json={"type": "lint"}, headers=headers).json()
        loopback.post(f"{url}/v1/tasks/{task['id']}/cancel", json={"by": "ada"}, headers=headers)
    finally:
        process.terminate()
        process.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    transitions = [(line["status"], line.get("by")) for line in lines if line.get("task_id") == task["id"]]
    assert transitions == [("pending", None), ("cancelled", "ada")]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert "s3cret-value-123" not in log.read_text()


# Imports every module of the package in a fresh interpreter: a warning raised by da's own code fails, one raised
# inside a dependency (an import-time deprecation, say) is printed and passes.
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys, warnings
warnings.simplefilter("default")
warnings.filterwarnings("error", module=r"da(\\.|$)")
import da
names = ["da"] + [m.name for m in pkgutil.walk_packages(da.__path__, "da.")]
for package in ("da.queue", "da.worker", "da.handlers", "da.bot"):
    module = importlib.import_module(package)
    names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    importlib.import_module(name)
print(len(set(names)))
"""


def test_every_module_imports_without_a_warning_of_its_own() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 60


def test_the_import_check_fails_on_a_warning_of_da_s_own(tmp_path: Path) -> None:
    script = IMPORT_EVERY_MODULE + "\nwarnings.warn_explicit('stale', DeprecationWarning, 'x.py', 1, module='da.x')\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DeprecationWarning: stale" in result.stderr


def test_the_cli_hides_a_dependency_s_warning_and_shows_its_own() -> None:
    script = ("import warnings\nfrom da import cli\ncli.quiet_dependency_warnings()\n"
              "warnings.warn_explicit('from a dependency', DeprecationWarning, 'dsa.py', 1, module='cryptography.x')\n"
              "warnings.warn_explicit('from da', UserWarning, 'cli.py', 1, module='da.cli')\n")
    result = python_ran(script)
    assert "from a dependency" not in result.stderr and "UserWarning: from da" in result.stderr


def test_a_da_process_loads_neither_httpxs_command_line_client_nor_its_dependencies() -> None:
    script = ("import sys\nfrom da import cli\ncli.skip_httpx_command_line()\nimport httpx\n"
              "from da.queue.client import QueueClient\n"
              "print(sorted(m for m in ('click', 'rich', 'pygments') if m in sys.modules), callable(httpx.main))\n")
    assert python_ran(script).stdout.split() == ["[]", "True"]


def test_acp_loads_its_models_unbuilt_and_builds_one_when_a_message_needs_it() -> None:
    """The speed-up of `load_acp` rests on pydantic internals: a pydantic release without them must show here."""
    script = ("from da.worker.acp_loading import load_acp\nload_acp()\nfrom acp import schema\n"
              "model = schema.RequestPermissionResponse\nbuilt = model.__pydantic_complete__\n"
              "answer = model.model_validate_json('{\"outcome\": {\"outcome\": \"cancelled\"}}')\n"
              "print(built, model.__pydantic_complete__, answer.outcome.outcome)\n")
    assert python_ran(script).stdout.split() == ["False", "True", "cancelled"]


def python_ran(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by a fresh interpreter in the repository, which must exit 0."""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result


# Statements both dialects have but that take different parameters, and why; any other difference is a bug (a
# parameter one backend's store code passes that the other's statement never reads, or a typo in one of them).
DIALECT_PARAMETERS = {
    # SQLite reads the claimable (type, pin, agent) ranges as three lists; PostgreSQL as one list of index keys.
    "claim_task": ({"capabilities", "pins", "agents"}, {"keys"}),
    # Only PostgreSQL's feed stops at the proven horizon (sequence values commit out of order).
    "events_after": (set(), {"horizon"}),
    # Only a shared database subtracts the time another replica watched.
    "shift_leases": (set(), {"now", "period", "tolerance"}),
}


def test_statements_shared_by_both_dialects_take_the_same_parameters() -> None:
    from da.queue import pgdatabase, sqlite

    shared = set(sqlite.STATEMENTS.queries) & set(pgdatabase.STATEMENTS.queries)
    differ = {}
    for name in shared:
        lite, pg = set(sqlite.STATEMENTS.parameters(name)), set(pgdatabase.STATEMENTS.parameters(name))
        if lite != pg:
            differ[name] = (lite - pg, pg - lite)
    assert differ == DIALECT_PARAMETERS
    assert {"claim_task", "report_task", "reap_expired"} <= shared


def test_the_parameter_check_sees_a_parameter_one_dialect_lacks() -> None:
    from da.queue import statements

    assert statements.placeholders("SELECT :a, x::text, ':b' -- :c\nFROM t WHERE y = :a AND z = :d") == ("a", "b", "d")


# One-word literals in SQL that are not task statuses: who made a change, token kinds, JSON keys, catalog names
# and a regexp flag. Any other one-word literal must be a status, so a misspelt status fails here.
NOT_STATUSES = {"queue", "reaper", "client", "reader", "worker", "action", "error", "late_report", "event_ids",
                "schema_version", "seq", "server_version", "tasks", "messages", "g", "input_tokens", "output_tokens"}
# A literal compared with, listed against or assigned to a status column.
STATUS_COMPARED = re.compile(r"\b(?:status|to_status|from_status)\s*(?:=|<>|!=)\s*'([^']*)'")
STATUS_LISTED = re.compile(r"\b(?:status|to_status|from_status)\s+(?:NOT\s+)?IN\s*\(([^()]*)\)", re.IGNORECASE)
STATUS_CASE = re.compile(r"\bstatus\s*=\s*CASE\b(.*?)\bEND\b", re.DOTALL)
LITERAL = re.compile(r"'([^']*)'")


def status_literals(sql: str) -> set[str]:
    """The literals this SQL uses as statuses: compared with, listed against or set on a status column, and every
    other one-word literal that is not a known non-status."""
    sql = re.sub(r"--[^\n]*", "", sql)
    found = set(STATUS_COMPARED.findall(sql))
    for listed in STATUS_LISTED.findall(sql):
        found.update(LITERAL.findall(listed))
    for case in STATUS_CASE.findall(sql):
        found.update(re.findall(r"\b(?:THEN|ELSE)\s+'([^']*)'", case))
    words = {word for word in LITERAL.findall(sql) if re.fullmatch(r"[a-z][a-z_]*", word)}
    return found | (words - NOT_STATUSES)


def test_every_status_literal_in_sql_is_a_real_status() -> None:
    from da.queue import models

    used = {str(path.relative_to(ROOT)): status_literals(path.read_text())
            for path in sorted((ROOT / "queue" / "sql").rglob("*.sql"))}
    statuses = set(models.STATUSES)
    # An ask's status and kind columns hold their own words.
    ask_words = set(models.ASK_STATUSES) | set(models.ASK_KINDS)
    unknown = {name: sorted(words - statuses - ask_words) for name, words in used.items()
               if words - statuses - ask_words}
    assert unknown == {}
    # The check reads what it should: every status appears in each dialect's statements.
    assert (used["queue/sql/sqlite/queries.sql"] - ask_words == used["queue/sql/postgres/queries.sql"] - ask_words
            == statuses)


def test_the_status_check_catches_a_misspelt_status() -> None:
    from da.queue import models

    sql = ("UPDATE tasks SET status = CASE WHEN x THEN 'pendng' ELSE 'done ' END, changed_by = 'reaper' "
           "WHERE status IN ('claimed', 'in_progres') AND kind = 'worker' OR status <> 'canceled'")
    assert status_literals(sql) - set(models.STATUSES) == {"pendng", "done ", "in_progres", "canceled"}
