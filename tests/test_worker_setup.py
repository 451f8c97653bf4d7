"""`da worker` started with its own settings: which agents and types it takes, user handlers, settings and
machines.yaml it refuses in one line, and what it keeps out of results and logs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support.groq import GROQ_KEY, groq_stand_in
from tests.support.server import SECRET, QueueServer
from tests.support.workers import run_task


@pytest.fixture(scope="module")
def groq() -> Iterator[str]:
    with groq_stand_in() as base:
        yield base


async def test_agent_not_listed_for_the_machine(server: QueueServer, tmp_path: Path, client: QueueClient,
                                                make_worker) -> None:
    make_worker(server.url, tmp_path, WORKER_AGENTS="claude")
    task = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "x"})
    assert task.status == "needs_human"
    assert task.notes == "agent gemini is not available on test-box (it has claude)"


async def test_groq_answers_over_http_and_a_bad_key_needs_a_human(server: QueueServer, tmp_path: Path,
                                                                  groq: str, client: QueueClient,
                                                                  make_worker) -> None:
    good = make_worker(server.url, tmp_path, GROQ_API_KEY=GROQ_KEY, GROQ_BASE_URL=groq)
    task = await run_task(client, "agent_run", {"agent": "groq", "prompt": "hi", "model": "llama-test"})
    good.kill()
    assert task.status == "done" and task.result["stdout"] == "groq says: hi (llama-test)"
    assert task.result["answer"] == task.result["stdout"] and "session_id" not in task.result
    make_worker(server.url, tmp_path, GROQ_API_KEY="gsk_wrong_key_99999", GROQ_BASE_URL=groq)
    task = await run_task(client, "agent_run", {"agent": "groq", "prompt": "hi"})
    assert task.status == "needs_human" and "refused the API key" in task.notes


async def test_output_is_capped_and_secrets_redacted_everywhere(server: QueueServer, tmp_path: Path,
                                                                client: QueueClient, make_worker) -> None:
    token = "xoxb-planted-slack-token-42"
    password = "planted-db-password-7"  # a queue host's .env may hold the database URL too
    (tmp_path / "leak.txt").write_text(f"{SECRET}\n{password}\n")
    (tmp_path / "leak2.txt").write_text(f"{token}\n")
    process = make_worker(server.url, tmp_path, SLACK_BOT_TOKEN=token,
                          QUEUE_DB_URL=f"postgresql://da:{password}@db-host:5432/da")
    script = ("python3 -c \"import sys; sys.stdout.write('x' * 200000)\"; "
              f"echo; cat {tmp_path / 'leak.txt'}; cat {tmp_path / 'leak2.txt'} >&2; echo token=$SLACK_BOT_TOKEN; "
              "echo db=$QUEUE_DB_URL")
    task = await run_task(client, "run_script", {"script": script})
    assert task.status == "done"
    assert len(task.result["stdout"].encode()) <= 64 * 1024
    assert "bytes cut" in task.result["stdout_truncated"]
    assert "[redacted]" in task.result["stdout"] and "[redacted]" in task.result["stderr"]
    assert "token=\ndb=\n" in task.result["stdout"]  # da's own secrets are not passed to processes
    stored = [server.settings.db_path.read_bytes(), Path(task.result["log_path"]).read_bytes(),
              process.log.encode()]
    with sqlite3.connect(server.settings.db_path) as db:
        stored.append(json.dumps(db.execute("SELECT * FROM tasks").fetchall()).encode())
    for blob in stored:
        assert SECRET.encode() not in blob and token.encode() not in blob and password.encode() not in blob


async def test_unknown_type_names_where_a_handler_would_go(server: QueueServer, tmp_path: Path,
                                                           client: QueueClient, make_worker) -> None:
    make_worker(server.url, tmp_path, WORKER_CAPABILITIES="deploy_rocket")
    task = await run_task(client, "deploy_rocket", {})
    assert task.status == "needs_human"
    assert task.notes == "no handler for task type 'deploy_rocket' on test-box"
    assert "handlers/deploy_rocket.py" in task.result["action"]


async def test_user_handlers_are_discovered_and_exceptions_reported(server: QueueServer, tmp_path: Path,
                                                                    client: QueueClient, make_worker) -> None:
    folder = tmp_path / "my_handlers"
    folder.mkdir()
    (folder / "greet.py").write_text(
        "from da.handlers.api import Result\n"
        "SAFE_TO_RETRY = True\n"
        "async def run(ctx, payload):\n"
        "    if payload.get('explode'):\n"
        "        raise ValueError('the widget is missing')\n"
        "    return Result('done', f\"hello {payload['name']} from {ctx.machine}\")\n")
    make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(folder), WORKER_CAPABILITIES="greet")
    greeted = await run_task(client, "greet", {"name": "ada"})
    exploded = await run_task(client, "greet", {"explode": True})
    assert greeted.status == "done" and greeted.notes == "hello ada from test-box"
    assert exploded.status == "needs_human"
    assert exploded.notes == "handler greet raised ValueError: the widget is missing"
    assert "Traceback" in exploded.result["traceback"] and "greet.py" in exploded.result["traceback"]


async def test_malformed_handler_stops_the_worker_naming_the_file(server: QueueServer, tmp_path: Path,
                                                                  make_worker) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "oops.py").write_text("def run(ctx, payload):\n    return None\n")
    process = make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(folder))
    assert await process.wait_exit() == 2
    assert process.log.strip() == f"da: {folder / 'oops.py'}: define `async def run(ctx, payload) -> Result`."


@pytest.mark.parametrize(("env", "message"), [
    ({"MACHINE_NAME": ""}, "da: MACHINE_NAME is not set"),
    ({"SECRET_KEY": ""}, "da: DA_TOKEN is not set; put this machine's worker token in .env"),
    ({"MAX_CONCURRENT": "lots"}, "da: MAX_CONCURRENT='lots' is not a whole number"),
])
async def test_bad_settings_are_one_line_and_exit_2(server: QueueServer, tmp_path: Path, env, message,
                                                    make_worker) -> None:
    process = make_worker(server.url, tmp_path, **env)
    assert await process.wait_exit() == 2
    assert process.log.startswith(message) and process.log.count("\n") == 1


async def test_bad_machines_yaml_is_one_line(server: QueueServer, tmp_path: Path, make_worker) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text("machines:\n  box: [unclosed\n")
    process = make_worker(server.url, tmp_path)
    assert await process.wait_exit() == 2
    assert "machines.yaml: not valid YAML at line" in process.log and process.log.count("\n") == 1


async def test_machine_entry_gives_capabilities_and_aliases(server: QueueServer, tmp_path: Path,
                                                            client: QueueClient, make_worker) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text(
        "machines:\n  mac-mini:\n    capabilities: [run_script]\n    agents: [claude]\n    aliases: [mac]\n")
    make_worker(server.url, tmp_path, MACHINE_NAME="mac-mini", WORKER_CAPABILITIES="",
                WORKER_AGENTS="")
    task = await run_task(client, "run_script", {"script": "echo pinned"}, target_machine="mac")
    assert task.status == "done" and task.assigned_to == "mac-mini"


async def test_yaml_tags_never_run(server: QueueServer, tmp_path: Path, make_worker) -> None:
    (tmp_path / "config").mkdir()
    marker = tmp_path / "pwned"
    (tmp_path / "config" / "machines.yaml").write_text(
        f'machines: !!python/object/apply:os.system ["touch {marker}"]\n')
    process = make_worker(server.url, tmp_path)
    assert await process.wait_exit() == 2
    assert "machines.yaml: not valid YAML" in process.log and not marker.exists()
