"""An agent task runs supervised end to end: the real queue, a real `da worker` process, and the fake ACP
agent (tests/fakes/fake_acp_agent.py, the real protocol) on PATH as `claude-agent-acp`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from da import doctor, fleet
from da.queue.client import QueueClient
from da.worker import orphans, settings
from tests.support.server import QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, run_task, wait_for_status

FAKE_AGENT = Path(__file__).parent / "fakes" / "fake_acp_agent.py"


class Adapter:
    """The fake adapter's folder (put first on the worker's PATH) and what it heard."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "acp-bin"
        self.bin.mkdir()
        (self.bin / "claude-agent-acp").symlink_to(FAKE_AGENT)
        self.state = tmp_path / "acp-state"
        self.state.mkdir()
        # The fake runs under `env python3`: the test's interpreter, which has the acp package.
        self.path = os.pathsep.join([str(self.bin), str(Path(sys.executable).parent), os.environ["PATH"]])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        log = self.state / "events.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return [event for event in map(json.loads, lines) if kind is None or event["event"] == kind]


@pytest.fixture
def adapter(tmp_path: Path) -> Adapter:
    return Adapter(tmp_path)


@pytest.fixture
async def worker(server: QueueServer, tmp_path: Path, make_worker, adapter: Adapter) -> WorkerProcess:
    bin_dir = tmp_path / "bin"
    return make_worker(server.url, tmp_path, PATH=os.pathsep.join([str(bin_dir), adapter.path]),
                       FAKE_ACP_STATE=str(adapter.state), WORKER_LEASE="6")


async def open_ask(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The task's first open ask as `GET /v1/tasks/{id}` shows it, once the task is `waiting` on it."""
    async def asked() -> dict[str, Any] | None:
        task = (await http.get(f"/v1/tasks/{task_id}")).json()
        asks = [ask for ask in task.get("asks") or [] if ask["status"] == "open"]
        return asks[0] if asks and task["status"] == "waiting" else None

    return await wait_until(asked, timeout=20)


@pytest.mark.parametrize(("option", "heard"), [("allow", "permission 1: allow"), ("reject", "permission 1: reject")])
async def test_an_ask_is_answered_through_the_http_api(worker, client: QueueClient, http: httpx.AsyncClient,
                                                        adapter: Adapter, tmp_path: Path, option: str,
                                                        heard: str) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "EXECUTE the tests",
                                                  "cwd": str(tmp_path)})
    ask = await open_ask(http, task.id)
    assert ask["kind"] == "permission" and "make test" in ask["detail"]
    answered = await http.post(f"/v1/tasks/{task.id}/asks/{ask['id']}", json={"option": option, "by": "ana"})
    assert answered.status_code == 200, answered.text
    done = await wait_for_status(client, task.id)
    assert done.status == "done", done.notes
    assert heard in done.result["answer"] and done.result["supervised"] is True
    assert [event["outcome"] for event in adapter.events("permission")] == [option]


async def test_progress_is_visible_while_the_agent_runs_and_usage_is_in_the_result(
        worker, client: QueueClient, http: httpx.AsyncClient, tmp_path: Path) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "PLAN TOOLS SLOW",
                                                  "cwd": str(tmp_path)})

    async def working() -> dict[str, Any] | None:
        body = (await http.get(f"/v1/tasks/{task.id}/progress")).json()
        record = body.get("progress_record") or {}
        return record if record.get("plan") and "line 3" in json.dumps(record) else None

    record = await wait_until(working, timeout=20)
    assert [entry["content"] for entry in record["plan"]] == ["Read the code", "Change it"]
    assert (await client.get_task(task.id)).status == "in_progress"
    await client.cancel(task.id, by="tester")
    await wait_for_status(client, task.id)


async def test_usage_is_summed_into_the_result(worker, client: QueueClient, tmp_path: Path) -> None:
    done = await run_task(client, "agent_run", {"agent": "claude", "prompt": "say hello", "cwd": str(tmp_path)})
    assert done.status == "done", done.notes
    assert done.result["usage"] == {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25}
    assert "Done: say hello (turn 1)" in done.result["answer"]


