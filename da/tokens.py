"""`da token create|list|revoke`: scoped tokens, managed through the queue's API with the admin secret.

Going through the API (not the database) means it works against any replica and on either backend,
from wherever SECRET_KEY is, and the queue stays the only thing that writes its database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from da import config, fleet
from da.config import ConfigError
from da.queue.client import QueueClient
from da.queue.errors import NotFound
from da.queue.models import TOKEN_KINDS, WORKER_TOKEN, Token, iso


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="da token", description="Scoped tokens: one per worker machine (claims only as that machine), client "
        "tokens for the Slack bot and people's terminals (cannot claim), reader tokens for monitoring.",
        epilog="Runs where the admin secret is (SECRET_KEY, on the queue host), against QUEUE_URL.")
    verbs = top.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="make a token and print it once, as a DA_TOKEN= line")
    create.add_argument("kind", choices=TOKEN_KINDS)
    create.add_argument("target", metavar="MACHINE|NAME", help="the machine (worker) or a name for the holder")
    create.add_argument("--aliases", help="worker: comma-separated aliases it may claim as (default: the "
                        "machine's aliases in machines.yaml)")
    create.add_argument("--name", help="worker: the token's name (default: the machine)")
    listing = verbs.add_parser("list", help="the tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="as JSON")
    revoke = verbs.add_parser("revoke", help="refuse a token from now on, on every replica")
    revoke.add_argument("token", metavar="ID|NAME", help="its id or the name of an active token (`da token list`)")
    return top


def main(argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
    """Run one verb; a bad setting raises ConfigError, a refusal by the queue QueueError."""
    args = parser().parse_args(argv)
    secret = env.get("SECRET_KEY", "").strip()
    if not secret:
        raise ConfigError("SECRET_KEY is not set; `da token` needs the admin secret, so run it on the queue host "
                          "(a token cannot make or revoke tokens).")
    urls = list(config.queue_urls(env))
    aliases = worker_aliases(args, env, cwd) if args.verb == "create" else None
    asyncio.run(run(args, urls, secret, aliases))


def worker_aliases(args: argparse.Namespace, env: Mapping[str, str], cwd: Path) -> list[str]:
    """The aliases a worker token may claim as: --aliases, else the machine's in machines.yaml."""
    if args.kind != WORKER_TOKEN:
        if args.aliases is not None or args.name is not None:
            raise ConfigError(f"--aliases and --name are for worker tokens; a {args.kind} token is named by its "
                              "argument.")
        return []
    roster = fleet.load_fleet(config.config_dir(env, cwd))
    machine = roster.find(args.target)
    if machine is None:
        # Often a typo; otherwise the worker runs whatever it detects there, which may not be what was meant.
        known = ", ".join(roster.names) or "none"
        print(f"da: warning: {args.target} is not in {roster.source} (known: {known}); its worker will run what it "
              "detects on that machine (every handler, the agents on its PATH) until you add it there.",
              file=sys.stderr)
    if args.aliases is not None:
        return config.env_list({"aliases": args.aliases}, "aliases")
    return list(machine.aliases) if machine else []


async def run(args: argparse.Namespace, urls: list[str], secret: str, aliases: list[str] | None) -> None:
    async with QueueClient(urls, secret, rounds=1) as client:
        if args.verb == "create":
            worker = args.kind == WORKER_TOKEN
            token, value = await client.create_token(args.kind, name=args.name if worker else args.target,
                                                     machine=args.target if worker else None, aliases=aliases)
            print(f"DA_TOKEN={value}")
            holder = f"{token.machine}'s" if token.machine else f"{token.name}'s"
            print(f"da: created {describe(token)}; put the line above in {holder} .env (it is shown only now) "
                  "and keep SECRET_KEY on the queue host only.", file=sys.stderr)
            return
        tokens = await client.tokens()
        if args.verb == "list":
            shown = [t for t in tokens if args.all or t.revoked_at is None]
            print(json.dumps([t.to_json() for t in shown], indent=2) if args.json else table(shown))
            return
        found = find(tokens, args.token)
        if found is None:
            raise NotFound(f"no token with the id or active name {args.token!r}; `da token list --all` shows them.")
        revoked = await client.revoke_token(found.id)
        print(f"revoked {describe(revoked)}; every replica refuses it from now on.")


def find(tokens: list[Token], key: str) -> Token | None:
    """An active token by name, else any token by id."""
    return (next((t for t in tokens if t.name == key and t.revoked_at is None), None)
            or next((t for t in tokens if t.id == key.lower()), None))


def describe(token: Token) -> str:
    bound = f" for {token.machine}" + (f" (aliases {', '.join(token.aliases)})" if token.aliases else "")
    return f"{token.kind} token {token.id} {token.name!r}" + (bound if token.machine else "")


def table(tokens: list[Token]) -> str:
    if not tokens:
        return "no tokens (`da token create worker MACHINE` makes one)"
    rows = [("ID", "KIND", "NAME", "MACHINE", "ALIASES", "CREATED", "REVOKED")]
    rows += [(t.id, t.kind, t.name, t.machine or "-", ",".join(t.aliases) or "-", (iso(t.created_at) or "")[:16],
              (iso(t.revoked_at) or "-")[:16]) for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)

