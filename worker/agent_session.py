"""One supervised run of a coding agent over the Agent Client Protocol (ACP), so a person can
watch, approve, answer, steer and stop it instead of waiting blind for a headless CLI.

The agent's adapter (claude-agent-acp, codex-acp, `gemini --acp`) is started in the task's folder
in its own process group; da is the ACP client. A run opens a session (new, or the earlier one
loaded for a follow-up), sends the prompt, then any steering messages at the turn boundaries, and
reports through a `Reporter`: coalesced progress, asks that wait for a person (or expire as a
reject), and the agent's permission requests decided by a `Policy` first. Stopping sends
`session/cancel`, waits a grace period, then stops the process tree: `AgentSession.cancel()`
returns a cancelled result with the answer so far; cancelling the asyncio task running `run()`
does the same and then raises CancelledError. An adapter that dies or speaks broken JSON-RPC
ends the run as failed with the last output kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from da.queue import models
from da.queue.models import AskOption
from da.worker import acp_loading, orphans, output, runner

if TYPE_CHECKING:
    # Imported where a session runs (`acp_loading`): a worker running no supervised task, and
    # every `da` command, would pay for its models at each start.
    from acp import schema
    from acp.client.connection import ClientSideConnection

logger = logging.getLogger(__name__)

# The adapters da knows to look for on PATH when machines.yaml names none.
WELL_KNOWN_ACP: dict[str, tuple[str, ...]] = {
    "claude": ("claude-agent-acp",),
    "codex": ("codex-acp",),
    "gemini": ("gemini", "--acp"),
}
# Tool kinds that only look: allowed without asking unless a machine says otherwise.
DEFAULT_ALLOWED = frozenset({"read", "search", "think"})
# Tool kinds that change things or reach out: always asked unless a person allowed them always.
DEFAULT_ASKED = frozenset({"execute", "edit", "delete", "move", "fetch"})
# A person has this long to answer an ask (DA_ASK_TIMEOUT's default); then it is a reject.
DEFAULT_ASK_TIMEOUT = 15 * 60.0
# After session/cancel the agent gets this long to end its turn before its process tree is stopped.
DEFAULT_CANCEL_GRACE = 10.0
# An adapter that has not answered `initialize` by then is not going to.
INITIALIZE_TIMEOUT = 60.0
# Opening or loading a session (a long one is replayed) and switching modes take no longer than this.
OPEN_TIMEOUT = 300.0
# Progress goes out at most this often (a few updates a second at most).
PROGRESS_INTERVAL = 0.3
# Bounds of the progress record, so a chatty agent cannot grow it.
PROGRESS_TOOLS = 10
PROGRESS_PLAN = 30
PROGRESS_LINES = 20
PROGRESS_CHARS = 2000
FIELD_CHARS = 200
# More asks than this in one run is a flood: later requests are rejected without asking anyone.
MAX_ASKS = 100
# An ask's detail (a command, a diff) is cut here; the agent's log has the rest.
MAX_DETAIL = 4000
# The answer kept in a result, as agent_run keeps it.
MAX_ANSWER = 64 * 1024
# Raw text kept beyond MAX_ANSWER so a secret at the cut is still redacted whole.
REDACT_MARGIN = 4096
# The adapter's stderr kept for a failed run.
STDERR_TAIL = 16 * 1024
# One JSON-RPC line may carry a whole file's diff; longer than this is not a message.
MAX_LINE = 50 * 1024 * 1024
# A closed connection is followed this soon by the adapter's exit, when it is exiting.
EXIT_WAIT = 1.0
# The plan ask's own options: a plan is approved or sent back with a note.
APPROVE = "approve"
CHANGES = "changes"
PLAN_OPTIONS = ((APPROVE, "Approve"), (CHANGES, "Request changes"))
PLAN_MODE = "plan"
APPROVED_PROMPT = "The plan is approved: carry it out."
CHANGES_PROMPT = "Revise the plan."

T = TypeVar("T")
AskKind = Literal["permission", "plan", "question"]
StopCause = Literal["cancel", "budget", "timeout"]


@dataclass(frozen=True)
class AcpCommand:
    """The argv that speaks ACP for one agent."""

    agent: str
    argv: tuple[str, ...]


def acp_command(agent: str, configured: Mapping[str, str] | None = None, path: str | None = None, *,
                own_cli: bool = True) -> AcpCommand | None:
    """The ACP command for `agent`: machines.yaml's `agents: {name: {acp: ...}}`, else the
    well-known adapter when it is on PATH; None means the agent runs headless as before.

    Without `own_cli`, a mode of the agent's own CLI (`gemini --acp`) counts only when machines.yaml
    names it: an older CLI on PATH lacks the flag, and its headless run works."""
    if configured and (value := configured.get(agent, "").strip()):
        return AcpCommand(agent, tuple(shlex.split(value)))
    known = WELL_KNOWN_ACP.get(agent)
    if known and known[0] == agent and not own_cli:
        return None
    if known and (found := shutil.which(known[0], path=path)):
        return AcpCommand(agent, (found, *known[1:]))
    return None


@dataclass(frozen=True)
class Policy:
    """Which tool kinds run without asking, which always ask and which are refused; `yolo` is
    today's no-questions mode (refused kinds stay refused)."""

    allow: frozenset[str] = DEFAULT_ALLOWED
    ask: frozenset[str] = DEFAULT_ASKED
    refuse: frozenset[str] = frozenset()
    yolo: bool = False

    def decide(self, kind: str | None, granted: frozenset[str] | set[str] = frozenset()) -> Literal[
            "allow", "ask", "refuse"]:
        """Refused first; then what a person allowed always in this session; then the machine's lists."""
        if kind in self.refuse:
            return "refuse"
        if self.yolo or kind in granted:
            return "allow"
        if kind in self.ask:
            return "ask"
        return "allow" if kind in self.allow else "ask"


