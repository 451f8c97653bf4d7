"""`da doctor`: check this machine's setup and say what to fix, one line per check."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from da import config, fleet
from da.config import ConfigError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}: {self.detail}" + (f"\n     fix: {self.fix}" if self.fix and not self.ok else "")


async def agent_answers(agent: str, config_dir: Path) -> Check:
    """Ask the agent a one-line prompt: proves it is installed, logged in and answering."""
    import time

    from da.bot.local import SMOKE_PROMPT, SMOKE_TIMEOUT, agent_argv
    from da.worker import outcome
    from da.worker.models import ProcessResult
    from da.worker.settings import load_agent_commands

    argv = agent_argv(agent, SMOKE_PROMPT, load_agent_commands(config_dir))
    if argv is None or shutil.which(argv[0]) is None:
        return Check(f"agent {agent} answers", False, "not installed", f"install {agent} on this machine")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), SMOKE_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        return Check(f"agent {agent} answers", False, f"no answer within {SMOKE_TIMEOUT:g}s", "run it by hand")
    result = outcome.classify(ProcessResult(process.returncode, out.decode(errors="replace"),
                                            err.decode(errors="replace")), machine="this machine", tool=argv[0],
                              agent=agent)
    took = time.monotonic() - started
    return Check(f"agent {agent} answers", result.status == "done",
                 f"answered in {took:.1f}s" if result.status == "done" else result.notes, result.action)


async def run_checks(env: Mapping[str, str], cwd: Path, *, ask_agents: bool = False) -> list[Check]:
    """Every check that applies to what this machine is configured to run."""
    checks: list[Check] = []
    config_dir = config.config_dir(env, cwd)
    machine = None
    try:
        roster = fleet.load_fleet(config_dir)
        checks.append(Check("machines.yaml", True, f"{len(roster.machines)} machine(s) in {config_dir}"))
        if env.get("MACHINE_NAME"):
            machine = roster.find(env["MACHINE_NAME"])
            checks.append(Check("machine", machine is not None, f"MACHINE_NAME={env['MACHINE_NAME']}"
                                + (" is declared" if machine else " is not in machines.yaml"),
                                "add it to config/machines.yaml or fix MACHINE_NAME"))
    except ConfigError as exc:
        checks.append(Check("machines.yaml", False, str(exc), "fix the file; see machines.yaml.example"))
    for name, loader in (("agents.yaml", _agents), ("skills.yaml", _skills)):
        try:
            loader(config_dir)
            checks.append(Check(name, True, "parses"))
        except ConfigError as exc:
            checks.append(Check(name, False, str(exc), f"fix config/{name} or delete it to use the defaults"))
    if env.get("QUEUE_DB_URL"):
        checks.append(await database_check(env))
    secret = env.get("SECRET_KEY", "")
    checks.append(Check("SECRET_KEY", bool(secret), "set" if secret else "not set",
                        "put the queue's secret in .env (the same value on every machine)"))
    url = (config.env_list(env, "QUEUE_URL") or ["http://127.0.0.1:8000"])[0]
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            health = await http.get(f"{url}/health")
            checks.append(Check("queue", health.status_code == 200, f"{url} answers /health"))
            if secret:
                probe = await http.get(f"{url}/v1/tasks", params={"limit": 1}, headers={"x-secret-key": secret})
                checks.append(Check("secret", probe.status_code == 200,
                                    "accepted" if probe.status_code == 200 else f"refused ({probe.status_code})",
                                    "use the same SECRET_KEY as the queue service"))
        except httpx.HTTPError as exc:
            checks.append(Check("queue", False, f"unreachable at {url} ({type(exc).__name__})",
                                "start `da serve` there or fix QUEUE_URL"))
        for agent in (machine.agents if machine else ()):
            if agent == "groq":
                checks.append(Check("agent groq", bool(env.get("GROQ_API_KEY")), "GROQ_API_KEY "
                                    + ("set" if env.get("GROQ_API_KEY") else "not set"), "add GROQ_API_KEY to .env"))
                continue
            found = shutil.which(agent)
            checks.append(Check(f"agent {agent}", found is not None, found or "not on PATH",
                                f"install it: da skills install {machine.name} {agent}" if machine else ""))
            if found and ask_agents:
                checks.append(await agent_answers(agent, config_dir))
        api = (env.get("SLACK_API_URL") or "https://slack.com/api/").rstrip("/")
        for key, method, label, fix in (
                ("SLACK_BOT_TOKEN", "auth.test", "Slack bot token", "copy the Bot User OAuth Token (xoxb-) again"),
                ("SLACK_APP_TOKEN", "apps.connections.open", "Slack app token",
                 "generate an app-level token with connections:write (xapp-)")):
            if not env.get(key):
                continue
            try:
                answer = (await http.post(f"{api}/{method}", headers={"Authorization": f"Bearer {env[key]}"})).json()
                checks.append(Check(label, bool(answer.get("ok")), answer.get("error") or "valid", fix))
            except (httpx.HTTPError, ValueError) as exc:
                checks.append(Check(label, False, f"could not ask Slack ({type(exc).__name__})",
                                    "check the network or SLACK_API_URL"))
    return checks


async def database_check(env: Mapping[str, str]) -> Check:
    """QUEUE_DB_URL parses, and a PostgreSQL server answers there with a schema this da can run."""
    from da.queue import pgdatabase
    from da.queue.errors import QueueError
    from da.queue.settings import database_url, redact_url

    try:
        url = database_url(env) or ""
        return Check("database", True, f"{redact_url(url)} answers: {await pgdatabase.probe(url)}")
    except ConfigError as exc:
        return Check("database", False, str(exc), "fix QUEUE_DB_URL in .env")
    except QueueError as exc:
        return Check("database", False, exc.detail,
                     "start PostgreSQL there, create the database (createdb), or fix QUEUE_DB_URL")


def _agents(config_dir: Path) -> None:
    from da.worker.settings import load_agent_commands

    load_agent_commands(config_dir)


def _skills(config_dir: Path) -> None:
    from da.bot.skills import SKILLS_FILE, load_registry

    load_registry(config_dir / SKILLS_FILE)


def doctor(env: Mapping[str, str], cwd: Path, *, ask_agents: bool = False) -> tuple[list[str], bool]:
    checks = asyncio.run(run_checks(env, cwd, ask_agents=ask_agents))
    return [check.line() for check in checks], all(check.ok for check in checks)
