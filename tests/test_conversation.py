"""A task's follow-ups continue the agent's conversation: a real `da worker`, the real queue and
fake agent CLIs that keep sessions the way claude and codex do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from da.handlers import _agent_session
from da.queue.client import QueueClient
from tests.support.server import QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import WorkerProcess, run_task, wait_for_status

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MACHINE = "test-box"


@pytest.fixture
async def worker(server: QueueServer, tmp_path: Path, make_worker) -> WorkerProcess:
    return make_worker(server.url, tmp_path)


def answer_of(result: dict[str, Any] | None) -> dict[str, Any]:
    """What the fake agent says it was asked: argv, prompt, the session's earlier turns."""
    assert result is not None
    return json.loads(result["answer"])


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    """Every fake agent start and end, in order."""
    log = tmp_path / "bin" / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_claude_reports_a_session_and_a_follow_up_resumes_it(worker, client: QueueClient,
                                                                   tmp_path: Path) -> None:
    first = await run_task(client, "agent_run", {"agent": "claude", "prompt": "find the flaky test",
                                                 "cwd": str(tmp_path)})
    assert first.status == "done", first.notes
    session = first.result["session_id"]
    assert UUID.fullmatch(session)
    assert answer_of(first.result)["prompt"] == "find the flaky test" and answer_of(first.result)["history"] == []

    follow = await run_task(client, "agent_run", {"agent": "claude", "prompt": "now fix it", "cwd": str(tmp_path),
                                                  "resume": session}, target_machine=MACHINE)
    assert follow.status == "done", follow.notes
    assert follow.assigned_to == first.assigned_to == MACHINE
    said = answer_of(follow.result)
    assert said["argv"] == ["-p", "--dangerously-skip-permissions", "--output-format", "json", "--resume", session,
                            "--", "now fix it"]
    assert [turn["text"] for turn in said["history"] if turn["role"] == "user"] == ["find the flaky test"]
    assert follow.result["session_id"] == session and follow.result["resumed"] == session
    assert [call["argv"] for call in calls(tmp_path) if call["event"] == "start"][-1] == said["argv"]


async def test_codex_resumes_with_exec_resume_and_answers_without_its_events(worker, client: QueueClient,
                                                                              tmp_path: Path) -> None:
    first = await run_task(client, "agent_run", {"agent": "codex", "prompt": "list the files"})
    assert first.status == "done", first.notes
    thread = first.result["session_id"]
    assert UUID.fullmatch(thread)
    assert '"thread.started"' in first.result["stdout"] and answer_of(first.result)["prompt"] == "list the files"

    follow = await run_task(client, "agent_run", {"agent": "codex", "prompt": "-- and delete the big one",
                                                  "model": "m2", "resume": thread}, target_machine=MACHINE)
    assert follow.status == "done", follow.notes
    said = answer_of(follow.result)
    assert said["argv"] == ["exec", "--full-auto", "--json", "--model", "m2", "resume", thread, "--",
                            "-- and delete the big one"]
    assert said["prompt"] == "-- and delete the big one"
    assert said["history"][0] == {"role": "user", "text": "list the files"}
    assert follow.result["session_id"] == thread


@pytest.mark.parametrize(("agent", "error"), [("claude", "API Error: 529 Overloaded"),
                                              ("codex", "stream disconnected: 529 Overloaded")])
async def test_an_error_the_agent_reports_in_json_is_the_failure_note(worker, client: QueueClient, agent: str,
                                                                      error: str) -> None:
    task = await run_task(client, "agent_run", {"agent": agent, "prompt": "OVERLOADED"})
    assert task.status == "failed"
    assert task.notes == f"{agent} exited 1: {error}"
    assert UUID.fullmatch(task.result["session_id"])


async def test_codex_progress_names_the_command_it_runs(server: QueueServer, client: QueueClient,
                                                        tmp_path: Path, make_worker) -> None:
    release = tmp_path / "release"
    make_worker(server.url, tmp_path, WORKER_LEASE="1")
    task = await client.create_task("agent_run", {"agent": "codex", "prompt": f"HOLD_UNTIL={release} go"})

    async def progress() -> str | None:
        return (await client.get_task(task.id)).progress

    assert await wait_until(progress, timeout=20) == "running bash -lc ls"
    release.touch()
    finished = await wait_for_status(client, task.id)
    assert finished.status == "done" and answer_of(finished.result)["prompt"] == f"HOLD_UNTIL={release} go"


