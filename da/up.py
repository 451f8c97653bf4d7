"""`da up`'s composition: the queue service, a local worker and (with Slack tokens) the bot, in one process.

`da.cli` parses the command line and the settings; this module only runs the parts together and
takes them down in order: the worker drains first, then the bot leaves Slack, then the queue
closes (which ends every parked long-poll at once) and its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from typing import Any

import aiohttp

from da.fleet import Fleet
from da.queue import app as queue_app
from da.queue import connections
from da.queue.settings import QueueSettings

# A bot that ran before tries Slack again after these pauses, doubling (a laptop waking, a router restarting).
SLACK_RETRY_FIRST = 2.0
SLACK_RETRY_MAX = 300.0
# What failing to reach Slack raises: aiohttp's errors (a refused connection, a failed name lookup, a
# websocket handshake) and the socket's own; not every OSError (a state file it cannot write is no outage).
SLACK_NETWORK_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError, socket.gaierror)


class SlackUnreachable(Exception):
    """`da up` could not reach Slack to start its bot; the message is the one line to show."""


def slack_unreachable(exc: BaseException, api_url: str) -> str:
    """One line for a network failure on the way to Slack."""
    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientError) and not isinstance(exc, OSError):
        why = type(exc).__name__
    return f"cannot reach Slack at {api_url} ({why}); check this machine's network, or SLACK_API_URL"


async def run(queue_settings: QueueSettings, roster: Fleet, sockets: list[Any], *, worker_parts: Any = None,
              bot_settings: Any = None) -> None:
    """Serve until SIGINT or SIGTERM (the worker's handlers when it runs, else our own)."""
    from da.worker import worker as worker_module

    runner = connections.make_runner(queue_app.make_app(queue_settings, roster))
    await runner.setup()
    slack: asyncio.Task[None] | None = None
    # Whatever fails from here on (Slack refusing a token), the store and its threads are
    # closed, so the process exits instead of hanging on them.
    try:
        for sock in sockets:
            await connections.GuardedSite(runner, sock).start()
        sync = "" if queue_settings.db_url else f", QUEUE_SYNC={queue_settings.sync}"
        print(f"da: queue on http://{queue_settings.host}:{queue_settings.port} "
              f"(database {queue_settings.database}{sync}); Ctrl-C stops", file=sys.stderr)
        if bot_settings is not None:
            slack = await start_bot(bot_settings)
        if worker_parts is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        else:
            instance = worker_module.Worker(*worker_parts)
            worker_module.install_signal_handlers(instance)
            await instance.async_run()
    finally:
        if slack is not None:
            slack.cancel()
            # Its failure, if any, was raised in start_bot; here it must not skip closing the store.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slack
        await runner.cleanup()


async def start_bot(bot_settings: Any) -> asyncio.Task[None]:
    """The bot, once connected or standing by; a refused token or an unreachable Slack raises its one line."""
    from da.bot.slack.app import BotProcess

    bot_process, ready = BotProcess(bot_settings), asyncio.Event()
    slack = asyncio.create_task(bot_process.run(ready))
    await asyncio.wait([slack, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    failure = slack.exception() if slack.done() else None
    if isinstance(failure, SLACK_NETWORK_ERRORS):
        raise SlackUnreachable(slack_unreachable(failure, bot_settings.api_url))
    if slack.done():
        slack.result()  # a refused token stops `da up` with its one line
    print("da: Slack bot " + ("connected (socket mode)" if bot_process.connected else
                              "standing by: another da bot runs for this workspace"), file=sys.stderr)
    return slack
