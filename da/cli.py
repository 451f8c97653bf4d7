"""The `da` console script: one entry point, a function per subcommand.

Each subcommand is `main(argv) -> int`, so the Procfile, tests and `da up` call the same
code. Configuration is loaded here, once, and passed down. Exit status: 0 ok, 1 the command
failed, 2 bad usage or a bad setting.

Imports are made inside the subcommands: a client verb must not pay for the queue service,
the worker, SSH or Slack, and `da --help` for none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da import config
from da.config import ConfigError
from da.version import __version__

FAILED = 1
BAD_USAGE = 2
# As a shell reports a process ended by SIGINT (Ctrl-C) and by SIGPIPE (its reader went away).
INTERRUPTED = 130
CLOSED_PIPE = 141


# The modules whose warnings a user of `da` should see: its own. A dependency's deprecation notice
# (cryptography's on asyncssh's import, say) says nothing the user can act on.
OWN_MODULES = r"da(\.|$)"


def quiet_dependency_warnings() -> None:
    """Show da's own warnings only, unless the user asked for warnings with -W or PYTHONWARNINGS."""
    if sys.warnoptions:
        return
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=OWN_MODULES)


def skip_httpx_command_line() -> None:
    """httpx imports its own command-line client (click, rich and pygments: 50 ms, a quarter of a worker's
    start) whenever click happens to be installed, and da never runs it. An empty `httpx._main` sends httpx
    to the stand-in it defines for installs without click."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))


def configure_logging(env: dict[str, str]) -> None:
    import logging

    from da import logs

    try:
        logs.configure(env)
    except ConfigError as exc:
        print(f"da: {exc}", file=sys.stderr)
        raise SystemExit(BAD_USAGE) from exc
    if logging.getLogger().level > logging.DEBUG:
        # slack_sdk logs every retry of a failed call at INFO: four lines for an outage da says in one.
        logging.getLogger("slack_sdk.web.async_base_client").setLevel(logging.WARNING)


def fail(message: str, code: int = BAD_USAGE) -> int:
    """Print one line and return the exit status (bad usage unless the command itself failed)."""
    print(f"da: {message}", file=sys.stderr)
    return code


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {}


def command(name: str, summary: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    """Declare `da NAME` (listed by --help in the order declared); the function is `main(argv) -> int`."""
    def register(function: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = (summary, function)
        return function
    return register


def use_uvloop() -> None:
    """The queue service's event loop: uvloop where it is installed (faster sockets), else asyncio's."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def load_fleet(config_dir: Path) -> Any:
    from da import fleet

    return fleet.load_fleet(config_dir)


@command("serve", "run the queue service")
def serve(argv: list[str] | None = None) -> int:
    """Run the queue service in the foreground."""
    import asyncio
    import logging

    from da.queue import app as queue_app
    from da.queue import connections, lockfile
    from da.queue.settings import QueueSettings

    parser = argparse.ArgumentParser(
        prog="da serve", description="Run the queue service.",
        epilog="Environment: QUEUE_DB_URL=postgresql://... runs it on PostgreSQL instead of the SQLite file, "
               "as one of any number of replicas sharing that database.")
    parser.add_argument("--host", help="address to listen on (env QUEUE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env QUEUE_PORT, default 8000)")
    parser.add_argument("--db", help="SQLite file (env QUEUE_DB_PATH, default ./data/queue.db)")
    args = parser.parse_args(argv)
    env = config.load_environment()
    overrides = {"QUEUE_HOST": args.host, "QUEUE_PORT": args.port, "QUEUE_DB_PATH": args.db}
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        config.refuse_example_secret(env)
        settings = QueueSettings.from_env(env)
        roster = load_fleet(settings.config_dir)
    except ConfigError as exc:
        return fail(str(exc))
    configure_logging(env)
    use_uvloop()
    # Nothing touches the database before this process is its only user and holds its port.
    try:
        with lockfile.held(settings):
            sockets = queue_app.bind(settings.host, settings.port)
            app = queue_app.make_app(settings, roster)

            def ready() -> None:
                # Said once the store opened (the database answered, migrations ran) and the port serves.
                logging.getLogger("da").info("queue on http://%s:%d, database %s%s", settings.host, settings.port,
                                             settings.database,
                                             "" if settings.db_url else f", QUEUE_SYNC={settings.sync}")

            asyncio.run(connections.serve(app, sockets, ready=ready))
    except OSError as exc:
        return fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", FAILED)
    except Exception as exc:  # noqa: BLE001 - a startup failure is one line, not a traceback
        return fail(str(exc), FAILED)
    return 0