async def test_a_session_from_another_folder_needs_a_human(worker, client: QueueClient, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    first = await run_task(client, "agent_run", {"agent": "claude", "prompt": "hello", "cwd": str(tmp_path)})
    gone = await run_task(client, "agent_run", {"agent": "claude", "prompt": "again", "cwd": str(tmp_path / "other"),
                                                "resume": first.result["session_id"]})
    assert gone.status == "needs_human"
    assert gone.notes == f"claude has no session {first.result['session_id']} on {MACHINE}"
    assert "'context'" in gone.result["action"]


async def test_gemini_follow_up_carries_the_earlier_turns_as_context(worker, client: QueueClient) -> None:
    context = [{"role": "user", "text": "why does login flake?"},
               {"role": "assistant", "text": "a race in the session cookie"},
               {"role": "user", "text": "where?"}, {"role": "assistant", "text": "auth/session.py line 40"}]
    task = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "--fix it", "context": context})
    assert task.status == "done", task.notes
    prompt = answer_of(task.result)["prompt"]
    assert prompt.endswith("The new message:\n--fix it")
    turns = re.findall(r'<turn role="(\w+)">\n(.*?)\n</turn>', prompt, re.DOTALL)
    assert turns == [(turn["role"], turn["text"]) for turn in context]
    assert prompt.index("<conversation>") < prompt.index("</conversation>") < prompt.index("--fix it")
    assert "session_id" not in task.result and "resumed" not in task.result


async def test_context_too_long_for_one_argument_keeps_the_newest_turns(worker, client: QueueClient,
                                                                       tmp_path: Path) -> None:
    context = [{"role": "user" if n % 2 == 0 else "assistant", "text": f"turn {n} " + "x" * 20_000} for n in range(8)]
    task = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "go on", "context": context})
    assert task.status == "done", task.notes
    prompt = calls(tmp_path)[-1]["argv"][-1].removeprefix("--prompt=")
    assert len(prompt.encode()) < 128 * 1024
    kept = re.findall(r'<turn role="\w+">\nturn (\d+) ', prompt)
    assert kept == ["5", "6", "7"] and "(5 earlier turns left out)" in prompt
    told = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "go on", "context": context[-2:],
                                                "context_left_out": 12})
    assert told.status == "done", told.notes
    assert "(12 earlier turns left out)" in calls(tmp_path)[-1]["argv"][-1]
    huge = await run_task(client, "agent_run", {"agent": "gemini", "prompt": "shorter please",
                                                "context": [{"role": "assistant", "text": "y" * 200_000}]})
    assert huge.status == "done", huge.notes
    prompt = calls(tmp_path)[-1]["argv"][-1].removeprefix("--prompt=")
    assert "y [...]\n</turn>" in prompt and prompt.endswith("shorter please")
    assert 60 * 1024 < len(prompt.encode()) < 128 * 1024


@pytest.mark.parametrize(("payload", "notes"), [
    ({"agent": "claude", "resume": "-rf"},
     "payload field 'resume' must be the session_id of an earlier result (letters, digits, '-', '_', '.', ':')"),
    ({"agent": "codex", "resume": 42},
     "payload field 'resume' must be the session_id of an earlier result (letters, digits, '-', '_', '.', ':')"),
    ({"agent": "gemini", "resume": "8f1c2a"}, "agent gemini cannot resume a session"),
    ({"agent": "gemini", "context": "we talked before"},
     "payload field 'context' must be a list of at most 500 turns like {\"role\": \"user\", \"text\": \"...\"}"),
    ({"agent": "gemini", "context": [{"role": "user", "text": "a"}, {"role": "system", "text": "b"}]},
     "payload field 'context' turn 2 must be {\"role\": \"user\" or \"assistant\", \"text\": a string}"),
    ({"agent": "gemini", "context": [{"role": "assistant", "text": None}]},
     "payload field 'context' turn 1 must be {\"role\": \"user\" or \"assistant\", \"text\": a string}"),
    ({"agent": "claude", "resume": "8f1c2a", "context": [{"role": "user", "text": "a"}]},
     "payload fields 'resume' and 'context' cannot be used together"),
])
async def test_bad_resume_or_context_needs_a_human_in_one_sentence(worker, client: QueueClient, tmp_path: Path,
                                                                   payload: dict[str, Any], notes: str) -> None:
    task = await run_task(client, "agent_run", {"prompt": "go on", **payload})
    assert task.status == "needs_human"
    assert task.notes == notes
    assert task.result["action"]
    assert not any(call["event"] == "start" for call in calls(tmp_path))


