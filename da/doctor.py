"""`da doctor`: check this machine's setup and say what to fix, one line per check."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from da import agents, config, fleet, skills
from da.config import ConfigError
from da.handlers import agent_run, api

if TYPE_CHECKING:
    from da.worker.settings import WorkerSettings


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it passed, and the fix when it did not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}: {self.detail}" + (f"\n     fix: {self.fix}" if self.fix and not self.ok else "")


# A smoke test asks for one word; a logged-in agent answers well within this.
SMOKE_TIMEOUT = 90.0
SMOKE_PROMPT = "Reply with the single word OK."


@dataclass(frozen=True)
class Smoke:
    """What one smoke test found: installed, answering, what it said (or what is wrong) and how fast."""

    agent: str
    installed: bool
    ok: bool
    detail: str
    seconds: float = 0.0
    action: str = ""


async def smoke_test(agent: str, commands: Mapping[str, agents.AgentCommand], *,
                     timeout: float = SMOKE_TIMEOUT) -> Smoke:
    """Ask the agent a one-line prompt: proves it is installed, logged in and answering."""
    command = commands.get(agent)
    if command is None:
        return Smoke(agent, False, False, f"unknown agent; known: {', '.join(commands)}")
    argv = command.build(SMOKE_PROMPT)
    if shutil.which(argv[0]) is None:
        return Smoke(agent, False, False, "not installed", action=f"install {agent} on this machine")
    started = time.monotonic()
    finished = await agents.run_once(argv, timeout)
    if finished is None:
        return Smoke(agent, True, False, f"no answer within {timeout:g}s", timeout, "run it by hand")
    took = time.monotonic() - started
    returncode, answer, errors = finished
    result = api.classify(api.ProcessResult(returncode, answer, errors, duration=took),
                          machine="this machine", tool=argv[0], agent=agent)
    if result.status != api.DONE:
        return Smoke(agent, True, False, result.notes, took, result.action)
    return Smoke(agent, True, True, " ".join(answer.split())[:40] or "(empty answer)", took)


async def agent_answers(agent: str, commands: dict[str, agents.AgentCommand]) -> Check:
    """Ask the agent a one-line prompt: proves it is installed, logged in and answering."""
    smoke = await smoke_test(agent, commands)
    detail = f"answered in {smoke.seconds:.1f}s" if smoke.ok else smoke.detail
    return Check(f"agent {agent} answers", smoke.ok, detail, smoke.action)


async def supervision(agent: str, configured: Mapping[str, str], *, cwd: Path,
                      env: Mapping[str, str] | None = None) -> Check:
    """Whether the agent runs supervised (its ACP adapter answers `initialize`), else how to give it one."""
    from da.worker import agent_session  # the ACP client: loaded only when asked, as the worker's settings are

    name = f"agent {agent} supervised"
    command = agent_session.acp_command(agent, configured, path=(env or {}).get("PATH"), own_cli=False)
    if command is None:
        how = agent_run.ADAPTERS.get(agent)
        return Check(name, True, "no: runs headless; to supervise it, " + (f"{how} and " if how else "")
                     + f"set `agents: {{{agent}: {{acp: ...}}}}` in machines.yaml")
    shake = await agent_session.handshake(command, cwd=cwd, env=env)
    if not shake.ok:
        return Check(name, False, f"{' '.join(command.argv)} does not speak ACP: {shake.reason}",
                     f"reinstall the adapter or fix `agents: {{{agent}: {{acp: ...}}}}` in machines.yaml")
    who = " ".join(part for part in (shake.name, shake.version) if part)
    return Check(name, True, f"yes: {' '.join(command.argv)}" + (f" ({who})" if who else ""))


async def queue_checks(http: httpx.AsyncClient, url: str, secret: str, machine: str = "",
                       aliases: tuple[str, ...] = ()) -> list[Check]:
    """The queue answers, accepts this machine's credential, and (on a worker machine) lets it claim here."""
    try:
        health = await http.get(f"{url}/health")
        checks = [Check("queue", health.status_code == 200, f"{url} answers /health")]
        if secret:
            probe = await http.get(f"{url}/v1/whoami", headers={"x-secret-key": secret})
            if probe.status_code != 200:
                return [*checks, Check("secret", False, f"refused ({probe.status_code})", "use the same SECRET_KEY "
                                       "as the queue service, or a token from `da token create` as DA_TOKEN")]
            me = probe.json()
            who = "the admin secret" if me["kind"] == "admin" else f"{me['kind']} token {me['name']!r}"
            checks.append(Check("secret", True, f"accepted ({who})"))
            if machine and me["kind"] != "admin":
                checks.append(worker_token_check(me, machine, aliases))
        return checks
    except httpx.HTTPError as exc:
        return [Check("queue", False, f"unreachable at {url} ({type(exc).__name__})",
                      "start `da serve` there or fix QUEUE_URL")]


