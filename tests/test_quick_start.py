"""The README's quick start as a newcomer types it: a worker whose `.env` holds only DA_TOKEN,
MACHINE_NAME and QUEUE_URL starts, says where its capabilities came from, and `da doctor` agrees."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from da import fleet as fleet_module
from da.queue.client import QueueClient
from tests.support.processes import run_da, up_start_line
from tests.support.server import SECRET
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_status

FLEET = fleet_module.parse_fleet({"machines": {
    "vm1": {"os": "linux", "capabilities": ["lint", "run_script"], "agents": ["gemini"], "aliases": ["box"]},
}}, "queue host")


async def fresh_machine(folder: Path, url: str, token: str, machine: str) -> dict[str, str]:
    """A machine with nothing but the quick start's three lines in `.env` (no config folder)."""
    folder.mkdir()
    (folder / ".env").write_text(f"DA_TOKEN={token}\nMACHINE_NAME={machine}\nQUEUE_URL={url}\n")
    # The folder's own PATH only: no agent CLI is installed here.
    return {"PATH": os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin", "HOME": str(folder)}


async def start_worker(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = folder / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "da.cli", "worker"], cwd=folder, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)

    async def started() -> bool:
        assert process.poll() is None, log.read_text()
        return "worker " in log.read_text()

    await wait_until(started, timeout=20)
    return process, log


async def test_a_worker_with_only_three_settings_runs_what_the_queue_declares(make_server, tmp_path: Path) -> None:
    server = await make_server(fleet=FLEET)
    async with QueueClient(server.url, SECRET) as admin:
        _, token = await admin.create_token("worker", machine="vm1", aliases=["box"])
        env = await fresh_machine(tmp_path / "vm1", server.url, token, "vm1")
        process, log = await start_worker(tmp_path / "vm1", env)
        try:
            assert "worker vm1: capabilities lint,run_script, agents gemini (from the queue host's fleet file)" \
                   in log.read_text()
            task = await admin.create_task("run_script", {"script": "echo from-vm1"}, target_machine="box")
            done = await wait_for_status(admin, task.id)
            assert (done.status, done.assigned_to) == ("done", "vm1"), log.read_text()
        finally:
            process.terminate()
            process.wait()
    code, out = await run_da("doctor", cwd=tmp_path / "vm1", **env)
    assert code == 1  # gemini is missing
    assert "ok   worker: vm1 runs lint, run_script; agents gemini (from the queue host's fleet file)" in out, out
    assert "FAIL agent gemini: not on PATH" in out  # what the worker would need, named before a task fails on it
    assert "ok   worker token: claims as vm1 and box" in out
    assert "Traceback" not in out


async def test_a_machine_the_fleet_file_does_not_know_runs_what_it_detects(make_server, tmp_path: Path) -> None:
    server = await make_server(fleet=FLEET)
    async with QueueClient(server.url, SECRET) as admin:
        _, token = await admin.create_token("worker", machine="spare")
    env = await fresh_machine(tmp_path / "spare", server.url, token, "spare")
    process, log = await start_worker(tmp_path / "spare", env)
    try:
        line = next(line for line in log.read_text().splitlines() if "worker spare:" in line)
    finally:
        process.terminate()
        process.wait()
    assert "capabilities agent_run,android_build,deliver,git_pull,ios_build,lint,npm_build,run_script,test_run, " \
           "agents - (from detected on this machine: every handler, and the agent CLIs on PATH)" in line
    code, out = await run_da("doctor", cwd=tmp_path / "spare", **env)
    assert code == 0, out
    assert "ok   worker: spare runs agent_run, android_build, deliver, git_pull, ios_build, lint, npm_build, " \
           "run_script, test_run; agents none (from detected on this machine" in out


async def test_without_machine_name_the_worker_says_which_setting_is_missing(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DA_TOKEN=daw_x\nQUEUE_URL=http://127.0.0.1:9\n")
    code, out = await asyncio.wait_for(run_da("worker", cwd=tmp_path), 60)
    assert code == 2
    assert out.strip() == ("da: MACHINE_NAME is not set; set it to this machine's name in the queue host's "
                           "config/machines.yaml (the name its worker token was made for).")


async def test_doctor_tries_every_replica_and_checks_the_agents_da_up_would_run(server, tmp_path: Path) -> None:
    from tests.support.workers import fake_bin

    bin_dir = fake_bin(tmp_path / "bin")
    code, out = await run_da("doctor", cwd=tmp_path, SECRET_KEY=SECRET, QUEUE_URL=f"{server.url},http://127.0.0.1:9",
                             PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(tmp_path))
    assert code == 1, out
    assert f"ok   queue: {server.url} answers /health" in out
    assert "FAIL queue: unreachable at http://127.0.0.1:9 (ConnectError)" in out
    assert "(the worker `da up` runs here) runs agent_run, " in out and "agents claude, gemini, codex (from detected" \
           in out
    assert f"ok   agent claude: {bin_dir / 'claude'}" in out


EXAMPLE = Path(__file__).parent.parent / "config" / "env.example"


async def test_the_example_secret_is_refused_by_serve_and_up(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(EXAMPLE.read_text())
    for verb in ("serve", "up"):
        code, out = await run_da(verb, cwd=tmp_path, QUEUE_PORT="9", HOME=str(tmp_path))
        assert code == 2, out
        assert out == ("da: SECRET_KEY is still the example from config/env.example; put a real one in .env (make it "
                       "with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`).\n")
    assert not (tmp_path / "data").exists()


async def test_a_copied_env_example_leaves_up_durable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(EXAMPLE.read_text().replace("change-me-to-a-long-random-string", SECRET))
    line = await up_start_line(tmp_path, {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert "(database data/queue.db, QUEUE_SYNC=full)" in line
