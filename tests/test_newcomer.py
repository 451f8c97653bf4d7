"""The smaller traps a newcomer met in the first hour, each as it looks from the command line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from da import fleet as fleet_module
from da import handlers
from da.queue.client import QueueClient
from tests.support.processes import run_da
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da

FLEET = fleet_module.parse_fleet({"machines": {"mac-mini": {"capabilities": ["run_script"], "aliases": ["mm"]}}},
                                 "test")


async def test_a_worker_token_for_a_machine_not_in_the_fleet_file_warns(server: QueueServer, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text("machines:\n  mac-mini:\n    capabilities: [run_script]\n")
    admin = {"SECRET_KEY": SECRET, "QUEUE_URL": server.url}
    code, out = await run_da("token", "create", "worker", "mac-mnii", cwd=tmp_path, **admin)
    assert code == 0 and "\nDA_TOKEN=daw_" in out
    assert (f"da: warning: mac-mnii is not in {tmp_path / 'config' / 'machines.yaml'} (known: mac-mini); its worker "
            "will run what it detects on that machine") in out
    code, out = await run_da("token", "create", "worker", "mac-mini", cwd=tmp_path, **admin)
    assert code == 0 and "warning" not in out


async def test_help_names_da_token_and_that_up_starts_the_bot(tmp_path: Path) -> None:
    code, out = await run_da("--help", cwd=tmp_path)
    assert code == 0 and "DA_TOKEN (this machine's token from `da token create` on the queue host)" in out
    assert "up         run the queue and a local worker (the quick start), and the Slack bot when its tokens are " \
           "set" in out
    code, out = await run_da("worker", "--help", cwd=tmp_path)
    assert "DA_TOKEN (this machine's worker token" in " ".join(out.split())
    code, out = await run_da("up", "--help", cwd=tmp_path)
    assert "and the Slack bot when SLACK_BOT_TOKEN and SLACK_APP_TOKEN are set" in " ".join(out.split())


async def test_backup_into_a_folder_and_restore_leave_only_what_they_say(server: QueueServer, client: QueueClient,
                                                                         tmp_path: Path) -> None:
    made = await client.create_task("lint", {"cwd": "/x"})
    folder = tmp_path / "backups"
    folder.mkdir()
    env = {"QUEUE_DB_PATH": str(server.settings.db_path)}
    code, out = await run_da("backup", str(folder), cwd=tmp_path, **env)
    assert code == 0, out
    [written] = list(folder.iterdir())
    assert out.strip() == f"backed up {server.settings.db_path} to {written}"
    assert written.name.startswith(server.settings.db_path.stem + "-") and written.suffix == ".db"

    fresh = tmp_path / "fresh" / "queue.db"
    code, out = await run_da("restore", str(written), cwd=tmp_path, QUEUE_DB_PATH=str(fresh), QUEUE_PORT="9")
    assert code == 0, out
    # Nothing was there before, so nothing is said to be kept; nothing grew beside the backup it read.
    assert out.strip() == f"restored {fresh} from {written}"
    assert [p.name for p in folder.iterdir()] == [written.name]
    assert not fresh.with_name("queue.db.before-restore").exists()
    with sqlite3.connect(fresh) as db:
        assert db.execute("SELECT id FROM tasks").fetchall() == [(made.id,)]
    code, out = await run_da("restore", str(written), cwd=tmp_path, QUEUE_DB_PATH=str(fresh), QUEUE_PORT="9")
    assert out.strip() == f"restored {fresh} from {written} (the previous file is kept as {fresh}.before-restore)"
    assert [p.name for p in folder.iterdir()] == [written.name]


async def test_show_of_an_agent_task_has_its_answer_and_session(server: QueueServer, client: QueueClient,
                                                                tmp_path: Path) -> None:
    task = await client.create_task("agent_run", {"prompt": "why is the sky blue"}, agent="claude")
    held = await client.claim("box", ["agent_run"], agents=["claude"])
    assert held is not None
    await client.report(task.id, held.lease, "done", {"returncode": 0, "answer": "Rayleigh scattering.",
                                                      "session_id": "5f0c2d1e-aaaa-bbbb"})
    run = await da(server.url, "show", task.short_id, cwd=tmp_path)
    assert run.code == 0
    assert "session: 5f0c2d1e-aaaa-bbbb (a follow-up can resume it)" in run.out
    assert "--- answer ---\nRayleigh scattering." in run.out


async def test_serve_says_it_is_up_only_once_the_database_answers(tmp_path: Path) -> None:
    code, out = await run_da("serve", "--port=0", cwd=tmp_path, SECRET_KEY=SECRET,
                             QUEUE_DB_URL="postgresql://da@127.0.0.1:9/da", LOG_LEVEL="INFO")
    assert code == 1
    assert "queue on" not in out and "cannot open the queue database postgresql://da@127.0.0.1:9/da" in out


async def test_a_sentence_is_not_sent_to_a_shell_without_asking(make_server, tmp_path: Path) -> None:
    vm = fleet_module.parse_fleet({"machines": {"vm": {"capabilities": sorted(handlers.folder_fields())}}}, "t")
    server = await make_server(fleet=vm)
    scripted = await da(server.url, "assign", "fix the login page so users can sign in", "--yes", cwd=tmp_path)
    assert scripted.code == 2
    assert "assign asks before it changes anything and there is no terminal to ask on; add --type=run_script to " \
           "run it in a shell as typed." in scripted.out
    declined = await da(server.url, "assign", "fix the login page so users can sign in", "--yes", stdin="\n",
                        tty=True, cwd=tmp_path)
    assert "this reads as a sentence, not a command, and would run in a shell as typed" in declined.out
    assert "Confirm? [y/N]" in declined.out and "cancelled; nothing queued." in declined.out
    async with QueueClient(server.url, SECRET) as client:
        assert (await client.list_tasks())[0] == []
    command = await da(server.url, "assign", "uname -a", "--yes", cwd=tmp_path)
    assert command.code == 0 and "run_script on →vm" in command.out


async def test_prune_asks_before_removing_tasks_that_may_want_a_person(server: QueueServer, client: QueueClient,
                                                                       tmp_path: Path) -> None:
    for status in ("done", "needs_human", "failed"):
        task = await client.create_task("lint", {"cwd": "/x"})
        held = await client.claim("box", ["lint"])
        assert held is not None and held.task.id == task.id
        await client.report(task.id, held.lease, status, {"returncode": 0 if status == "done" else 1})
    scripted = await da(server.url, "prune", "--older-than=0", cwd=tmp_path, DA_LOG_DIR=str(tmp_path / "logs"))
    assert scripted.code == 2
    assert scripted.err.strip() == ("da: 1 needs_human and 1 failed task(s) older than 0 would be removed too, and may "
                                    "still want a person; nothing removed. Resolve them first, or add --include-open "
                                    "to remove them as well.")
    declined = await da(server.url, "prune", "--older-than=0", stdin="\n", tty=True, cwd=tmp_path,
                        DA_LOG_DIR=str(tmp_path / "logs"))
    assert declined.code == 2 and "Remove them? [y/N]" in declined.out and "nothing removed." in declined.out
    assert len((await client.list_tasks())[0]) == 3
    included = await da(server.url, "prune", "--older-than=0", "--include-open", cwd=tmp_path,
                        DA_LOG_DIR=str(tmp_path / "logs"))
    assert included.code == 0 and "removed 3 finished task(s) older than 0" in included.out
    assert (await client.list_tasks())[0] == []


async def test_a_refused_worker_names_its_credential_and_stops_after_a_while(server: QueueServer,
                                                                             client: QueueClient,
                                                                             tmp_path: Path) -> None:
    from tests.support.waiting import wait_until
    from tests.support.workers import WorkerProcess

    token, secret = await client.create_token("worker", machine="test-box")
    worker = WorkerProcess(server.url, tmp_path, SECRET_KEY="", DA_TOKEN=secret, WORKER_POLL_WAIT="1",
                           WORKER_GIVE_UP_AFTER="3").start()
    try:
        async def online() -> bool:
            return any(m["name"] == "test-box" and m["online"] for m in await client.machines())

        await wait_until(online, timeout=20)
        await client.revoke_token(token.id)
        # Out of the roster at once, not after the online window.
        assert not await online()
        assert await worker.wait_exit(timeout=30) == 1
    finally:
        worker.kill()
    refused = [line for line in worker.log.splitlines() if "refused this worker's credential" in line]
    assert "claim refused: the queue refused this worker's credential, DA_TOKEN in the environment (" in refused[0]
    assert "make a new token on the queue host with `da token create worker test-box`, put it in this machine's " \
           ".env as DA_TOKEN and restart the worker" in refused[0]
    assert "stopping: refused for 3s: the queue refused this worker's credential" in refused[-1]
    assert not await online()


def test_the_readme_walks_a_newcomer_through_postgres_and_slack_ids() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for createdb in [i for i in range(len(readme)) if readme.startswith("createdb -O da", i)]:
        # The role a database is created for exists first.
        assert "createuser --pwprompt da" in readme[max(0, createdb - 300):createdb]
    assert "*Copy member ID*" in readme and "bottom of the channel's details" in readme
    assert "the bot must be a member to see replies: `/invite @da` there" in readme


async def test_on_the_queue_host_da_finds_the_queue_on_its_own_port(server: QueueServer, tmp_path: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    (tmp_path / ".env").write_text(f"SECRET_KEY={SECRET}\nQUEUE_HOST=0.0.0.0\nQUEUE_PORT={port}\n")
    code, out = await run_da("token", "list", cwd=tmp_path)
    assert code == 0 and out.startswith("no tokens"), out
    code, out = await run_da("queue", cwd=tmp_path)
    assert code == 0 and out.strip() == "No tasks.", out