async def test_a_steering_message_is_the_next_prompt_at_the_turn_boundary(
        worker, client: QueueClient, http: httpx.AsyncClient, adapter: Adapter, tmp_path: Path) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "EXECUTE first", "cwd": str(tmp_path)})
    ask = await open_ask(http, task.id)
    await client.send_message(task.id, "also add a test", by="ana")
    await wait_until(lambda: f"task {task.id[:8]}: 1 steering message(s) handed" in worker.log, timeout=20)
    assert len(adapter.events("prompt")) == 1
    await client.answer_ask(task.id, ask["id"], "allow", by="ana")
    done = await wait_for_status(client, task.id)
    assert [event["text"] for event in adapter.events("prompt")] == ["EXECUTE first", "also add a test"]
    assert done.status == "done", done.notes
    assert "Done: also add a test (turn 2)" in done.result["answer"]


async def test_a_steering_message_in_the_sessions_first_moments_is_not_held_back(
        server: QueueServer, make_worker, client: QueueClient, http: httpx.AsyncClient, adapter: Adapter,
        tmp_path: Path) -> None:
    # With a 60 s lease each heartbeat is held 20 s. In a repository the worktree is made before the
    # session starts, so the run's first beat leaves asking for no messages; without a fresh beat once
    # the session starts, the message would wait those 20 s.
    repo = tmp_path / "repo"
    repo.mkdir()
    for argv in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "--allow-empty",
                                  "-m", "start"]):
        subprocess.run(["git", "-C", str(repo), *argv], check=True)
    worker = make_worker(server.url, tmp_path, PATH=adapter.path, FAKE_ACP_STATE=str(adapter.state),
                         WORKER_LEASE="60", DA_WORKSPACES=str(tmp_path / "workspaces"))
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "EXECUTE first", "cwd": str(repo)})
    ask = await open_ask(http, task.id)
    await client.send_message(task.id, "also add a test", by="ana")
    await wait_until(lambda: f"task {task.id[:8]}: 1 steering message(s) handed" in worker.log, timeout=10)
    await client.answer_ask(task.id, ask["id"], "allow", by="ana")
    done = await wait_for_status(client, task.id)
    assert [event["text"] for event in adapter.events("prompt")] == ["EXECUTE first", "also add a test"]
    assert done.status == "done", done.notes
    assert done.result["workspace"]["branch"].startswith("da/")


async def test_a_cancel_reaches_the_agent_as_session_cancel_before_any_signal(worker, client: QueueClient,
                                                                             adapter: Adapter, tmp_path: Path) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "SLOW work", "cwd": str(tmp_path)})
    await wait_until(lambda: bool(adapter.events("prompt")) or None, timeout=20)
    book = orphans.ProcessBook.of(tmp_path / "logs", "test-box").folder
    adapter_pid = adapter.events("prompt")[0]["pid"]
    assert json.loads((book / f"{adapter_pid}.json").read_text())["task"] == task.id
    await client.cancel(task.id, by="tester")
    await wait_until(lambda: bool(adapter.events("cancel")) or None, timeout=10)
    assert (await wait_for_status(client, task.id)).status == "cancelled"
    kinds = [event["event"] for event in adapter.events()]
    assert "sigterm" not in kinds[:kinds.index("cancel") + 1]
    await wait_until(lambda: f"stopped {task.id[:8]} agent_run: cancelled in the queue" in worker.log, timeout=20)
    assert "Traceback" not in worker.log
    assert not (book / f"{adapter_pid}.json").exists()


async def test_a_budget_stop_is_needs_human_saying_so(worker, client: QueueClient, tmp_path: Path) -> None:
    done = await run_task(client, "agent_run", {"agent": "claude", "prompt": "BUDGET", "cwd": str(tmp_path),
                                                "budget": 0.5})
    assert done.status == "needs_human", done.notes
    assert "budget of $0.50" in (done.notes or "")
    assert "raise the task's budget" in done.result["action"]
    assert done.result["usage"]["cost_usd"] >= 0.5


