"""A client token may say any `by` or `created_by`; the queue records, beside it, which credential really
acted (`created_via` on a task, `via` on an event, `answered_via` on an ask, `created_via` on a message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from da.queue.client import QueueClient
from tests.support.server import SECRET, QueueServer
from tests.support.terminal import da

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def test_the_token_that_acted_is_recorded_beside_what_the_client_claims(server: QueueServer,
                                                                              tmp_path: Path) -> None:
    async with QueueClient(server.url, SECRET) as admin:
        token, secret = await admin.create_token("client", name="slack-bot")
        async with QueueClient(server.url, secret) as bot:
            made = await bot.create_task("run_script", {"script": "true"}, created_by="the-boss")
            dropped = await bot.create_task("run_script", {"script": "true"}, created_by="the-boss")
            await bot.cancel(dropped.id, by="someone-else")
            bulk = (await bot.request("POST", "/v1/tasks", json=[{"type": "lint", "created_by": "x"}],
                                      idempotent=False)).json()["tasks"]
        by_admin = await admin.create_task("run_script", {"script": "true"}, created_by="ana")
        stored = {t.id: t for t in [await admin.get_task(t) for t in (made.id, dropped.id, bulk[0]["id"], by_admin.id)]}
        detail = (await admin.request("GET", f"/v1/tasks/{dropped.id}")).json()
    via = f"client token slack-bot ({token.id})"
    assert made.created_by == "the-boss" and made.created_via == via
    assert stored[bulk[0]["id"]].created_via == via
    assert stored[by_admin.id].created_via == "admin secret"
    assert [(e["to"], e["by"], e["via"]) for e in detail["events"]] == [
        ("pending", "the-boss", via), ("cancelled", "someone-else", via)]

    shown = await da(server.url, "show", made.short_id, cwd=tmp_path)
    assert shown.code == 0, shown.err
    assert f"by the-boss (via {via})" in shown.out


async def test_a_resolve_an_answer_and_a_message_record_the_token_too(server: QueueServer) -> None:
    async with QueueClient(server.url, SECRET) as admin:
        token, secret = await admin.create_token("client", name="terminal-ana")
        failed = await admin.create_task("lint", {})
        held = await admin.claim("box", ["lint"])
        assert held is not None
        await admin.start(failed.id, held.lease)
        await admin.report(failed.id, held.lease, "failed", {"returncode": 1})
        running = await admin.create_task("agent_run", {"prompt": "hi"}, agent="claude")
        session = await admin.claim("box", ["agent_run"], agents=["claude"])
        assert session is not None
        await admin.start(running.id, session.lease)
        asked = await admin.open_ask(running.id, session.lease, "permission", "Run it?", [("allow", "Allow")])
        async with QueueClient(server.url, secret) as person:
            await person.resolve(failed.id, "done", by="not-ana", notes="fine")
            answered = await person.answer_ask(running.id, asked.id, "allow", by="not-ana")
            message = await person.send_message(running.id, "go on", by="not-ana")
        events = (await admin.request("GET", f"/v1/tasks/{failed.id}")).json()["events"]
        session_events = (await admin.request("GET", f"/v1/tasks/{running.id}")).json()["events"]
    via = f"client token terminal-ana ({token.id})"
    assert (events[-1]["to"], events[-1]["by"], events[-1]["via"]) == ("done", "not-ana", via)
    assert events[-2]["via"] is None, "a worker's report is the machine's, not a client's"
    assert (answered.answered_by, answered.answered_via) == ("not-ana", via)
    assert [(e["by"], e["via"]) for e in session_events if e["ask"] is not None][-1] == ("not-ana", via)
    assert (message.created_by, message.created_via) == ("not-ana", via)