@dataclass(frozen=True)
class Ask:
    """A question for a person: a permission, a plan to approve, or the agent's own question."""

    id: str
    kind: AskKind
    title: str
    detail: str
    options: tuple[AskOption, ...]
    tool_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "detail": self.detail,
                "options": [{"id": option.id, "label": option.label} for option in self.options],
                "tool_kind": self.tool_kind}


@dataclass(frozen=True)
class Answer:
    """A person's answer to an ask: one of its options, and a note (a plan's requested changes)."""

    option: str
    note: str = ""
    answered_by: str = ""


class Reporter(Protocol):
    """Where a run reports: the worker turns these into the task's progress and asks."""

    async def progress(self, progress: dict[str, Any]) -> None:
        """The compact progress record; called at most every PROGRESS_INTERVAL seconds."""

    async def ask(self, ask: Ask) -> Answer:
        """Wait for a person's answer (several asks may be open at once); the run times it out,
        and cancels the wait when the turn stops."""

    async def expired(self, ask: Ask) -> None:
        """Nobody answered in time: the run rejected it."""


@dataclass
class Usage:
    """Tokens and cost, when the agent reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        if other.cost_usd is not None:
            self.cost_usd = round((self.cost_usd or 0.0) + other.cost_usd, 6)

    def to_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost_usd": self.cost_usd}


@dataclass(frozen=True)
class TurnRequest:
    """What to run: the agent's ACP command in a folder, the prompt, and the supervision settings."""

    command: AcpCommand
    cwd: Path
    prompt: str
    # An earlier run's session_id: a follow-up loads it instead of opening a new session.
    session_id: str | None = None
    additional_directories: tuple[str, ...] = ()
    plan: bool = False
    policy: Policy = field(default_factory=Policy)
    ask_timeout: float = DEFAULT_ASK_TIMEOUT
    budget_usd: float | None = None
    timeout: float | None = None
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    # The adapter's whole environment; None inherits the worker's.
    env: Mapping[str, str] | None = None
    redact: Callable[[str], str] = str
    # Where the adapter's process group is noted, so a restarted worker stops one a crash left behind.
    book: orphans.ProcessBook | None = None
    task_id: str = ""


@dataclass
class TurnResult:
    """How the run ended, the answer and what it cost; `reason` is one sentence unless it is done."""

    status: str
    answer: str = ""
    stop_reason: str | None = None
    session_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    turns: list[Usage] = field(default_factory=list)
    reason: str = ""
    output: str = ""
    asks: int = 0
    notes: list[str] = field(default_factory=list)
    # The answer's end is kept (MAX_ANSWER characters); this many were cut before it.
    answer_cut: int = 0
    # Steering messages the run stopped before sending, so the queue can keep them.
    undelivered: list[str] = field(default_factory=list)
    supervised: bool = True

    def to_details(self) -> dict[str, Any]:
        """The fields a task's result carries."""
        details: dict[str, Any] = {
            "answer": self.answer, "stop_reason": self.stop_reason, "usage": self.usage.to_dict(),
            "turns": [turn.to_dict() for turn in self.turns], "asks": self.asks, "supervised": self.supervised}
        if self.answer_cut:
            details["answer_truncated"] = f"first {self.answer_cut} characters cut"
        if self.undelivered:
            details["undelivered_messages"] = self.undelivered
        if self.session_id:
            details["session_id"] = self.session_id
        if self.output:
            details["stderr"] = self.output
        if self.notes:
            details["supervision_notes"] = self.notes
        return details


class _Stopped(Exception):
    """The run was stopped (cancel, budget, timeout) while waiting for the adapter."""


class _Failed(Exception):
    """The run cannot go on; the message is the result's one sentence."""

    def __init__(self, reason: str, status: str = models.FAILED) -> None:
        super().__init__(reason)
        self.status = status