def worker_token_check(me: dict[str, Any], machine: str, aliases: tuple[str, ...]) -> Check:
    """Whether this token lets the worker claim as it will: its machine, with every one of its aliases."""
    fix = f"make one with `da token create worker {machine}` on the queue host (it takes the aliases in machines.yaml)"
    if me["kind"] != "worker":
        return Check("worker token", False, f"a {me['kind']} token cannot claim tasks", fix)
    if me["machine"] != machine:
        return Check("worker token", False, f"the token is for {me['machine']}, not {machine}", fix)
    missing = [alias for alias in aliases if alias not in me["aliases"]]
    if missing:
        return Check("worker token", False, f"the token does not allow alias(es) {', '.join(missing)}, so every "
                     "claim would be refused", fix + f" or with --aliases={','.join(aliases)}")
    return Check("worker token", True, f"claims as {machine}" + (f" and {', '.join(aliases)}" if aliases else ""))


async def run_checks(env: Mapping[str, str], cwd: Path, *, ask_agents: bool = False) -> list[Check]:
    """Every check that applies to what this machine is configured to run."""
    checks: list[Check] = []
    config_dir = config.config_dir(env, cwd)
    try:
        roster = fleet.load_fleet(config_dir)
        checks.append(Check("machines.yaml", True, f"{len(roster.machines)} machine(s) in {config_dir}"))
    except ConfigError as exc:
        checks.append(Check("machines.yaml", False, str(exc), "fix the file; see machines.yaml.example"))
    check, worker = await worker_check(env, cwd)
    if check is not None:
        checks.append(check)
    commands = dict(agents.DEFAULT_COMMANDS)
    try:
        commands = agents.load_commands(config_dir)
        checks.append(Check(agents.AGENTS_FILE, True, "parses"))
    except ConfigError as exc:
        checks.append(Check(agents.AGENTS_FILE, False, str(exc), "fix config/agents.yaml or delete it to use the "
                            "defaults"))
    try:
        skills.load_registry(config_dir / skills.SKILLS_FILE)
        checks.append(Check(skills.SKILLS_FILE, True, "parses"))
    except ConfigError as exc:
        checks.append(Check(skills.SKILLS_FILE, False, str(exc), "fix config/skills.yaml or delete it"))
    if env.get("QUEUE_DB_URL"):
        checks.append(await database_check(env))
    secret = env.get("DA_TOKEN", "") or env.get("SECRET_KEY", "")
    checks.append(Check("credential", bool(secret), ("DA_TOKEN" if env.get("DA_TOKEN") else "SECRET_KEY") + " set"
                        if secret else "neither DA_TOKEN nor SECRET_KEY is set",
                        "put this machine's token in .env as DA_TOKEN (`da token create` on the queue host)"))
    urls: tuple[str, ...] = ()
    try:
        urls = config.queue_urls(env)
    except ConfigError as exc:
        checks.append(Check("queue", False, str(exc), "fix QUEUE_URL in .env"))
    async with httpx.AsyncClient(timeout=5) as http:
        # Every replica: a worker fails over to each in turn, so each must answer and take the credential.
        aliases = worker.aliases if worker else tuple(config.env_list(env, "WORKER_ALIASES"))
        for url in urls:
            checks += await queue_checks(http, url, secret, env.get("MACHINE_NAME", ""), aliases)
        for agent in (worker.agents if worker else ()):
            if agent == "groq":
                checks.append(Check("agent groq", bool(env.get("GROQ_API_KEY")), "GROQ_API_KEY "
                                    + ("set" if env.get("GROQ_API_KEY") else "not set"), "add GROQ_API_KEY to .env"))
                continue
            found = shutil.which(agent)
            checks.append(Check(f"agent {agent}", found is not None, found or "not on PATH",
                                f"install it: da skills install {worker.machine if worker else ''} {agent}"))
            if found and ask_agents:
                checks.append(await agent_answers(agent, commands))
            if ask_agents and worker is not None:
                checks.append(await supervision(agent, worker.acp_commands, cwd=cwd, env=worker.process_env))
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


