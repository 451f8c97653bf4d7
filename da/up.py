"""`da up`'s composition: the queue service, a local worker and (with Slack tokens) the bot, in one process.

`da.cli` parses the command line and the settings; this module only runs the parts together and
takes them down in order: the worker drains first, then the bot leaves Slack, then the queue
closes (which ends every parked long-poll at once) and its store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp

from da.fleet import Fleet
from da.queue import app as queue_app
from da.queue import auth, connections
from da.queue.http import STORE
from da.queue.models import WORKER_TOKEN, NewToken
from da.queue.settings import QueueSettings
from da.queue.store import Store

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
              bot_settings: Any = None, env: Mapping[str, str] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (the worker's handlers when it runs, else our own).

    The local worker runs with a worker token made for this run (never the admin secret), so a task it runs
    can do no more with the worker's credential than run this machine's tasks.
    """
    from da.worker import worker as worker_module

    app = queue_app.make_app(queue_settings, roster)
    runner = connections.make_runner(app)
    await runner.setup()
    slack: asyncio.Task[None] | None = None
    # Whatever fails from here on (Slack refusing a token), the store and its threads are
    # closed, so the process exits instead of hanging on them.
    try:
        local_settings = None
        if worker_parts is not None:
            # Before serving: whoever sees the queue answer sees its worker's token already made.
            settings, handlers = worker_parts
            token = await local_worker_token(app[STORE], settings.machine, settings.aliases)
            local_settings = with_token(settings, token, env or {})
        for sock in sockets:
            await connections.GuardedSite(runner, sock).start()
        sync = "" if queue_settings.db_url else f", QUEUE_SYNC={queue_settings.sync}"
        print(f"da: queue on http://{queue_settings.host}:{queue_settings.port} "
              f"(database {queue_settings.database}{sync}); Ctrl-C stops", file=sys.stderr)
        if bot_settings is not None:
            slack = await start_bot(bot_settings)
        if local_settings is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
        else:
            instance = worker_module.Worker(local_settings, handlers)
            worker_module.install_signal_handlers(instance)
            await instance.async_run()
    finally:
        if slack is not None:
            slack.cancel()
            # Its failure, if any, was raised in start_bot; here it must not skip closing the store.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slack
        await runner.cleanup()


def local_token_name(machine: str) -> str:
    """The name of the worker token `da up` makes for its own worker on `machine`."""
    return f"da-up:{machine}"


async def local_worker_token(store: Store, machine: str, aliases: tuple[str, ...]) -> str:
    """A new worker token for `da up`'s own worker; the one an earlier run made is revoked first, so a copy a
    task kept from then (read from memory, or printed in a form redaction missed) is refused from now on."""
    name = local_token_name(machine)
    for token in await store.tokens():
        if token.name == name and token.revoked_at is None:
            await store.revoke_token(token.id)
    secret, digest, token_id = auth.mint(WORKER_TOKEN)
    await store.add_token(NewToken(WORKER_TOKEN, name, machine, aliases), token_id=token_id, digest=digest)
    return secret


def with_token(settings: Any, token: str, env: Mapping[str, str]) -> Any:
    """The local worker's settings with its token as credential, redacted from task output like DA_TOKEN."""
    from da.worker.redact import Redactor

    source = f"the worker token `da up` made for this run ({local_token_name(settings.machine)})"
    return dataclasses.replace(settings, secret=token, redactor=Redactor.from_env({**env, "DA_TOKEN": token}),
                               credential_source=source)


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