async def test_a_forked_session_is_followed_to_its_newest_turn(server: QueueServer, client: QueueClient,
                                                               tmp_path: Path, make_worker) -> None:
    make_worker(server.url, tmp_path, FAKE_CLAUDE_FORK="1")
    first = await run_task(client, "agent_run", {"agent": "claude", "prompt": "one"})
    second = await run_task(client, "agent_run", {"agent": "claude", "prompt": "two",
                                                  "resume": first.result["session_id"]})
    # Queued as a quick second reply would be: naming the session the thread knew of.
    third = await run_task(client, "agent_run", {"agent": "claude", "prompt": "three",
                                                 "resume": first.result["session_id"]})
    assert second.status == third.status == "done", (second.notes, third.notes)
    assert second.result["session_id"] != first.result["session_id"]
    assert third.result["resumed"] == second.result["session_id"]
    assert "--resume" in answer_of(third.result)["argv"]
    assert [t["text"] for t in answer_of(third.result)["history"] if t["role"] == "user"] == ["one", "two"]


async def test_follow_ups_sharing_a_lock_run_one_after_the_other(worker, client: QueueClient, tmp_path: Path) -> None:
    first = await run_task(client, "agent_run", {"agent": "claude", "prompt": "start"})
    session, lock = first.result["session_id"], "slack-thread:1712345678.000100"
    release = tmp_path / "release"
    a = await client.create_task("agent_run", {"agent": "claude", "prompt": f"HOLD_UNTIL={release} step A",
                                               "resume": session}, target_machine=MACHINE, lock=lock)

    async def a_running() -> bool:
        return any(c["event"] == "start" and "step A" in c["argv"][-1] for c in calls(tmp_path))

    await wait_until(a_running, timeout=20)
    b = await client.create_task("agent_run", {"agent": "claude", "prompt": "step B", "resume": session},
                                 target_machine=MACHINE, lock=lock)
    # Created after B with the same priority: the worker's free slot takes it only by passing B over.
    witness = await client.create_task("agent_run", {"agent": "gemini", "prompt": "unrelated"})
    assert (await wait_for_status(client, witness.id)).status == "done"
    assert (await client.get_task(b.id)).status == "pending"
    assert not any("step B" in c["argv"][-1] for c in calls(tmp_path))

    release.touch()
    done_a, done_b = await wait_for_status(client, a.id), await wait_for_status(client, b.id)
    assert done_a.status == done_b.status == "done", (done_a.notes, done_b.notes)
    order = [(c["event"], c["argv"][-1].split()[-1]) for c in calls(tmp_path) if "step" in c["argv"][-1]]
    assert order == [("start", "A"), ("end", "A"), ("start", "B"), ("end", "B")]
    assert done_b.started_at is not None and done_a.finished_at is not None
    assert done_b.started_at >= done_a.finished_at
    assert [t["text"].split()[-1] for t in answer_of(done_b.result)["history"] if t["role"] == "user"] == ["start", "A"]


async def test_agents_yaml_resume_form_is_checked_and_an_override_without_one_cannot_resume(
        server: QueueServer, client: QueueClient, tmp_path: Path, make_worker) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "agents.yaml").write_text('agents:\n  claude:\n    command: [claude, -p, --, "{prompt}"]\n'
                                        '    resume: [--resume]\n')
    bad = WorkerProcess(server.url, tmp_path)
    bad.start()
    assert await bad.wait_exit() == 2
    assert ('agents.claude.resume must be a list of strings with one "{session}" element, like '
            '[--resume, "{session}"].') in bad.log
    (config / "agents.yaml").write_text('agents:\n  codex:\n    command: [codex, exec, --, "{prompt}"]\n')
    make_worker(server.url, tmp_path)
    plain = await run_task(client, "agent_run", {"agent": "codex", "prompt": "hi"})
    refused = await run_task(client, "agent_run", {"agent": "codex", "prompt": "again", "resume": "5e0c-77"})
    assert plain.status == "done" and "session_id" not in plain.result
    assert answer_of(plain.result)["argv"] == ["exec", "--", "hi"]
    assert refused.status == "needs_human" and refused.notes == "agent codex cannot resume a session"


def test_a_reply_is_read_from_stdout_when_its_lines_were_not_watched() -> None:
    claude = _agent_session.ReplyReader().finish(
        '{"type": "result", "subtype": "success", "is_error": false, "result": "hi", "session_id": "s-1"}\n')
    assert (claude.answer, claude.session_id, claude.error) == ("hi", "s-1", "")
    codex = _agent_session.ReplyReader().finish(
        '{"type": "thread.started", "thread_id": "t-1"}\n'
        '{"type": "item.completed", "item": {"type": "agent_message", "text": "ok"}}\n')
    assert (codex.answer, codex.session_id) == ("ok", "t-1")
    plain = _agent_session.ReplyReader().finish("Loaded cached credentials.\nAll good.\n")
    assert (plain.answer, plain.session_id) == ("All good.", None)
