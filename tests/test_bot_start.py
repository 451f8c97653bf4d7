"""`da bot` when Slack cannot be reached: one line, and a bot that ran before waits for Slack."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.processes import run_da
from tests.support.server import SECRET, QueueServer
from tests.support.slack_emulator import SlackEmulator
from tests.support.tcp_proxy import Proxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.long


def bot_env(slack_api: str, queue_url: str, home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "SLACK_BOT_TOKEN": SlackEmulator.bot_token,
            "SLACK_APP_TOKEN": SlackEmulator.app_token, "SLACK_API_URL": slack_api, "QUEUE_URL": queue_url,
            "SECRET_KEY": SECRET}


async def test_a_first_start_without_slack_is_one_line(server: QueueServer, tmp_path: Path) -> None:
    code, out = await run_da("bot", cwd=tmp_path, **bot_env("http://127.0.0.1:9/api/", server.url, tmp_path))
    assert code == 1
    # (slack_bolt's own warning about SLACK_BOT_TOKEN in the environment may come first)
    assert out.splitlines()[-1] == ("da: cannot reach Slack at http://127.0.0.1:9/api/ (Connect call failed "
                                    "('127.0.0.1', 9)); check this machine's network, or SLACK_API_URL")
    assert "retry handler" not in out and "Traceback" not in out


async def test_a_bot_that_ran_before_waits_for_slack_and_connects(server: QueueServer, tmp_path: Path) -> None:
    slack = SlackEmulator()
    await slack.start()
    assert slack.server is not None
    proxy = await Proxy("127.0.0.1", slack.server.port).start()
    await proxy.cut()  # Slack is away when the service starts (the network is not up yet)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot-state.json").write_text("{}")  # it ran here before
    log = tmp_path / "bot.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "da.cli", "bot"], cwd=tmp_path, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   env=bot_env(f"http://127.0.0.1:{proxy.port}/api/", server.url, tmp_path))
    try:
        async def said(text: str) -> bool:
            assert process.poll() is None, log.read_text()
            return text in log.read_text()

        await wait_until(lambda: said("; trying again in 2s"), timeout=30)
        assert f"\nda: cannot reach Slack at http://127.0.0.1:{proxy.port}/api/ (Connect call failed" in log.read_text()
        assert "retry handler" not in log.read_text()
        await proxy.restore()
        await wait_until(lambda: said("connected to Slack as the bot of workspace lease"), timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 20)
        await proxy.close()
        await slack.stop()
    assert "Traceback" not in log.read_text()


async def test_up_with_slack_unreachable_stops_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    env = bot_env("http://127.0.0.1:9/api/", f"http://127.0.0.1:{port}", tmp_path)
    code, out = await run_da("up", "--no-worker", f"--port={port}", cwd=tmp_path, LOG_LEVEL="WARNING", **env)
    assert code == 1, out
    assert out.splitlines()[-1] == ("da: cannot reach Slack at http://127.0.0.1:9/api/ (Connect call failed "
                                    "('127.0.0.1', 9)); check this machine's network, or SLACK_API_URL")
    assert "Traceback" not in out and "cannot listen" not in out