class AgentSession:
    """One supervised run; `say` and `cancel` may be called from other tasks while `run` goes on."""

    def __init__(self, request: TurnRequest, reporter: Reporter) -> None:
        self.request = request
        self.reporter = reporter
        self._redact = request.redact
        self._messages: deque[str] = deque()
        self._interrupt = asyncio.Event()
        self._stop: StopCause | None = None
        self._stopped = asyncio.Event()
        self._turn_cancelled = asyncio.Event()
        self._granted: set[str] = set()
        self._asks = 0
        self._flooded = False
        self._notes: list[str] = []
        self._session_id: str | None = None
        self._loading = False
        self._mode: str | None = None
        self._normal_mode = "default"
        self._plan_asked = False
        self._plan_approved = False
        self._answer: list[str] = []
        self._answer_size = 0
        self._answer_cut = 0
        self._plan: list[dict[str, str]] = []
        self._tools: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._context: dict[str, int] = {}
        self._cost_seen: float | None = None
        self._cost_at_turn: float = 0.0
        self._run_usage = Usage()
        self._turns: list[Usage] = []
        self._dirty = asyncio.Event()
        self._broken: str | None = None
        self._stderr = output.Tail(STDERR_TAIL)
        self._process: asyncio.subprocess.Process | None = None
        self._killed = False
        self._stderr_pump: asyncio.Task[None] | None = None
        self.initialized: schema.InitializeResponse | None = None

    def say(self, text: str, *, interrupt: bool = False) -> None:
        """A steering message: the next prompt at the turn boundary, or at once with `interrupt`."""
        if interrupt:
            self._messages.appendleft(text)
            self._interrupt.set()
        else:
            self._messages.append(text)

    def cancel(self) -> None:
        """Stop the run: session/cancel first, the process tree after the grace period."""
        self._stop_run("cancel")

    def _stop_run(self, cause: StopCause) -> None:
        if self._stop is None:
            self._stop = cause
        self._interrupt.set()
        self._stopped.set()
        # An ask open between turns (a plan at the turn's end) is withdrawn as well.
        self._turn_cancelled.set()

    async def run(self) -> TurnResult:
        """Start the adapter, run the prompt and the steering messages, and stop it again."""
        return await self._with_adapter(self._drive)

    async def _with_adapter(self, body: Callable[[ClientSideConnection], Awaitable[tuple[str, str, str | None]]]
                            ) -> TurnResult:
        """Start the adapter, run `body` on the connection, and stop the adapter whatever happened."""
        # The first run loads `acp` on a thread: CPU that must not hold up the heartbeats.
        await asyncio.to_thread(acp_loading.load_acp)
        import acp

        request = self.request

        async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                *request.command.argv, cwd=request.cwd, env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
                limit=MAX_LINE)

        env = dict(request.env) if request.env is not None else dict(os.environ)
        try:
            process = await (start(env) if request.book is None else
                             request.book.spawn(request.task_id, env, start))
        except (FileNotFoundError, PermissionError) as exc:
            return self._result(models.FAILED, f"cannot start {request.command.argv[0]} for {request.command.agent}: "
                                f"{exc.strerror or exc}; install the adapter or fix `acp` in machines.yaml")
        self._process = process
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        messages = asyncio.StreamReader(limit=MAX_LINE)
        self._stderr_pump = asyncio.create_task(self._pump_stderr(process.stderr))
        pumps = [asyncio.create_task(self._pump_stdout(process.stdout, messages)), self._stderr_pump]
        flusher = asyncio.create_task(self._flush_progress())
        deadline = (asyncio.get_running_loop().call_later(request.timeout, self._stop_run, "timeout")
                    if request.timeout else None)
        import pydantic  # loaded with acp already; a worker that never supervises a run never loads it

        conn = acp.connect_to_agent(cast(acp.Client, _Client(self)), process.stdin, messages)
        try:
            status, reason, stop_reason = await body(conn)
        except _Failed as exc:
            status, reason, stop_reason = exc.status, str(exc), None
        except pydantic.ValidationError as exc:
            problems = exc.errors()
            where = ".".join(str(part) for part in problems[0]["loc"]) if problems else ""
            status, stop_reason = models.FAILED, None
            reason = (f"{request.command.agent}'s adapter sent a message that is not ACP ({exc.title}"
                      f"{' ' + where if where else ''}: {problems[0]['msg'] if problems else exc})")
        finally:
            if deadline:
                deadline.cancel()
            await conn.close()
            await self._end_process(process)
            if request.book is not None:
                request.book.forget(process.pid)
            await asyncio.gather(*pumps, return_exceptions=True)
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._send_progress()
        return self._result(status, reason, stop_reason)

    def _result(self, status: str, reason: str, stop_reason: str | None = None) -> TurnResult:
        full = self._redact("".join(self._answer))
        return TurnResult(status=status, answer=full[-MAX_ANSWER:], stop_reason=stop_reason,
                          answer_cut=self._answer_cut + max(0, len(full) - MAX_ANSWER),
                          undelivered=list(self._messages),
                          session_id=self._session_id, usage=self._run_usage, turns=self._turns, reason=reason,
                          output=self._redact(self._stderr.text()) if status != models.DONE else "", asks=self._asks,
                          notes=self._notes)

    async def _initialize(self, conn: ClientSideConnection) -> schema.InitializeResponse:
        import acp
        from acp import schema

        agent = self.request.command.agent
        try:
            self.initialized = await self._unless_stopped(conn.initialize(
                protocol_version=acp.PROTOCOL_VERSION, client_capabilities=schema.ClientCapabilities(),
                client_info=schema.Implementation(name="da", version="1")), INITIALIZE_TIMEOUT)
        except TimeoutError as exc:
            raise _Failed(f"{agent}'s adapter did not answer `initialize` within {INITIALIZE_TIMEOUT:g}s") from exc
        except (ConnectionError, acp.RequestError) as exc:
            raise await self._broken_run("initialize", exc) from exc
        return self.initialized

    async def _unless_stopped(self, request: Awaitable[T], timeout: float) -> T:
        """A request's answer; _Stopped when the run is stopped first, TimeoutError after `timeout`."""
        answer = asyncio.ensure_future(request)
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({answer, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not answer.done():
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
        if answer in done:
            return answer.result()
        if stopped in done:
            raise _Stopped
        raise TimeoutError

    async def _initialize_only(self, conn: ClientSideConnection) -> tuple[str, str, str | None]:
        await self._initialize(conn)
        return models.DONE, "", None

    async def _drive(self, conn: ClientSideConnection) -> tuple[str, str, str | None]:
        request = self.request
        agent = request.command.agent
        stop_reason: str | None = None
        try:
            capabilities = (await self._initialize(conn)).agent_capabilities
            session_caps = getattr(capabilities, "session_capabilities", None)
            directories = list(request.additional_directories)
            if directories and getattr(session_caps, "additional_directories", None) is None:
                self._notes.append(f"{agent}'s adapter cannot open more than one folder; it sees only {request.cwd}")
                directories = []
            modes = await self._open_session(conn, capabilities, directories)
            if request.plan:
                await self._enter_plan_mode(conn, modes)
            text: str | None = request.prompt
            while text is not None and self._stop is None:
                self._interrupt.clear()
                stop_reason = await self._prompt(conn, text)
                text = await self._next_prompt(conn, stop_reason)
        except _Stopped:
            pass
        if self._stop == "budget":
            spent = self._run_usage.cost_usd or 0.0
            return (models.NEEDS_HUMAN, f"the agent's cost reached ${spent:.2f}, past the task's budget of "
                    f"${request.budget_usd:.2f}; the turn was stopped (raise the budget to go on)", stop_reason)
        if self._stop == "timeout":
            return models.FAILED, f"the agent ran past the task's timeout of {request.timeout:g}s and was stopped", \
                stop_reason
        if self._stop == "cancel":
            return models.CANCELLED, "cancelled while the agent was working; the answer so far is kept", stop_reason
        if stop_reason in ("refusal", "max_tokens", "max_turn_requests"):
            return models.FAILED, f"the agent stopped its turn: {stop_reason}", stop_reason
        return models.DONE, "", stop_reason

    async def _open_session(self, conn: ClientSideConnection, capabilities: Any,
                            directories: list[str]) -> Any:
        """A new session, or the earlier one loaded; returns the session's modes."""
        import acp

        request = self.request
        agent = request.command.agent
        cwd = str(request.cwd)
        try:
            if request.session_id is None:
                session = await self._unless_stopped(
                    conn.new_session(cwd=cwd, additional_directories=directories or None), OPEN_TIMEOUT)
                self._session_id = session.session_id
                return session.modes
            if not getattr(capabilities, "load_session", False):
                raise _Failed(f"{agent}'s adapter cannot load an earlier session", models.NEEDS_HUMAN)
            self._loading = True
            try:
                loaded = await self._unless_stopped(conn.load_session(
                    cwd=cwd, session_id=request.session_id, additional_directories=directories or None), OPEN_TIMEOUT)
            finally:
                # Let the replayed history already received be handled (and ignored) as history.
                await asyncio.sleep(0)
                self._loading = False
            self._session_id = request.session_id
            return loaded.modes if loaded else None
        except acp.RequestError as exc:
            if request.session_id is not None:
                raise _Failed(f"{agent} has no session {request.session_id} in {cwd}: {exc}; resume it from the "
                              "folder it ran in, or start a new task", models.NEEDS_HUMAN) from exc
            raise _Failed(f"{agent}'s adapter refused to open a session: {exc}") from exc
        except ConnectionError as exc:
            raise await self._broken_run("opening the session", exc) from exc
        except TimeoutError as exc:
            raise _Failed(f"{agent}'s adapter did not open the session within {OPEN_TIMEOUT:g}s") from exc

    async def _enter_plan_mode(self, conn: ClientSideConnection, modes: Any) -> None:
        available = [mode.id for mode in getattr(modes, "available_modes", None) or []]
        if PLAN_MODE not in available:
            raise _Failed(f"{self.request.command.agent} has no plan mode (its modes: {', '.join(available) or 'none'})"
                          "; run the task without --plan", models.NEEDS_HUMAN)
        current = getattr(modes, "current_mode_id", None)
        self._normal_mode = current if current and current != PLAN_MODE else next(
            (mode for mode in available if mode != PLAN_MODE), "default")
        await self._set_mode(conn, PLAN_MODE)

    async def _set_mode(self, conn: ClientSideConnection, mode: str) -> None:
        import acp

        assert self._session_id is not None
        try:
            await self._unless_stopped(conn.set_session_mode(session_id=self._session_id, mode_id=mode),
                                       OPEN_TIMEOUT)
        except acp.RequestError as exc:
            raise _Failed(f"{self.request.command.agent} refused to switch to its {mode} mode: {exc}") from exc
        except ConnectionError as exc:
            raise await self._broken_run(f"switching to {mode} mode", exc) from exc
        except TimeoutError as exc:
            raise _Failed(f"{self.request.command.agent} did not switch to its {mode} mode within "
                          f"{OPEN_TIMEOUT:g}s") from exc
        self._mode = mode
        self._dirty.set()

    async def _prompt(self, conn: ClientSideConnection, text: str) -> str | None:
        """One prompt turn; on an interrupt the agent is cancelled, then stopped after the grace period."""
        import acp

        assert self._session_id is not None
        self._turn_cancelled = asyncio.Event()
        self._plan_asked = False
        self._cost_at_turn = self._cost_seen or 0.0
        turn = asyncio.create_task(conn.prompt(session_id=self._session_id, prompt=[acp.text_block(text)]))
        interrupted = asyncio.create_task(self._interrupt.wait())
        try:
            await asyncio.wait({turn, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The worker cancelled the task running this: still session/cancel first, then the tree.
            self._stop_run("cancel")
            await self._cancel_turn(conn, turn)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, acp.RequestError):
                await turn
            raise
        finally:
            interrupted.cancel()
        if not turn.done():
            await self._cancel_turn(conn, turn)
        try:
            response = await turn
        except acp.RequestError as exc:
            raise _Failed(f"{self.request.command.agent} refused the prompt: {exc}") from exc
        except ConnectionError as exc:
            if self._killed:
                return None
            raise await self._broken_run("its turn", exc) from exc
        self._turns.append(self._turn_usage(response))
        self._dirty.set()
        return str(response.stop_reason)

    async def _cancel_turn(self, conn: ClientSideConnection, turn: asyncio.Task[Any]) -> None:
        """session/cancel, then the grace period for the agent to end its turn, then its process tree."""
        assert self._session_id is not None and self._process is not None
        self._turn_cancelled.set()
        with contextlib.suppress(ConnectionError):
            await conn.cancel(session_id=self._session_id)
        done, _ = await asyncio.wait({turn}, timeout=self.request.cancel_grace)
        if not done:
            self._killed = True
            await runner.terminate_group(self._process)
            self._notes.append(f"the agent did not end its turn within {self.request.cancel_grace:g}s of "
                               "session/cancel and was stopped")
            self._stop_run("cancel")

    def _turn_usage(self, response: Any) -> Usage:
        usage = Usage()
        if reported := getattr(response, "usage", None):
            usage.input_tokens, usage.output_tokens = reported.input_tokens, reported.output_tokens
        if self._cost_seen is not None:
            usage.cost_usd = round(max(0.0, self._cost_seen - self._cost_at_turn), 6)
        self._run_usage.add(Usage(usage.input_tokens, usage.output_tokens))
        return usage

    async def _next_prompt(self, conn: ClientSideConnection, stop_reason: str | None) -> str | None:
        """What to send after a turn: a plan's approval or changes, else the next steering message."""
        if self._stop is not None:
            return None
        if (self.request.plan and self._mode == PLAN_MODE and stop_reason == "end_turn" and not self._plan_asked
                and not self._plan_approved):
            answer = await self._ask_plan(self._plan_text())
            if answer is None:
                return None
            if answer.option == APPROVE:
                self._plan_approved = True
                await self._set_mode(conn, self._normal_mode)
                return APPROVED_PROMPT
            return answer.note or CHANGES_PROMPT
        if self._plan_approved and self._mode == PLAN_MODE:
            await self._set_mode(conn, self._normal_mode)
        return self._messages.popleft() if self._messages else None

    def _plan_text(self) -> str:
        entries = "\n".join(f"{number}. {entry['content']}" for number, entry in enumerate(self._plan, 1))
        return entries or self._answer_text()[-MAX_DETAIL:]

    async def _broken_run(self, during: str, exc: Exception) -> _Failed:
        """Why the connection ended: broken JSON-RPC, or the adapter's exit and its last words."""
        agent = self.request.command.agent
        if self._broken is not None:
            return _Failed(f"{agent}'s adapter spoke broken JSON-RPC during {during}: {self._broken!r}")
        if self._process is not None:
            # Its stdout closes a moment before its exit status and last stderr are in.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._process.wait()), EXIT_WAIT)
            if self._stderr_pump is not None:
                await asyncio.wait({self._stderr_pump}, timeout=EXIT_WAIT)
        code = self._process.returncode if self._process else None
        last = self._stderr.text().strip().splitlines()
        tail = f": {self._redact(last[-1])[:300]}" if last else ""
        if code is not None:
            return _Failed(f"{agent}'s adapter exited with status {code} during {during}{tail}")
        return _Failed(f"{agent}'s adapter closed the connection during {during} ({exc}){tail}")

    async def _pump_stdout(self, stream: asyncio.StreamReader, messages: asyncio.StreamReader) -> None:
        """Pass JSON-RPC lines on; the first line that is not one ends the connection."""
        try:
            while line := await stream.readline():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                    self._broken = self._redact(line.decode("utf-8", "replace").strip())[:300]
                    return
                messages.feed_data(line if line.endswith(b"\n") else line + b"\n")
        except (ValueError, asyncio.LimitOverrunError):
            self._broken = f"a line longer than {MAX_LINE} bytes"
        finally:
            messages.feed_eof()

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(64 * 1024):
            self._stderr.add(chunk)

    async def _end_process(self, process: asyncio.subprocess.Process) -> None:
        """Close stdin so the adapter exits by itself; stop the tree if it does not."""
        if process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), runner.KILL_GRACE)
        except TimeoutError:
            await runner.terminate_group(process)
        runner.kill_group(process)

    # Updates from the agent

    def on_update(self, update: Any) -> None:
        kind = getattr(update, "session_update", None)
        if kind == "usage_update":
            self._on_usage(update)
            return
        if self._loading:
            return
        if kind == "agent_message_chunk":
            text = getattr(update.content, "text", None)
            if isinstance(text, str):
                self._add_answer(text)
        elif kind == "plan":
            self._plan = [{"content": self._short(entry.content), "status": entry.status}
                          for entry in update.entries[:PROGRESS_PLAN]]
        elif kind in ("tool_call", "tool_call_update"):
            self._on_tool(update)
        elif kind == "current_mode_update":
            self._mode = update.current_mode_id
        else:
            return
        self._dirty.set()

    def _on_tool(self, update: Any) -> None:
        tool = self._tools.pop(update.tool_call_id, None) or {"id": update.tool_call_id, "title": "", "kind": None,
                                                               "status": None}
        for name in ("title", "kind", "status"):
            if (value := getattr(update, name, None)) is not None:
                tool[name] = self._short(value) if name == "title" else value
        self._tools[update.tool_call_id] = tool
        while len(self._tools) > PROGRESS_TOOLS:
            self._tools.popitem(last=False)

    def _on_usage(self, update: Any) -> None:
        self._context = {"used": update.used, "size": update.size}
        cost = getattr(update, "cost", None)
        if cost is None:
            return
        amount = float(cost.amount)
        if self._loading:
            # The session's cost so far, replayed with its history: the baseline, not this run's.
            self._cost_seen = amount
            return
        previous = self._cost_seen if self._cost_seen is not None else 0.0
        self._cost_seen = amount
        self._run_usage.cost_usd = round((self._run_usage.cost_usd or 0.0) + max(0.0, amount - previous), 6)
        self._dirty.set()
        budget = self.request.budget_usd
        if budget is not None and (self._run_usage.cost_usd or 0.0) > budget:
            self._stop_run("budget")

    def _add_answer(self, text: str) -> None:
        """Keep the answer's end, with room for a secret cut at the edge to be redacted whole."""
        self._answer.append(text)
        self._answer_size += len(text)
        if self._answer_size > 2 * (MAX_ANSWER + REDACT_MARGIN):
            kept = "".join(self._answer)[-(MAX_ANSWER + REDACT_MARGIN):]
            self._answer_cut += self._answer_size - len(kept)
            self._answer, self._answer_size = [kept], len(kept)

    def _answer_text(self) -> str:
        text = self._redact("".join(self._answer))
        if self._answer_cut or len(text) > MAX_ANSWER:
            return text[-MAX_ANSWER:]
        return text

    def _short(self, text: str) -> str:
        return self._redact(str(text))[:FIELD_CHARS]

    def progress(self) -> dict[str, Any]:
        """The bounded progress record: plan, the last tool calls, the answer's last lines, usage."""
        text = self._answer_text()[-PROGRESS_CHARS * 2:]
        lines = "\n".join(text.splitlines()[-PROGRESS_LINES:])[-PROGRESS_CHARS:]
        return {"plan": list(self._plan), "tools": [dict(tool) for tool in self._tools.values()],
                "answer_tail": lines, "mode": self._mode, "usage": self._run_usage.to_dict(),
                "context": dict(self._context), "turns": len(self._turns), "supervised": True}

    async def _flush_progress(self) -> None:
        while True:
            await self._dirty.wait()
            await self._send_progress()
            await asyncio.sleep(PROGRESS_INTERVAL)

    async def _send_progress(self) -> None:
        if not self._dirty.is_set():
            return
        self._dirty.clear()
        try:
            await self.reporter.progress(self.progress())
        except Exception:
            # The queue being away must not end the agent's turn; the next update tries again.
            logger.warning("agent session: progress not delivered", exc_info=True)

    # Permission requests

    async def on_permission(self, tool_call: Any, options: list[Any]) -> schema.RequestPermissionResponse:
        if self._turn_cancelled.is_set() or self._stop is not None:
            return _cancelled()
        kind = getattr(tool_call, "kind", None)
        if kind == "switch_mode":
            return await self._permission_for_plan(tool_call, options)
        if _is_question(options):
            if self.request.policy.yolo:
                return _selected(options[0].option_id)
            return await self._ask_for("question", tool_call, options)
        decision = self.request.policy.decide(kind, self._granted)
        if decision == "allow":
            return _selected_kind(options, "allow_once", "allow_always")
        if decision == "refuse":
            self._notes.append(f"refused by policy: {self._short(tool_call.title or kind or 'a tool call')}")
            return _selected_kind(options, "reject_once", "reject_always")
        return await self._ask_for("permission", tool_call, options)

    async def _ask_for(self, kind: AskKind, tool_call: Any, options: list[Any]) -> schema.RequestPermissionResponse:
        ask = self._new_ask(kind, tool_call, tuple(AskOption(option.option_id, self._short(option.name))
                                                    for option in options))
        if ask is None:
            return _selected_kind(options, "reject_once", "reject_always")
        answer = await self._wait_answer(ask)
        if answer is None:
            return _cancelled() if self._turn_cancelled.is_set() else _selected_kind(options, "reject_once",
                                                                                    "reject_always")
        chosen = next((option for option in options if option.option_id == answer.option), None)
        if chosen is None:
            return _selected_kind(options, "reject_once", "reject_always")
        if chosen.kind == "allow_always" and kind == "permission" and ask.tool_kind:
            self._granted.add(ask.tool_kind)
        return _selected(chosen.option_id)

    async def _permission_for_plan(self, tool_call: Any, options: list[Any]) -> schema.RequestPermissionResponse:
        """The agent asks to leave plan mode (Claude's ExitPlanMode): a plan ask, approve or changes."""
        self._plan_asked = True
        if self.request.policy.yolo:
            self._plan_approved = True
            return _selected_kind(options, "allow_once", "allow_always")
        answer = await self._ask_plan(_tool_detail(tool_call) or self._plan_text(), tool_call)
        if answer is None:
            return _cancelled() if self._turn_cancelled.is_set() else _selected_kind(options, "reject_once",
                                                                                    "reject_always")
        if answer.option == APPROVE:
            self._plan_approved = True
            return _selected_kind(options, "allow_once", "allow_always")
        self._messages.appendleft(answer.note or CHANGES_PROMPT)
        return _selected_kind(options, "reject_once", "reject_always")

    async def _ask_plan(self, detail: str, tool_call: Any = None) -> Answer | None:
        title = getattr(tool_call, "title", None) or "Approve the plan?"
        ask = self._new_ask("plan", tool_call, tuple(AskOption(*option) for option in PLAN_OPTIONS),
                            title=title, detail=detail)
        return await self._wait_answer(ask) if ask else None

    def _new_ask(self, kind: AskKind, tool_call: Any, options: tuple[AskOption, ...], *, title: str | None = None,
                 detail: str | None = None) -> Ask | None:
        if self._asks >= MAX_ASKS:
            if not self._flooded:
                self._flooded = True
                self._notes.append(f"the agent asked more than {MAX_ASKS} times; later requests were rejected "
                                   "without asking")
            return None
        self._asks += 1
        return Ask(id=f"ask-{self._asks}", kind=kind,
                   title=self._short(title or getattr(tool_call, "title", None) or "The agent asks"),
                   detail=self._redact(detail if detail is not None else _tool_detail(tool_call))[:MAX_DETAIL],
                   options=options, tool_kind=getattr(tool_call, "kind", None))

    async def _wait_answer(self, ask: Ask) -> Answer | None:
        """The person's answer; None when the turn was cancelled or the ask expired (recorded)."""
        asking = asyncio.create_task(self.reporter.ask(ask))
        cancelled = asyncio.create_task(self._turn_cancelled.wait())
        try:
            done, _ = await asyncio.wait({asking, cancelled}, timeout=self.request.ask_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not asking.done():
                asking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asking
        if asking in done and asking.exception() is None:
            return asking.result()
        if asking in done:
            logger.warning("agent session: ask %s failed, rejected", ask.id, exc_info=asking.exception())
            return None
        if not done:
            self._notes.append(f"nobody answered {ask.kind} {ask.title!r} within {self.request.ask_timeout:g}s; "
                               "rejected")
            try:
                await self.reporter.expired(ask)
            except Exception:
                logger.warning("agent session: expiry of %s not delivered", ask.id, exc_info=True)
        return None


class _Client:
    """The ACP client side the adapter talks to; everything else it may call is not offered."""

    def __init__(self, session: AgentSession) -> None:
        self._session = session

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self._session.on_update(update)

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any],
                                 **kwargs: Any) -> schema.RequestPermissionResponse:
        return await self._session.on_permission(tool_call, options)