async def test_a_follow_up_loads_the_session_in_a_new_adapter_process(worker, client: QueueClient,
                                                                     adapter: Adapter, tmp_path: Path) -> None:
    first = await run_task(client, "agent_run", {"agent": "claude", "prompt": "start", "cwd": str(tmp_path)})
    assert first.status == "done", first.notes
    session = first.result["session_id"]
    follow = await run_task(client, "agent_run", {"agent": "claude", "prompt": "go on", "cwd": str(tmp_path),
                                                  "resume": session})
    assert follow.status == "done", follow.notes
    assert follow.result["session_id"] == session
    new, = adapter.events("new")
    load, = adapter.events("load")
    assert load["session"] == session and load["pid"] != new["pid"]
    assert "Done: go on (turn 2)" in follow.result["answer"]


async def test_an_agent_without_an_adapter_still_runs_headless_and_says_so(worker, client: QueueClient,
                                                                          tmp_path: Path) -> None:
    done = await run_task(client, "agent_run", {"agent": "codex", "prompt": "hello", "cwd": str(tmp_path)})
    assert done.status == "done", done.notes
    assert done.result["supervised"] is False
    assert "@zed-industries/codex-acp" in done.result["supervision_notes"][0]


async def test_bad_supervision_fields_are_one_sentence(worker, client: QueueClient, tmp_path: Path) -> None:
    done = await run_task(client, "agent_run", {"agent": "claude", "prompt": "hi", "budget": "lots"})
    assert done.status == "needs_human"
    assert done.notes == "payload field 'budget' must be a positive number of US dollars"


def test_machines_yaml_names_adapters_and_a_policy(tmp_path: Path) -> None:
    parsed = fleet.parse_fleet({"machines": {"box": {
        "capabilities": ["agent_run"], "agents": {"claude": {"acp": "claude-agent-acp --debug"}, "codex": None},
        "policy": {"allow": ["read"], "refuse": ["delete"]}}}}, "machines.yaml")
    box, = parsed.machines
    assert box.agents == ("claude", "codex") and box.acp == (("claude", "claude-agent-acp --debug"),)
    policy = settings.tool_policy(box.policy)
    assert policy.decide("read") == "allow" and policy.decide("search") == "ask"
    assert policy.decide("delete") == "refuse" and policy.decide("execute") == "ask"
    with pytest.raises(fleet.ConfigError, match=r"machines.box.policy must be a mapping with allow, ask and refuse"):
        fleet.parse_fleet({"machines": {"box": {"policy": {"permit": ["read"]}}}}, "machines.yaml")


async def test_doctor_says_which_agents_run_supervised_and_how_to_install_the_adapter(adapter: Adapter,
                                                                                       tmp_path: Path) -> None:
    env = {**os.environ, "PATH": adapter.path, "FAKE_ACP_STATE": str(adapter.state)}
    claude = await doctor.supervision("claude", {}, cwd=tmp_path, env=env)
    assert claude.ok and claude.detail == f"yes: {adapter.bin / 'claude-agent-acp'} (fake-acp-agent 1.0)"
    codex = await doctor.supervision("codex", {}, cwd=tmp_path, env=env)
    assert codex.ok
    assert codex.detail.startswith("no: runs headless; to supervise it, run `npm install -g @zed-industries/codex-acp`")
    broken = await doctor.supervision("claude", {"claude": "claude-agent-acp"}, cwd=tmp_path,
                                      env={**env, "FAKE_ACP_MODE": "broken_init"})
    assert not broken.ok and "does not speak ACP" in broken.detail


async def test_a_plan_task_asks_to_approve_the_plan_and_goes_on_when_approved(
        worker, client: QueueClient, http: httpx.AsyncClient, adapter: Adapter, tmp_path: Path) -> None:
    task = await client.create_task("agent_run", {"agent": "claude", "prompt": "PLANMODE parser", "plan": True,
                                                  "cwd": str(tmp_path)})
    ask = await open_ask(http, task.id)
    assert ask["kind"] == "plan" and "Write the parser" in ask["detail"]
    await client.answer_ask(task.id, ask["id"], "approve", by="ana")
    done = await wait_for_status(client, task.id)
    assert done.status == "done", done.notes
    assert adapter.events("set_mode")[0]["mode"] == "plan"
    assert "coding" in done.result["answer"]
