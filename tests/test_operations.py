"""Durability and upkeep: backups while serving, restore, prune keeping counts, migration backups."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from da import fleet as fleet_module
from da.queue import pgdatabase
from da.queue import sqlite as sqlite_store
from da.queue.client import QueueClient
from da.queue.settings import redact_url
from da.queue.sqlite import SqliteStore
from tests.support.ports import free_port
from tests.support.processes import run_da, up_start_line
from tests.support.server import SECRET, QueueServer


async def test_backup_while_serving_and_restore(server: QueueServer, client: QueueClient, tmp_path: Path) -> None:
    made = {(await client.create_task("lint", {"cwd": "/x"})).id for _ in range(30)}
    copy = tmp_path / "backup.db"
    code, out = await run_da("backup", str(copy), cwd=tmp_path, QUEUE_DB_PATH=str(server.settings.db_path))
    assert code == 0, out
    await client.create_task("lint", {"cwd": "/after-backup"})
    await server.stop()
    code, out = await run_da("restore", str(copy), cwd=tmp_path, QUEUE_DB_PATH=str(server.settings.db_path),
                             QUEUE_PORT="9")
    assert code == 0 and "previous file is kept" in out, out
    await server.start()
    tasks, _ = await client.list_tasks(limit=100)
    assert {t.id for t in tasks} == made


async def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database")
    code, out = await run_da("restore", str(junk), cwd=tmp_path, QUEUE_DB_PATH=str(tmp_path / "q.db"), QUEUE_PORT="9")
    assert code == 2 and "is not a queue database backup" in out
    assert not (tmp_path / "q.db").exists()


async def test_prune_removes_old_finished_tasks_but_keeps_machine_counts(make_server) -> None:
    roster = fleet_module.parse_fleet({"machines": {"mac-mini": {"capabilities": ["agent_run"]}}}, "t")
    server = await make_server(fleet=roster)
    async with QueueClient(server.url, SECRET) as client:
        finished = []
        for status in ("done", "done", "failed"):
            task = await client.create_task("agent_run", {"prompt": "x"}, agent="claude")
            held = await client.claim("mac-mini", ["agent_run"], agents=["claude"])
            await client.report(task.id, held.lease, status, {})
            finished.append(task.id)
        waiting = await client.create_task("agent_run", {"prompt": "later"})
        before = {m["name"]: m for m in await client.machines()}["mac-mini"]
        assert await client.prune(3600) == 0
        assert await client.prune(0) == 3
        after = {m["name"]: m for m in await client.machines()}["mac-mini"]
        assert (after["done"], after["failed"], after["top_agent"]) == (before["done"], before["failed"], "claude")
        remaining, _ = await client.list_tasks()
        assert [t.id for t in remaining] == [waiting.id]
        with sqlite3.connect(server.settings.db_path) as db:
            assert db.execute("SELECT count(*) FROM events WHERE task_id IN (?, ?, ?)", finished).fetchone() == (0,)


def schema_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the queue said at INFO and above about its database's schema."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "schema" in r.getMessage()]


async def test_a_new_database_says_so_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="da.queue")
    store = SqliteStore(tmp_path / "new.db")
    await store.open()
    await store.close()
    await store.open()  # a second start has nothing to say
    await store.close()
    latest = sqlite_store.STATEMENTS.latest()
    assert schema_lines(caplog) == [f"created queue database {tmp_path / 'new.db'} (schema {latest})"]


async def test_a_new_postgresql_database_says_so_in_one_line(postgres_cluster, caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    from da.queue.postgres import PostgresStore

    caplog.set_level(logging.INFO, logger="da.queue")
    url = await postgres_cluster.create_database(migrated=False)
    try:
        for _ in range(2):  # the second start has nothing to say
            store = PostgresStore(url)
            await store.open()
            await store.close()
    finally:
        await postgres_cluster.drop_database(url)
    assert schema_lines(caplog) == [
        f"created queue database {redact_url(url)} (schema {pgdatabase.STATEMENTS.latest()})"]


async def test_an_old_database_is_backed_up_then_migrated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="da.queue")
    path = tmp_path / "old.db"
    first = dict(sqlite_store.STATEMENTS.migrations())[1]
    with sqlite3.connect(path) as db:
        db.executescript(first)
        db.execute("PRAGMA user_version=1")
        db.execute("INSERT INTO tasks (id, type, status, priority, payload, max_attempts, created_at, updated_at) "
                   "VALUES ('00000000-aaaa', 'lint', 'pending', 5, '{}', 3, 0, 0)")
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.schema_version() == sqlite_store.STATEMENTS.latest()
        assert (await store.get("00000000-aaaa")).type == "lint"
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "old.db.v1.bak") as backup:
        assert backup.execute("PRAGMA user_version").fetchone() == (1,)
        assert backup.execute("SELECT id FROM tasks").fetchall() == [("00000000-aaaa",)]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [f"backing up {path} to {tmp_path / 'old.db.v1.bak'} before migrating it",
                    f"migrated queue database {path} from schema 1 to {sqlite_store.STATEMENTS.latest()}"]


async def test_an_acknowledged_task_survives_a_killed_queue_process(tmp_path: Path) -> None:
    import os
    import signal
    port = free_port()
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": SECRET, "QUEUE_PORT": str(port),
           "QUEUE_DB_PATH": str(tmp_path / "q.db"), "DA_CONFIG_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}

    async def start() -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "da.cli", "serve", env=env, cwd=tmp_path)
        async with QueueClient(f"http://127.0.0.1:{port}", SECRET, rounds=30) as probe:
            await probe.list_tasks()
        return process

    process = await start()
    async with QueueClient(f"http://127.0.0.1:{port}", SECRET) as client:
        acknowledged = [(await client.create_task("lint", {"n": n})).id for n in range(50)]
    process.send_signal(signal.SIGKILL)
    await process.wait()
    process = await start()
    try:
        async with QueueClient(f"http://127.0.0.1:{port}", SECRET) as client:
            tasks, _ = await client.list_tasks(limit=100)
        assert sorted(t.id for t in tasks) == sorted(acknowledged)
    finally:
        process.terminate()
        await process.wait()


async def test_service_install_writes_units_for_both_systems(tmp_path: Path) -> None:
    import plistlib

    home = tmp_path / "home"
    code, out = await run_da("service", "install", "worker", "--os=linux", cwd=tmp_path, HOME=str(home))
    unit = home / ".config/systemd/user/da-worker.service"
    assert code == 0 and "systemctl --user enable --now da-worker.service" in out
    text = unit.read_text()
    assert f"WorkingDirectory={tmp_path}" in text and text.splitlines()[text.splitlines().index("[Service]") + 4] \
        .startswith("ExecStart=") and text.rstrip().endswith("WantedBy=default.target")
    code, out = await run_da("service", "install", "queue", "--os=macos", "--print", cwd=tmp_path, HOME=str(home))
    assert code == 0 and "launchctl load -w" in out
    plist = plistlib.loads(out.split("# would be written")[0].encode())
    assert plist["Label"] == "com.da.queue" and plist["ProgramArguments"][-1] == "serve"
    assert not (home / "Library").exists()


async def test_doctor_says_what_to_fix(server: QueueServer, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text(
        "machines:\n  box:\n    capabilities: [run_script]\n    agents: [no-such-agent-cli]\n")
    code, out = await run_da("doctor", cwd=tmp_path, SECRET_KEY="wrong-secret", QUEUE_URL=server.url,
                             MACHINE_NAME="box")
    assert code == 1
    assert f"ok   queue: {server.url} answers /health" in out
    assert "FAIL secret: refused (401)" in out and "use the same SECRET_KEY" in out
    assert "FAIL agent no-such-agent-cli: not on PATH" in out
    code, out = await run_da("doctor", cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_URL=server.url, MACHINE_NAME="box",
                             PATH=f"{tmp_path}:{__import__('os').environ['PATH']}")
    assert "ok   secret: accepted" in out
    assert "ok   worker: box runs run_script; agents no-such-agent-cli (from machines.yaml on this machine)" in out


async def test_doctor_asks_agents_and_checks_slack_tokens(server: QueueServer, tmp_path: Path) -> None:
    import os

    from tests.support.slack_emulator import SlackEmulator
    from tests.support.workers import fake_bin

    bin_dir = fake_bin(tmp_path / "bin")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text("machines:\n  box:\n    agents: [claude, codex]\n")
    (tmp_path / "config" / "agents.yaml").write_text(
        'agents:\n  codex:\n    command: [codex, exec, -c, NOT_LOGGED_IN=1, --, "{prompt}"]\n')
    slack = SlackEmulator()
    await slack.start()
    try:
        code, out = await run_da("doctor", "--agents", cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_URL=server.url,
                                 MACHINE_NAME="box", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                                 SLACK_BOT_TOKEN=slack.bot_token, SLACK_APP_TOKEN="xapp-wrong",
                                 SLACK_API_URL=slack.api_url)
    finally:
        await slack.stop()
    assert code == 1
    assert "ok   agent claude answers: answered in" in out
    assert "FAIL agent codex answers: codex is not logged in on this machine" in out
    assert "ok   Slack bot token: valid" in out and "FAIL Slack app token: invalid_auth" in out


async def test_prune_logs_cleanly_at_info(client: QueueClient, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO)
    task = await client.create_task("lint", {"cwd": "/x"})
    await client.cancel(task.id)
    assert await client.prune(0) == 1
    assert "pruned 1 finished task(s) older than 0 s" in caplog.text


async def test_up_on_a_busy_port_exits_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = await run_da("up", f"--port={port}", cwd=tmp_path, SECRET_KEY=SECRET, LOG_LEVEL="WARNING",
                                 QUEUE_DB_PATH=str(tmp_path / "q.db"), DA_CONFIG_DIR=str(tmp_path))
    assert code == 1
    assert out.strip().splitlines()[-1].startswith(f"da: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in out


@pytest.mark.parametrize(("configured", "used"), [(None, "full"), ("normal", "normal")])
async def test_up_says_how_durable_its_sqlite_commits_are(tmp_path: Path, configured: str | None, used: str) -> None:
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": SECRET, "QUEUE_DB_PATH": str(tmp_path / "q.db"),
           "DA_CONFIG_DIR": str(tmp_path), **({"QUEUE_SYNC": configured} if configured else {})}
    line = await up_start_line(tmp_path, env)
    assert f"(database {tmp_path / 'q.db'}, QUEUE_SYNC={used})" in line


@pytest.mark.parametrize("verb", [("queue",), ("prune",), ("doctor",)])
async def test_a_bad_queue_url_is_one_line(tmp_path: Path, verb: tuple[str, ...]) -> None:
    code, out = await run_da(*verb, cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_URL="http://127.0.0.1:99999")
    assert "QUEUE_URL entry 'http://127.0.0.1:99999' has an invalid port; use a number from 1 to 65535" in out
    assert "Traceback" not in out
    if verb == ("doctor",):
        assert code == 1 and "FAIL queue: QUEUE_URL entry" in out
    else:
        assert code == 2 and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("verb", [("backup", "copy.db"), ("restore", "copy.db")])
async def test_backup_and_restore_name_a_bad_setting_in_one_line(tmp_path: Path, verb: tuple[str, ...]) -> None:
    code, out = await run_da(*verb, cwd=tmp_path, QUEUE_PORT="eighty")
    assert code == 2
    assert out.strip() == "da: QUEUE_PORT='eighty' is not a whole number; set it to e.g. 8000."


async def test_prune_exit_statuses(tmp_path: Path) -> None:
    code, out = await run_da("prune", "--older-than=soon", cwd=tmp_path, SECRET_KEY=SECRET)
    assert code == 2 and "is not a duration" in out
    code, out = await run_da("prune", cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_URL=f"http://127.0.0.1:{free_port()}")
    assert code == 1 and out.startswith("da: queue unreachable at")


async def test_service_without_da_on_path_writes_each_launchd_argument_apart(tmp_path: Path) -> None:
    import plistlib

    code, out = await run_da("service", "install", "queue", "--print", "--os=macos", cwd=tmp_path,
                             PATH="/usr/bin:/bin", HOME=str(tmp_path))
    assert code == 0, out
    plist = plistlib.loads(out.split("# would be written")[0].encode())
    assert plist["ProgramArguments"] == [sys.executable, "-m", "da.cli", "serve"]
    code, out = await run_da("service", "install", "worker", "--print", "--os=linux", cwd=tmp_path,
                             PATH="/usr/bin:/bin", HOME=str(tmp_path))
    assert f"ExecStart={sys.executable} -m da.cli worker" in out


async def test_backup_and_restore_on_postgres_print_the_command_that_does_it(tmp_path: Path) -> None:
    plain = "postgresql://da@db.internal:5432/da"
    code, out = await run_da("backup", "da.dump", cwd=tmp_path, QUEUE_DB_URL=plain)
    assert code == 1 and "runs on PostgreSQL" in out
    assert f"pg_dump --format=custom --file=da.dump --dbname={plain}" in out
    code, out = await run_da("restore", "da.dump", cwd=tmp_path, QUEUE_DB_URL="postgresql://da:s3cret@db/da")
    assert code == 1 and 'pg_restore --clean --if-exists --single-transaction "--dbname=${QUEUE_DB_URL}"' in out
    assert "s3cret" not in out and not (tmp_path / "data").exists()


async def test_a_database_url_that_is_not_postgresql_stops_serve_with_one_line(tmp_path: Path) -> None:
    code, out = await run_da("serve", cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_DB_URL="mysql://root:pw@db/da")
    assert code == 2
    assert out.strip() == ("da: QUEUE_DB_URL='mysql://root:***@db/da' is not a PostgreSQL URL; use the form "
                           "postgresql://user:password@host:5432/dbname, or for a primary with standbys "
                           "postgresql://user:password@host1:5432,host2:5432/dbname (or unset it to use the SQLite "
                           "file).")


async def test_doctor_checks_the_database_url(postgres_cluster, tmp_path: Path) -> None:
    url = await postgres_cluster.create_database()
    try:
        code, out = await run_da("doctor", cwd=tmp_path, QUEUE_DB_URL=url, QUEUE_URL="http://127.0.0.1:9")
        latest = pgdatabase.STATEMENTS.latest()
        assert f"ok   database: {url} answers: PostgreSQL " in out and f", schema {latest}" in out
        closed = url.replace(f":{postgres_cluster.port}/", f":{free_port()}/")
        code, out = await run_da("doctor", cwd=tmp_path, QUEUE_DB_URL=closed, QUEUE_URL="http://127.0.0.1:9")
        assert code == 1 and "FAIL database: the queue database at" in out and "is not answering" in out
        assert "applied" not in out  # doctor only reads: no word of a change that may have happened
        assert "fix: start PostgreSQL there, create the database (createdb), or fix QUEUE_DB_URL" in out
    finally:
        await postgres_cluster.drop_database(url)


async def test_serve_on_postgres_leaves_the_sqlite_path_alone(postgres_cluster, tmp_path: Path) -> None:
    from tests.support.processes import start_serve

    url = await postgres_cluster.create_database()
    process, queue_url, _ = start_serve(tmp_path, SECRET_KEY=SECRET, QUEUE_DB_URL=url, LOG_LEVEL="WARNING")
    try:
        async with QueueClient(queue_url, SECRET) as client:
            assert (await client.health())["backend"] == "postgresql"
            await client.create_task("lint", {"cwd": "/x"})
        assert not (tmp_path / "q.db").exists()
    finally:
        process.terminate()
        process.wait(10)
        await postgres_cluster.drop_database(url)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://da:pw@db:5432/da", "postgresql://da:***@db:5432/da"),
    ("postgresql://da@db/da?password=pw&sslmode=require", "postgresql://da@db/da?password=***&sslmode=require"),
    ("postgresql://da@db/da", "postgresql://da@db/da"),
])
def test_database_urls_are_logged_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_restore_and_migrate_answer_in_one_line_on_an_ipv6_listen_address(tmp_path: Path) -> None:
    env = {"QUEUE_HOST": "::", "QUEUE_PORT": str(free_port()),
           "QUEUE_DB_PATH": str(tmp_path / "queue.db")}
    for args in (("restore", str(tmp_path / "missing.db")), ("migrate", "--to", "postgresql://da@127.0.0.1:1/da")):
        code, out = await run_da(*args, cwd=tmp_path, **env)
        assert code != 0 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
