"""The `da` console script: one entry point, a function per subcommand.

Each subcommand is `main(argv) -> int`, so the Procfile, tests and `da up` call the same
code. Configuration is loaded here, once, and passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from da import config, fleet
from da.config import ConfigError
from da.version import __version__

logger = logging.getLogger("da")


def configure_logging(env: dict[str, str]) -> None:
    level = env.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def fail(message: str) -> int:
    print(f"da: {message}", file=sys.stderr)
    return 2


def serve(argv: list[str] | None = None) -> int:
    """Run the queue service in the foreground."""
    from aiohttp import web

    from da.queue import app as queue_app
    from da.queue.settings import QueueSettings

    parser = argparse.ArgumentParser(prog="da serve", description="Run the queue service.")
    parser.add_argument("--host", help="address to listen on (env QUEUE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env QUEUE_PORT, default 8000)")
    parser.add_argument("--db", help="SQLite file (env QUEUE_DB_PATH, default ./data/queue.db)")
    args = parser.parse_args(argv)
    env = config.load_environment()
    overrides = {"QUEUE_HOST": args.host, "QUEUE_PORT": args.port, "QUEUE_DB_PATH": args.db}
    env.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        settings = QueueSettings.from_env(env)
        roster = fleet.load_fleet(settings.config_dir)
    except ConfigError as exc:
        return fail(str(exc))
    configure_logging(env)
    app = queue_app.make_app(settings, roster)
    logger.info("queue on http://%s:%d, database %s", settings.host, settings.port, settings.db_path)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    except OSError as exc:
        return fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - a startup failure is one line, not a traceback
        return fail(str(exc))
    return 0


def ensure_secret(env: dict[str, str], cwd: Path) -> str:
    """The SECRET_KEY to use locally: the configured one, or a new one saved to .env."""
    if env.get("SECRET_KEY"):
        return env["SECRET_KEY"]
    secret = secrets.token_urlsafe(32)
    env_file = cwd / ".env"
    existing = env_file.read_text(encoding="utf-8") if env_file.exists() else ""
    separator = "" if not existing or existing.endswith("\n") else "\n"
    env_file.write_text(f"{existing}{separator}SECRET_KEY={secret}\n", encoding="utf-8")
    env_file.chmod(0o600)
    print(f"da: generated SECRET_KEY and saved it to {env_file}", file=sys.stderr)
    env["SECRET_KEY"] = secret
    return secret


COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {}


def command(name: str, summary: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    def register(function: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = (summary, function)
        return function
    return register


command("serve", "run the queue service")(serve)


def usage() -> str:
    lines = [f"da {__version__}: distributed agents", "", "usage: da <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (summary, _) in COMMANDS.items()]
    lines += ["", "`da <command> --help` describes each one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `da <command> ...`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    entry = COMMANDS.get(argv[0])
    if entry is None:
        print(f"da: unknown command {argv[0]!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return entry[1](argv[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