async def worker_check(env: Mapping[str, str], cwd: Path) -> tuple[Check | None, WorkerSettings | None]:
    """What this machine's worker runs, resolved as `da worker` (MACHINE_NAME set) or `da up` (the admin
    secret and no MACHINE_NAME) resolve it, so doctor and worker agree; a client-only machine has none."""
    from da.worker import registry
    from da.worker import settings as worker_settings
    from da.worker.errors import HandlerError

    up_host = not env.get("MACHINE_NAME") and bool(env.get("SECRET_KEY")) and not env.get("DA_TOKEN")
    if not env.get("MACHINE_NAME") and not up_host:
        return None, None
    try:
        handlers = registry.discover(config.handlers_path(env))
        worker = (worker_settings.local(env, handlers) if up_host
                  else await worker_settings.resolve(env, handlers, cwd))
    except (ConfigError, HandlerError) as exc:
        return Check("worker", False, str(exc), "fix MACHINE_NAME, machines.yaml or the handlers it names"), None
    who = f"{worker.machine} (the worker `da up` runs here)" if up_host else worker.machine
    return Check("worker", True, f"{who} runs {', '.join(worker.capabilities) or 'nothing'}; agents "
                 f"{', '.join(worker.agents) or 'none'} (from {worker.source})"), worker


async def database_check(env: Mapping[str, str]) -> Check:
    """QUEUE_DB_URL parses, and a PostgreSQL server answers there with a schema this da can run."""
    from da.queue import pgdatabase
    from da.queue.errors import DatabaseUnavailable, QueueError
    from da.queue.settings import database_url, redact_url

    fix = "start PostgreSQL there, create the database (createdb), or fix QUEUE_DB_URL"
    url = ""
    try:
        url = database_url(env) or ""
        return Check("database", True, f"{redact_url(url)} answers: {await pgdatabase.probe(url)}")
    except ConfigError as exc:
        return Check("database", False, str(exc), "fix QUEUE_DB_URL in .env")
    except DatabaseUnavailable as exc:
        # Said for itself, without the store's warning about changes: doctor only reads.
        why = pgdatabase.describe(exc.__cause__) if exc.__cause__ else "no answer"
        return Check("database", False, f"the queue database at {redact_url(url)} is not answering ({why})", fix)
    except QueueError as exc:
        return Check("database", False, exc.detail, fix)


def doctor(env: Mapping[str, str], cwd: Path, *, ask_agents: bool = False) -> tuple[list[str], bool]:
    """Every check's line, and whether all passed."""
    checks = asyncio.run(run_checks(env, cwd, ask_agents=ask_agents))
    return [check.line() for check in checks], all(check.ok for check in checks)