@dataclass(frozen=True)
class Handshake:
    """What an adapter answered to `initialize` (who it is, what it can do), or why it did not."""

    agent: str
    ok: bool
    reason: str = ""
    name: str | None = None
    version: str | None = None
    protocol_version: int | None = None
    load_session: bool = False
    capabilities: dict[str, Any] = field(default_factory=dict)


class _Unattended:
    """A reporter for a run that reports nothing and asks nobody (a handshake)."""

    async def progress(self, progress: dict[str, Any]) -> None:
        return None

    async def ask(self, ask: Ask) -> Answer:
        return Answer("")

    async def expired(self, ask: Ask) -> None:
        return None


async def handshake(command: AcpCommand, *, cwd: Path, env: Mapping[str, str] | None = None) -> Handshake:
    """Start the adapter and ask only `initialize`, which needs no login or network: whether an
    agent can run supervised (`da doctor --agents`, `da test`)."""
    session = AgentSession(TurnRequest(command=command, cwd=cwd, prompt="", env=env), _Unattended())
    result = await session._with_adapter(session._initialize_only)
    init = session.initialized
    if result.status != models.DONE or init is None:
        return Handshake(command.agent, False, result.reason)
    info = init.agent_info
    return Handshake(command.agent, True, name=info.name if info else None, version=info.version if info else None,
                     protocol_version=init.protocol_version,
                     load_session=bool(getattr(init.agent_capabilities, "load_session", False)),
                     capabilities=init.agent_capabilities.model_dump(mode="json", by_alias=True, exclude_none=True)
                     if init.agent_capabilities else {})


