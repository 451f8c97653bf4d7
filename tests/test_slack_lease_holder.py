"""The Slack bot's workspace lease holder carries at least 128 secret bits, so a client token cannot guess it
and release the lease to take the workspace over (issue 24, processes and privileges)."""

from __future__ import annotations

from pathlib import Path

from da.bot.slack.app import BotProcess
from tests.support.server import QueueServer
from tests.support.slack import bot_settings
from tests.support.slack_emulator import SlackEmulator


async def test_the_lease_holder_has_128_secret_bits(slack: SlackEmulator, queue: QueueServer, tmp_path: Path) -> None:
    holders = [BotProcess(bot_settings(slack, queue.url, tmp_path / f"state{n}.json")).holder for n in range(2)]
    secrets = [holder.rsplit(":", 1)[1] for holder in holders]
    assert all(len(secret) >= 32 and int(secret, 16) >= 0 for secret in secrets), holders
    assert secrets[0] != secrets[1] and all(len(holder) <= 100 for holder in holders)
