"""Whatever a handler returns reaches the queue: made JSON-safe, cut to fit, or reported failed with why.

Real drop-in handlers (DA_HANDLERS_PATH) run in a real `da worker` against the real queue.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from da.handlers.api import Result
from da.queue import app as queue_app
from da.queue.client import QueueClient
from da.queue.settings import QueueSettings
from da.worker import report
from da.worker.redact import Redactor
from tests.support.server import SECRET, QueueServer
from tests.support.workers import WorkerProcess, run_task

ODD_HANDLER = '''
import datetime
import math
import pathlib

# The name handlers imported before da.handlers.api: a handler written then still loads.
from da.worker.models import Result

SAFE_TO_RETRY = False


def nested(depth):
    value = "bottom"
    for _ in range(depth):
        value = [value]
    return value


async def run(ctx, payload):
    kind = payload["kind"]
    if kind == "floats":
        return Result("done", "measured", "", {"ratio": math.nan, "limits": [math.inf, -math.inf, 1.5], "count": 3})
    if kind == "objects":
        loop = {"name": "loop"}
        loop["self"] = loop
        return Result("done", "odd values", "", {
            "raw": b"caf\\xc3\\xa9 \\xff", "path": pathlib.Path("/srv/app"), "tags": {"a"}, "pair": (1, 2),
            3: "int key", "name": "bad\\udcff byte", "big": 2 ** 80,
            "when": datetime.datetime(2024, 5, 1, 12, 0), "loop": loop})
    if kind == "deep":
        return Result("done", "deep", "", {"tree": nested(5000)})
    if kind == "status":
        return Result(payload["status"], "all good", "nothing to do")
    if kind == "huge":
        blob = "HEAD" + "x" * payload["size"] + "TAIL"
        return Result("done", "n" * 10000, "a" * 5000, {"blob": blob, "small": "keep me"})
    if kind == "refused":
        return Result("done", "shipped", "", {"refuse_me": True})
    if kind == "many":
        return Result("done", "counted", "", {f"key{i}": i for i in range(payload["keys"])})
    raise ValueError(kind)
'''


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    folder = tmp_path / "my_handlers"
    folder.mkdir()
    (folder / "odd.py").write_text(ODD_HANDLER)
    return folder


@pytest.fixture
async def worker(server: QueueServer, tmp_path: Path, handlers: Path, make_worker) -> WorkerProcess:
    return make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(handlers), WORKER_CAPABILITIES="odd")


async def test_values_json_cannot_hold_are_converted_and_noted(worker: WorkerProcess, client: QueueClient) -> None:
    floats = await run_task(client, "odd", {"kind": "floats"})
    assert floats.status == "done", (floats.notes, worker.log)
    assert floats.result["ratio"] is None and floats.result["limits"] == [None, None, 1.5]
    assert floats.result["count"] == 3
    assert any("ratio" in note and "NaN" in note for note in floats.result["delivery_notes"])

    odd = await run_task(client, "odd", {"kind": "objects"})
    assert odd.status == "done", (odd.notes, worker.log)
    assert odd.result["raw"] == "café \ufffd"
    assert odd.result["path"] == "/srv/app" and odd.result["tags"] == ["a"] and odd.result["pair"] == [1, 2]
    assert odd.result["3"] == "int key" and odd.result["name"] == "bad\ufffd byte"
    assert odd.result["big"] == str(2**80) and odd.result["when"] == "2024-05-01 12:00:00"
    assert odd.result["loop"]["name"] == "loop"
    notes = " | ".join(odd.result["delivery_notes"])
    for field in ("raw", "path", "tags", "big", "when", "loop"):
        assert field in notes, notes

    deep = await run_task(client, "odd", {"kind": "deep"})
    assert deep.status == "done", (deep.notes, worker.log)
    assert "nested deeper than" in json.dumps(deep.result["tree"])
    assert any("tree" in note and "deeper" in note for note in deep.result["delivery_notes"])
    assert "Traceback" not in worker.log


@pytest.mark.parametrize("status", ["finished", None, 7])
async def test_an_unknown_status_is_reported_failed_with_the_reason(worker: WorkerProcess, client: QueueClient,
                                                                    status) -> None:
    task = await run_task(client, "odd", {"kind": "status", "status": status})
    assert task.status == "failed", (task.notes, worker.log)
    assert f"handler odd returned status {status!r}" in task.notes
    assert "done, failed or needs_human" in task.notes and "all good" in task.notes
    assert task.result["action"] == "fix the handler to return done, failed or needs_human"


async def test_a_result_too_large_is_cut_keeping_head_and_tail(worker: WorkerProcess, client: QueueClient) -> None:
    task = await run_task(client, "odd", {"kind": "huge", "size": 3_000_000})
    assert task.status == "done", (task.notes, worker.log)
    blob = task.result["blob"]
    assert blob.startswith("HEAD") and blob.endswith("TAIL") and len(blob) < 1024 * 1024
    assert "characters cut" in blob
    assert task.result["small"] == "keep me"
    assert task.notes is not None
    assert len(task.notes) <= 4000 and "characters cut" in task.notes
    assert any("blob" in note and "cut" in note for note in task.result["delivery_notes"])


async def test_a_result_that_cannot_be_cut_enough_is_failed_with_why(worker: WorkerProcess,
                                                                     client: QueueClient) -> None:
    task = await run_task(client, "odd", {"kind": "many", "keys": 200_000})
    assert task.status == "failed", (task.notes, worker.log)
    assert "too large to deliver" in task.notes and "the handler reported done: counted" in task.notes
    assert task.result["handler_status"] == "done"


async def test_a_413_from_the_queue_leads_to_a_smaller_report(make_server, tmp_path: Path, handlers: Path,
                                                              make_worker) -> None:
    server = await make_server(max_body=64 * 1024)
    process = make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(handlers), WORKER_CAPABILITIES="odd")
    async with QueueClient(server.url, SECRET) as client:
        task = await run_task(client, "odd", {"kind": "huge", "size": 500_000})
    assert task.status == "done", (task.notes, process.log)
    assert task.result["blob"].startswith("HEAD") and task.result["blob"].endswith("TAIL")
    assert len(json.dumps(task.result)) < 64 * 1024
    assert "sending a smaller report" in process.log


@pytest.mark.parametrize(("budget", "status"), [(report.MIN_BUDGET, "failed"), (8192, "done"), (64 * 1024, "done")])
def test_every_budget_is_kept_whatever_the_text(budget: int, status: str) -> None:
    # Control characters take six bytes in JSON, CJK three, emoji four: cuts are estimated per string.
    details = {"ctl": "\x01" * 50_000, "cjk": "漢字" * 40_000, "emoji": ["🙂" * 5_000] * 20, "n": 1}
    result = Result("done", "ok " * 3000, "do this " * 1000, details)
    delivery = report.prepare(result, task_type="odd", lease="ab" * 16, redact=Redactor(()), budget=budget)
    assert delivery.size("ab" * 16) <= budget
    assert delivery.status == status
    if status == "done":  # else 24 strings with their cut markers cannot fit in 1 KiB: failed, saying so
        assert delivery.result["n"] == 1 and "characters cut" in delivery.result["cjk"]
    else:
        assert "too large to deliver" in delivery.notes


async def test_a_report_the_queue_refuses_is_reduced_and_sent_again(tmp_path: Path, handlers: Path,
                                                                    make_worker) -> None:
    # A queue stricter than this worker knows (a newer rule on results): the real service with
    # one more check in front of its report route.
    @web.middleware
    async def stricter(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path.endswith("/report") and "refuse_me" in (await request.json()).get("result", {}):
            return web.json_response({"error": "bad_request", "detail": "field 'result' holds 'refuse_me'."},
                                     status=400)
        return await handler(request)

    settings = QueueSettings(secret=SECRET, db_path=tmp_path / "strict.db", reap_interval=0.1,
                             config_dir=tmp_path / "config")
    app = queue_app.make_app(settings)
    app.middlewares.append(stricter)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    process = make_worker(url, tmp_path, DA_HANDLERS_PATH=str(handlers), WORKER_CAPABILITIES="odd")
    try:
        async with QueueClient(url, SECRET) as client:
            task = await run_task(client, "odd", {"kind": "refused"})
    finally:
        process.kill()
        await server.close()
    # Outputs trimmed were refused again; the status and the error alone were taken, saying why.
    assert task.status == "done" and task.notes == "shipped", (task.notes, process.log)
    assert "refuse_me" not in task.result
    assert task.result["delivery_notes"][0] == (
        "the queue refused the result: field 'result' holds 'refuse_me'.; "
        "only the status and the error are kept (the worker's log has the rest)")
    assert "refuse_me" in process.log  # the full outcome is in the worker's log