async def run_turn(request: TurnRequest, reporter: Reporter) -> TurnResult:
    """Run one supervised turn with nobody steering or cancelling it."""
    return await AgentSession(request, reporter).run()


def _is_question(options: list[Any]) -> bool:
    """Choices rather than allow/reject: more than one option of the same allowing kind."""
    kinds = [option.kind for option in options]
    return kinds.count("allow_once") > 1 or kinds.count("allow_always") > 1


def _tool_detail(tool_call: Any) -> str:
    """What a person needs to judge a tool call: its command or input, its diffs and text."""
    if tool_call is None:
        return ""
    parts: list[str] = []
    raw = getattr(tool_call, "raw_input", None)
    if isinstance(raw, dict) and isinstance(raw.get("command"), str):
        parts.append(raw["command"])
    elif isinstance(raw, dict) and isinstance(raw.get("plan"), str):
        parts.append(raw["plan"])
    for item in getattr(tool_call, "content", None) or []:
        if getattr(item, "type", None) == "diff":
            parts.append(f"--- {item.path}\n{(item.old_text or '')[:MAX_DETAIL]}\n+++ {item.path}\n"
                         f"{item.new_text[:MAX_DETAIL]}")
        elif (text := getattr(getattr(item, "content", None), "text", None)) and text not in parts:
            parts.append(text)
    if not parts and raw is not None:
        parts.append(json.dumps(raw, default=str)[:MAX_DETAIL])
    return "\n".join(parts)[:MAX_DETAIL]


def _selected(option_id: str) -> schema.RequestPermissionResponse:
    from acp import schema

    return schema.RequestPermissionResponse(outcome=schema.AllowedOutcome(outcome="selected", option_id=option_id))


def _cancelled() -> schema.RequestPermissionResponse:
    """The answer ACP requires to a pending permission request once the client has cancelled the turn."""
    from acp import schema

    return schema.RequestPermissionResponse.model_validate_json('{"outcome": {"outcome": "cancelled"}}')


def _selected_kind(options: list[Any], *kinds: str) -> schema.RequestPermissionResponse:
    """The first option of the first kind offered; cancelled when the agent offered none of them."""
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return _selected(option.option_id)
    return _cancelled()