def ensure_secret(env: dict[str, str]) -> str:
    """The SECRET_KEY to use locally: the configured one, or a new one saved to this user's `config.secret_file`,
    outside the folder where `da up`'s worker runs tasks (which could read a `.env` there)."""
    import secrets

    config.refuse_example_secret(env)
    if env.get("SECRET_KEY"):
        return env["SECRET_KEY"]
    path = config.secret_file(env)
    if path is None:
        raise ConfigError("SECRET_KEY is not set and neither HOME nor XDG_CONFIG_HOME says where to keep a generated "
                          "one; set SECRET_KEY in the environment.")
    secret = secrets.token_urlsafe(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created private: the secret is never readable by others, not even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(f"{secret}\n")
    print(f"da: generated SECRET_KEY and saved it to {path} (not in this folder, where tasks run; `da` commands on "
          "this machine read it from there)", file=sys.stderr)
    env["SECRET_KEY"] = secret
    return secret


def load_worker(env: dict[str, str], *, local: bool = False) -> tuple[Any, Any]:
    """Worker settings and handlers; `local` (da up) fills gaps with this machine's defaults."""
    import asyncio

    from da.worker import registry
    from da.worker import settings as worker_settings

    handlers = registry.discover(config.handlers_path(env))
    if local:
        settings = worker_settings.local(env, handlers)
        env.setdefault("MACHINE_NAME", settings.machine)
        return settings, handlers
    return asyncio.run(worker_settings.resolve(env, handlers)), handlers


@command("worker", "run this machine's worker")
def worker(argv: list[str] | None = None) -> int:
    """Run this machine's worker in the foreground."""
    import asyncio

    from da.worker import worker as worker_module
    from da.worker.errors import HandlerError

    parser = argparse.ArgumentParser(
        prog="da worker", description="Claim and run tasks on this machine.",
        epilog="Environment: DA_TOKEN (this machine's worker token; SECRET_KEY instead only on the queue host), "
               "MACHINE_NAME, QUEUE_URL (comma-separated for failover), MAX_CONCURRENT "
               "(default 2), SHUTDOWN_GRACE (default 30 s), DA_HANDLERS_PATH, DA_LOG_DIR (default data/logs).")
    parser.add_argument("--machine", help="this machine's name in machines.yaml (env MACHINE_NAME)")
    parser.add_argument("--queue-url", help="queue URL(s), comma-separated (env QUEUE_URL)")
    parser.add_argument("--max-concurrent", type=int, help="tasks run at once (env MAX_CONCURRENT, default 2)")
    args = parser.parse_args(argv)
    env = config.load_environment()
    overrides = {"MACHINE_NAME": args.machine, "QUEUE_URL": args.queue_url, "MAX_CONCURRENT": args.max_concurrent}
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        settings, handlers = load_worker(env)
    except (ConfigError, HandlerError) as exc:
        return fail(str(exc))
    configure_logging(env)

    instance = worker_module.Worker(settings, handlers)

    async def run() -> None:
        worker_module.install_signal_handlers(instance)
        await instance.async_run()

    asyncio.run(run())
    return FAILED if instance.gave_up else 0


@command("up", "run the queue and a local worker (the quick start), and the Slack bot when its tokens are set")
def up(argv: list[str] | None = None) -> int:
    """The queue and a local worker in one process, on the embedded SQLite default."""
    import asyncio

    from da import up as up_module
    from da.queue import app as queue_app
    from da.queue import lockfile
    from da.queue.errors import QueueError
    from da.queue.settings import QueueSettings
    from da.worker.errors import HandlerError

    parser = argparse.ArgumentParser(
        prog="da up", description="Run the queue and a local worker in one process, and the Slack bot when "
                                  "SLACK_BOT_TOKEN and SLACK_APP_TOKEN are set.",
        epilog="Environment: SECRET_KEY (generated into ~/.config/da/secret when unset), QUEUE_HOST, QUEUE_PORT, "
               "QUEUE_DB_PATH, QUEUE_SYNC (default full here), MACHINE_NAME (default this host's name), "
               "SHUTDOWN_GRACE, SLACK_BOT_TOKEN and SLACK_APP_TOKEN (start the bot too).")
    parser.add_argument("--host", help="address to listen on (env QUEUE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env QUEUE_PORT, default 8000)")
    parser.add_argument("--no-worker", action="store_true", help="run only the queue")
    args = parser.parse_args(argv)
    cwd = Path.cwd()
    env = config.load_environment(cwd)
    env.update({k: str(v) for k, v in {"QUEUE_HOST": args.host, "QUEUE_PORT": args.port}.items() if v is not None})
    try:
        ensure_secret(env)
        queue_settings = QueueSettings.from_env(env, cwd=cwd)
        roster = load_fleet(queue_settings.config_dir)
        env.setdefault("QUEUE_URL", f"http://{queue_settings.host}:{queue_settings.port}")
        worker_parts = None if args.no_worker else load_worker(env, local=True)
        bot_settings = None
        if env.get("SLACK_BOT_TOKEN") or env.get("SLACK_APP_TOKEN"):
            from da.bot.slack.settings import BotSettings

            bot_settings = BotSettings.from_env(env, cwd=cwd)
    except (ConfigError, HandlerError) as exc:
        return fail(str(exc))
    configure_logging(env)

    # As in `da serve`: the database's only user and the port's holder before anything is opened.
    try:
        with lockfile.held(queue_settings):
            sockets = queue_app.bind(queue_settings.host, queue_settings.port)
            use_uvloop()
            asyncio.run(up_module.run(queue_settings, roster, sockets, worker_parts=worker_parts,
                                      bot_settings=bot_settings, env=env))
    except ConfigError as exc:
        return fail(str(exc))
    except up_module.SlackUnreachable as exc:
        return fail(str(exc), FAILED)
    except OSError as exc:
        return fail(f"cannot listen on {queue_settings.host}:{queue_settings.port}: {exc.strerror or exc}", FAILED)
    except QueueError as exc:
        return fail(exc.detail, FAILED)
    return 0


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s` or a number of seconds."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        value = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; use e.g. 30d, 12h or 90m") from None
    if value < 0:
        raise ValueError("the duration must not be negative")
    return value


def on_postgres(settings: Any, verb: str, build: Callable[[str], list[str]]) -> int:
    """`da backup`/`restore` copy SQLite files; on PostgreSQL print the command that does the job."""
    import shlex

    # A URL with a password is not printed: the command reads it from the setting instead.
    hidden = settings.db_url != settings.database
    url = "${QUEUE_DB_URL}" if hidden else settings.db_url
    line = " ".join(f'"{part}"' if url in part and hidden else shlex.quote(part) for part in build(url))
    print(f"da: the queue runs on PostgreSQL (QUEUE_DB_URL), where `da {verb}` copies nothing; run:\n  {line}"
          + ("\n(with QUEUE_DB_URL exported, e.g. `set -a; . ./.env; set +a`)" if hidden else ""), file=sys.stderr)
    return FAILED


@command("backup", "copy the queue database while it runs")
def backup(argv: list[str] | None = None) -> int:
    """Copy the queue database while the service runs."""
    from da.queue import postgres, sqlite
    from da.queue.errors import QueueError
    from da.queue.settings import QueueSettings

    parser = argparse.ArgumentParser(prog="da backup", description="Back up the queue database (online).")
    parser.add_argument("path", help="the file to write, or a folder to write a dated copy into")
    args = parser.parse_args(argv)
    try:
        env = config.load_environment()
        settings = QueueSettings.from_env(env, require_secret=False)
    except ConfigError as exc:
        return fail(str(exc))
    if settings.db_url:
        return on_postgres(settings, "backup", lambda url: postgres.dump_command(url, args.path))
    target = Path(args.path)
    if target.is_dir() or args.path.endswith(("/", os.sep)):
        # A folder: a new, dated file in it, never the folder itself.
        target = target / f"{settings.db_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}.db"
    try:
        sqlite.backup_file(settings.db_path, target)
    except QueueError as exc:
        return fail(exc.detail)
    print(f"backed up {settings.db_path} to {target}")
    return 0


def queue_answers(settings: Any) -> bool:
    """Whether a queue service answers at the configured address (then its database is in use)."""
    import httpx

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        httpx.get(f"http://{host}:{settings.port}/health", timeout=1.0)
    except httpx.TransportError:
        return False
    return True


@command("restore", "replace the queue database with a backup (service stopped)")
def restore(argv: list[str] | None = None) -> int:
    """Replace the queue database with a backup; the queue service must be stopped."""
    from da.queue import lockfile, postgres, sqlite
    from da.queue.errors import QueueError
    from da.queue.settings import QueueSettings

    parser = argparse.ArgumentParser(prog="da restore", description="Restore the queue database from a backup.")
    parser.add_argument("path", help="a file written by `da backup`")
    args = parser.parse_args(argv)
    try:
        settings = QueueSettings.from_env(config.load_environment(), require_secret=False)
    except ConfigError as exc:
        return fail(str(exc))
    if settings.db_url:
        return on_postgres(settings, "restore", lambda url: postgres.restore_command(url, args.path))
    if queue_answers(settings):
        return fail(f"a queue service answers on {settings.host}:{settings.port}; stop it before restoring.", FAILED)
    try:
        with lockfile.held(settings):
            sqlite.check_file(Path(args.path), "pick another backup", "a queue database backup", backup=True)
            kept = sqlite.restore_file(Path(args.path), settings.db_path)
    except lockfile.DatabaseInUse as exc:
        return fail(exc.detail, FAILED)
    except QueueError as exc:
        return fail(exc.detail)
    print(f"restored {settings.db_path} from {args.path}"
          + (f" (the previous file is kept as {kept})" if kept else ""))
    return 0


@command("migrate", "copy the SQLite queue into an empty PostgreSQL database (--to URL)")
def migrate(argv: list[str] | None = None) -> int:
    """Copy the SQLite queue database into an empty PostgreSQL database."""
    import asyncio

    from da.queue import lockfile, transfer
    from da.queue.errors import QueueError
    from da.queue.settings import QueueSettings, database_url, redact_url

    parser = argparse.ArgumentParser(
        prog="da migrate", description="Copy the queue's SQLite database (QUEUE_DB_PATH) into an empty PostgreSQL "
                                       "database: every task, event and pruned count.",
        epilog="Stop `da serve` first; afterwards set QUEUE_DB_URL to the same URL and start it again.")
    parser.add_argument("--to", required=True, metavar="URL",
                        help="the empty database, postgresql://user:password@host:5432/dbname")
    args = parser.parse_args(argv)
    try:
        settings = QueueSettings.from_env(config.load_environment(), require_secret=False)
        url = database_url({"--to": args.to}, "--to")
    except ConfigError as exc:
        return fail(str(exc))
    if not url:
        return fail("--to needs a PostgreSQL URL, e.g. postgresql://da:PASSWORD@db-host:5432/da")
    if queue_answers(settings):
        return fail(f"a queue service answers on {settings.host}:{settings.port}; stop it before migrating, so no "
                    "task changes while it is copied.", FAILED)
    try:
        with lockfile.held(settings, create=False):
            counts = asyncio.run(transfer.migrate(settings.db_path, url))
    except lockfile.DatabaseInUse as exc:
        return fail(exc.detail, FAILED)
    except QueueError as exc:
        return fail(exc.detail, FAILED)
    print(f"copied {settings.db_path} into {redact_url(url)}:")
    print("\n".join(counts.lines()))
    print("checked: the PostgreSQL database holds the same tasks, events, pruned counts, tokens, asks and messages.")
    print(f"next: set QUEUE_DB_URL to the URL you gave --to ({redact_url(url)}) in the .env of every replica, "
          "then start `da serve`.")
    return 0


@command("prune", "remove finished tasks older than --older-than (default 30d)")
def prune(argv: list[str] | None = None) -> int:
    """Ask the queue to remove finished tasks older than a duration."""
    import asyncio

    from da.queue.client import QueueClient
    from da.queue.errors import QueueError

    parser = argparse.ArgumentParser(prog="da prune", description="Remove finished tasks and their events, "
                                     "and task logs in DA_LOG_DIR on this machine.")
    parser.add_argument("--older-than", default="30d", help="age of finished tasks and logs to remove (default 30d)")
    parser.add_argument("--include-open", action="store_true",
                        help="also remove needs_human and failed tasks without asking (they may still want a person)")
    args = parser.parse_args(argv)
    try:
        seconds = parse_duration(args.older_than)
    except ValueError as exc:
        return fail(str(exc))
    try:
        env = config.load_environment()
        urls = config.queue_urls(env)
    except ConfigError as exc:
        return fail(str(exc))
    if not env.get("SECRET_KEY") and env.get("DA_TOKEN"):
        # Removing history is the admin's: a worker machine holds only its token and prunes its logs.
        print(prune_task_logs(env, seconds, args.older_than))
        print("finished tasks are pruned where the admin secret is: run `da prune` on the queue host too")
        return 0
    if not env.get("SECRET_KEY"):
        return fail("SECRET_KEY is not set; put the queue's secret in .env.")

    async def run() -> int | None:
        async with QueueClient(list(urls), env["SECRET_KEY"]) as client:
            if not args.include_open:
                open_ones = await unsettled_before(client, time.time() - seconds)
                if open_ones and not agree_to_prune(open_ones, args.older_than):
                    return None
            return await client.prune(seconds)

    try:
        removed = asyncio.run(run())
    except QueueError as exc:
        return fail(exc.detail, FAILED)
    if removed is None:
        return BAD_USAGE
    print(prune_task_logs(env, seconds, args.older_than))
    print(f"removed {removed} finished task(s) older than {args.older_than}")
    return 0


async def unsettled_before(client: Any, cutoff: float) -> dict[str, int]:
    """How many needs_human and failed tasks finished before `cutoff` (what a prune would also remove): finished,
    but perhaps not settled, since a person may still want to read, retry or resolve them."""
    from da.queue import models

    counts: dict[str, int] = {}
    for status in (models.NEEDS_HUMAN, models.FAILED):
        before: int | None = None
        while True:
            tasks, before = await client.list_tasks(status=status, limit=500, before=before)
            counts[status] = counts.get(status, 0) + sum(
                1 for task in tasks if task.finished_at is not None and task.finished_at < cutoff)
            if before is None:
                break
    return {status: n for status, n in counts.items() if n}


def agree_to_prune(unsettled: dict[str, int], age: str) -> bool:
    """Ask on a terminal (only a typed yes goes ahead); without one, say how to include them and stop."""
    what = " and ".join(f"{n} {status}" for status, n in unsettled.items())
    if not sys.stdin.isatty():
        print(f"da: {what} task(s) older than {age} would be removed too, and may still want a person; nothing "
              "removed. Resolve them first, or add --include-open to remove them as well.", file=sys.stderr)
        return False
    answer = input(f"{what} task(s) older than {age} would be removed too (they may still want a person). "
                   "Remove them? [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing removed.")
    return False


def prune_task_logs(env: dict[str, str], seconds: float, age: str) -> str:
    """Remove this machine's old task logs; logs live where the worker ran, not in the queue."""
    from da.worker import output, settings

    folder = settings.task_log_dir(env).resolve()
    removed, size = output.prune_logs(folder, seconds)
    return f"removed {removed} task log file(s) older than {age} from {folder} on this machine ({size} bytes)"


@command("workspaces", "this machine's task worktrees; `prune` removes finished ones whose work is pushed")
def workspaces(argv: list[str] | None = None) -> int:
    """List this machine's task worktrees, or prune those of finished tasks whose work is pushed or empty."""
    import asyncio
    import dataclasses
    import json

    from da.queue import errors as queue_errors
    from da.queue import models
    from da.queue.client import QueueClient
    from da.worker import workspace

    parser = argparse.ArgumentParser(prog="da workspaces", description="Task worktrees on this machine "
                                     "(DA_WORKSPACES); prune never deletes a branch with unpushed work unless forced.")
    parser.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    parser.add_argument("--older-than", default="7d", help="prune: only worktrees older than this (default 7d)")
    parser.add_argument("--force", action="append", default=[], metavar="BRANCH",
                        help="prune: remove this branch (da/<id>) even with unpushed work; repeatable")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--machine", help="list another machine's worktrees, as its tasks' results record them")
    args = parser.parse_args(argv)
    if args.machine and args.action == "prune":
        return fail("prune works on this machine's worktrees only; run `da workspaces prune` on that machine.")
    try:
        seconds = parse_duration(args.older_than)
        env = config.load_environment()
        credential = config.credential(env, "client")
    except (ValueError, ConfigError) as exc:
        return fail(str(exc))
    settings = workspace.WorkspaceSettings.from_env(env)

    async def remote(machine: str) -> int:
        """Another machine's worktrees, from the queue (front ends never talk to a worker)."""
        rows: list[dict[str, object]] = []
        async with QueueClient(list(config.queue_urls(env)), credential) as client:
            before: int | None = None
            while True:
                page, before = await client.list_tasks(machine=machine, type=workspace.AGENT_TASK,
                                                       limit=models.MAX_LIMIT, before=before)
                for task in page:
                    result = task.result or {}
                    for space in result.get("workspaces") or [result.get("workspace") or {}]:
                        if space.get("path"):
                            rows.append({"task": task.short_id, "status": task.status, "branch": space.get("branch"),
                                         "pushed": space.get("pushed"), "changed": space.get("changed"),
                                         "path": space["path"], "repo": space.get("repo"),
                                         "pr_url": space.get("pr_url")})
                if not page or before is None:
                    break
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no task worktrees recorded for {machine}")
        for row in [] if args.json else rows:
            state = "empty" if not row["changed"] else "pushed" if row["pushed"] else "unpushed"
            print(f"{row['task']}  {row['status']:<11} {row['branch']!s:<12} {state:<9} {row['path']}")
        return 0

    async def run() -> int:
        if args.machine:
            return await remote(args.machine)
        listed = await workspace.list_workspaces(settings)
        statuses: dict[str, str] = {}
        async with QueueClient(list(config.queue_urls(env)), credential) as client:
            for item in listed:
                try:
                    statuses[item.task] = (await client.get_task(item.task)).status
                except queue_errors.NotFound:
                    statuses[item.task] = "gone"  # pruned from the queue's history: finished long ago
        if args.action == "list":
            rows = [{**item.to_json(), "status": statuses[item.task]} for item in listed]
            if args.json:
                print(json.dumps(rows, indent=2))
            elif not rows:
                print(f"no task worktrees under {settings.root}")
            for row in [] if args.json else rows:
                pushed = "empty" if row["empty"] else "pushed" if row["pushed"] else f"{row['unpushed']} unpushed"
                print(f"{row['task']}  {row['status']:<11} {row['branch']:<12} {row['age'] // 3600:>5}h "
                      f"{row['size'] // 1024:>8} KiB  {pushed:<12} {row['path']}")
            return 0
        finished = {task for task, status in statuses.items()
                    if status in (models.DONE, models.FAILED, models.CANCELLED, "gone")}
        pruned = await workspace.prune(settings, older_than=seconds, finished=finished, force=set(args.force))
        if args.json:
            print(json.dumps(dataclasses.asdict(pruned), indent=2))
            return 0
        print("\n".join([f"removed {path}" for path in pruned.removed]
                        + [f"kept {path}: {why}" for path, why in pruned.kept.items()]) or "nothing to prune")
        return 0

    try:
        return asyncio.run(run())
    except queue_errors.QueueError as exc:
        return fail(f"cannot read the tasks' statuses: {exc.detail}", FAILED)


@command("service", "install a systemd/launchd unit for queue, worker or bot")
def service(argv: list[str] | None = None) -> int:
    """Write a systemd user unit or a launchd agent for one da process."""
    import shutil

    from da import service as service_module

    parser = argparse.ArgumentParser(prog="da service", description="Install da as a service of this user.")
    parser.add_argument("action", choices=["install"])
    parser.add_argument("kind", choices=sorted(service_module.KINDS))
    parser.add_argument("--print", dest="print_only", action="store_true", help="only show the unit")
    parser.add_argument("--os", choices=["linux", "macos"], help="the unit flavour (default: this system)")
    args = parser.parse_args(argv)
    found = shutil.which("da")
    executable = [found] if found else [sys.executable, "-m", "da.cli"]
    try:
        unit = service_module.plan(args.kind, system=args.os or service_module.current_system(), home=Path.home(),
                                   workdir=Path.cwd(), executable=executable)
    except ValueError as exc:
        return fail(str(exc))
    if args.print_only:
        print(unit.text)
        print(f"# would be written to {unit.path}; enable with: {unit.enable}")
        return 0
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    unit.path.write_text(unit.text, encoding="utf-8")
    print(f"wrote {unit.path}\nenable it with: {unit.enable}")
    return 0


@command("doctor", "check this machine's setup and say what to fix")
def doctor(argv: list[str] | None = None) -> int:
    """Check this machine's setup, line by line."""
    from da import doctor as doctor_module

    parser = argparse.ArgumentParser(prog="da doctor", description="Check this machine's da setup.")
    parser.add_argument("--agents", action="store_true",
                        help="also ask each agent a one-line prompt (proves it is logged in; may cost a request)")
    args = parser.parse_args(argv)
    cwd = Path.cwd()
    try:
        env = config.load_environment(cwd)
    except ConfigError as exc:
        return fail(str(exc))
    lines, ok = doctor_module.doctor(env, cwd, ask_agents=args.agents)
    print("\n".join(lines))
    return 0 if ok else FAILED


@command("bot", "run the Slack bot (socket mode)")
def bot(argv: list[str] | None = None) -> int:
    """Run the Slack bot in socket mode."""
    import asyncio

    from da import up as up_module
    from da.bot.slack.app import BotProcess
    from da.bot.slack.settings import BotSettings

    argparse.ArgumentParser(
        prog="da bot", description="Run the Slack bot (socket mode).",
        epilog="Environment: SLACK_BOT_TOKEN (xoxb-), SLACK_APP_TOKEN (xapp-), SLACK_ALLOWED_USERS, "
               "SLACK_NOTIFY_CHANNEL, SLACK_NOTIFY_DONE, SLACK_BURST_THRESHOLD, SLACK_TIMEOUT, SLACK_STATE_PATH, "
               "SLACK_API_URL, QUEUE_URL, DA_TOKEN (a client token; SECRET_KEY on the queue host), ROUTER. One bot "
               "runs per workspace: a second one stands "
               "by.").parse_args(argv)
    cwd = Path.cwd()
    env = config.load_environment(cwd)
    try:
        settings = BotSettings.from_env(env, cwd=cwd)
    except ConfigError as exc:
        return fail(str(exc))
    configure_logging(env)
    # A bot that reached Slack before (its state file, or this process) is a service started while the
    # network is away: it waits for Slack. A first start that cannot reach it says so and stops.
    reached_before = settings.state_path.exists()
    pause = up_module.SLACK_RETRY_FIRST
    while True:
        process = BotProcess(settings)
        try:
            asyncio.run(process.run())
            return 0
        except ConfigError as exc:
            return fail(str(exc))
        except up_module.SLACK_NETWORK_ERRORS as exc:
            line = up_module.slack_unreachable(exc, settings.api_url)
            reached_before = reached_before or bool(process.lease_name)
            if not reached_before:
                return fail(line, FAILED)
            print(f"da: {line}; trying again in {pause:.0f}s", file=sys.stderr, flush=True)
        time.sleep(pause)
        pause = min(pause * 2, up_module.SLACK_RETRY_MAX)


@command("token", "create, list and revoke scoped tokens (worker, client, reader) on the queue host")
def token(argv: list[str] | None = None) -> int:
    """Create, list and revoke scoped tokens (with the admin secret, so on the queue host)."""
    from da import tokens
    from da.queue.errors import QueueError

    cwd = Path.cwd()
    try:
        tokens.main(sys.argv[2:] if argv is None else argv, config.load_environment(cwd), cwd)
    except ConfigError as exc:
        return fail(str(exc))
    except QueueError as exc:
        return fail(exc.detail, FAILED)
    return 0


def client(argv: list[str]) -> int:
    """The terminal client: one verb, or the REPL when argv is empty."""
    import logging

    from da.bot.settings import ClientSettings
    from da.bot.terminal import session

    cwd = Path.cwd()
    try:
        env = config.load_environment(cwd)
        settings = ClientSettings.from_env(env, cwd=cwd)
    except ConfigError as exc:
        return fail(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return session.main(argv, settings, env)


def usage() -> str:
    from da.bot import grammar

    lines = [f"da {__version__}: distributed agents", "", "usage: da <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "client verbs (against QUEUE_URL; `da` alone opens a prompt):"]
    lines += [f"  {verb.usage}" for verb in grammar.VERBS.values()]
    lines += ["", "Settings come from .env in the working folder (the environment wins): QUEUE_URL, and DA_TOKEN (this "
              "machine's token from `da token create` on the queue host) or SECRET_KEY (the admin secret, on the "
              "queue host only).",
              "`da <command> --help` describes each service command."]
    return "\n".join(lines)


def unknown_command(name: str) -> int:
    """`da frobnicate`: one line naming every command, the service ones and the client verbs."""
    from da.bot import grammar

    return fail(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}; client verbs: "
                f"{', '.join(grammar.VERBS)}. See `da --help`.")


def main(argv: list[str] | None = None) -> int:
    """Dispatch `da <command> ...`; Ctrl-C ends it with 130, a reader that stops reading (`| head`) quietly."""
    quiet_dependency_warnings()
    skip_httpx_command_line()
    try:
        code = dispatch(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # Nothing more can be written; point stdout at /dev/null so the exit's final flush cannot
        # fail again, and end as a tool killed by SIGPIPE would (128 + 13).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE


def dispatch(argv: list[str]) -> int:
    """Run the command or client verb that argv names."""
    if not argv:
        return client([])
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    entry = COMMANDS.get(argv[0])
    if entry is None:
        from da.bot import grammar

        return client(argv) if argv[0].lower() in grammar.VERBS else unknown_command(argv[0])
    return entry[1](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
