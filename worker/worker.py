"""The worker process: claim what this machine can run, run it, heartbeat, report.

Guarantees: a report is retried until the queue acknowledges it (a queue restart mid-task
loses nothing); a task is never started before the queue has recorded the start, so a task
left `claimed` by a crash never ran; a lost lease or a cancel kills the task's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from da.handlers.api import DONE, FAILED, NEEDS_HUMAN, NeedsHuman, Result
from da.queue import errors as queue_errors
from da.queue import models as queue_models
from da.queue.client import ClaimedTask, Heartbeat, QueueClient
from da.worker import attachments, orphans, report, runner, workspace
from da.worker import lease as leases
from da.worker.context import TaskContext
from da.worker.errors import CredentialRefused
from da.worker.registry import Handler
from da.worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

# Backoff while the queue is unreachable: start fast, cap so a restarted queue is found soon.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 15.0
# A queue whose database is failing over answers 503 at once (cheap to ask) and is back within
# seconds of a promotion, so look again sooner than for a queue that does not answer at all.
DATABASE_BACKOFF = 2.0
# How long a claim in flight may still answer once the worker starts stopping.
CLAIM_SETTLE = 1.0
# Keep this many trailing characters of a handler's traceback in the result.
TRACEBACK_TAIL = 4000


class LeaseGone(Exception):
    """The queue says this worker no longer holds the task."""


class Worker:
    """One machine's worker; `async_run()` until `stop()`."""

    def __init__(self, settings: WorkerSettings, handlers: dict[str, Handler], *,
                 client: QueueClient | None = None) -> None:
        self.settings = settings
        self.handlers = handlers
        self.client = client or QueueClient(list(settings.queue_urls), settings.secret)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._shutdown_note: str | None = None
        # Why a task was stopped from the queue's side (cancel, lost lease): nothing to report then.
        self._cancel_reason: dict[str, str] = {}
        self._agents_running: set[str] = set()
        # Set when the worker stopped because the queue kept refusing its credential: why.
        self.gave_up: str | None = None
        # The lease the queue grants, once known: every request's timeout is bounded by it.
        self._lease_hint: float | None = settings.lease

    # ---- the claim loop --------------------------------------------------------------

    async def async_run(self) -> None:
        """Claim and run tasks until stopped, then drain within the shutdown grace."""
        logger.info("worker %s: capabilities %s, agents %s (from %s), up to %d at once, queue %s",
                    self.settings.machine, ",".join(self.settings.capabilities) or "-",
                    ",".join(self.settings.agents) or "-", self.settings.source, self.settings.max_concurrent,
                    ", ".join(self.settings.queue_urls))
        retry_safe = report.claim_filter(self.settings, self.handlers)["retry_safe"]
        # Before any claim: a task run again must not overlap what a killed worker left running.
        await orphans.ProcessBook.of(self.settings.log_dir, self.settings.machine).stop_leftovers()
        backoff = FIRST_BACKOFF
        unreachable = False
        refused_since: float | None = None
        try:
            while not self.stopping.is_set():
                capabilities = self._claimable()
                if len(self.running) >= self.settings.max_concurrent or not capabilities:
                    self._slot_free.clear()
                    await self._wait_any(self._slot_free.wait())
                    continue
                try:
                    claimed = await self._claim(retry_safe, capabilities)
                except (queue_errors.QueueUnreachable, queue_errors.DatabaseUnavailable) as exc:
                    unreachable = True
                    logger.warning("queue unreachable (%s); retrying in %.1fs", exc.detail, backoff)
                    await self._wait_any(asyncio.sleep(backoff))
                    backoff = next_backoff(backoff, exc)
                    continue
                except (queue_errors.Unauthorized, queue_errors.Forbidden) as exc:
                    refused_since = refused_since or time.monotonic()
                    if time.monotonic() - refused_since >= self.settings.give_up_after:
                        self.gave_up = (f"stopping: refused for {self.settings.give_up_after:.0f}s: "
                                        f"{self._credential_refused(exc)}")
                        logger.error("%s", self.gave_up)
                        break
                    logger.error("claim refused: %s; retrying in %.1fs", self._credential_refused(exc), backoff)
                    await self._wait_any(asyncio.sleep(backoff))
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                except queue_errors.QueueError as exc:
                    logger.error("claim refused: %s; retrying in %.1fs", exc.detail, backoff)
                    await self._wait_any(asyncio.sleep(backoff))
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                if unreachable:
                    logger.info("queue reachable again at %s", self.client.url)
                    unreachable = False
                refused_since = None
                backoff = FIRST_BACKOFF
                if claimed is not None:
                    self._start(claimed)
        finally:
            await self._drain()
            await self.client.close()

    def _claimable(self) -> list[str]:
        """The capabilities to claim with: agent tasks only while fewer than `max_parallel` run."""
        if len(self._agents_running) < self.settings.max_parallel:
            return list(self.settings.capabilities)
        return [kind for kind in self.settings.capabilities if kind != workspace.AGENT_TASK]

    def _credential_refused(self, error: queue_errors.QueueError) -> str:
        """What to fix when the queue refuses this worker's credential (revoked, or never valid)."""
        machine = self.settings.machine
        return (f"the queue refused this worker's credential, {self.settings.credential_source} "
                f"({error.detail.rstrip('.')}); make a new token on the queue host with `da token create worker "
                f"{machine}`, put it in this machine's .env as DA_TOKEN and restart the worker")

    def _start(self, claimed: ClaimedTask) -> None:
        if claimed.task.type == workspace.AGENT_TASK:
            self._agents_running.add(claimed.task.id)
        task = asyncio.create_task(self._execute(claimed))
        self.running[claimed.task.id] = task
        task.add_done_callback(functools.partial(self._finished, claimed.task.id))

    async def _claim(self, retry_safe: list[str], capabilities: list[str]) -> ClaimedTask | None:
        """One long-poll; if the worker starts stopping meanwhile, a task that still arrives is handed back."""
        request = asyncio.ensure_future(self.client.claim(
            self.settings.machine, capabilities, agents=list(self.settings.agents),
            aliases=list(self.settings.aliases), retry_safe=retry_safe, wait=self.settings.poll_wait,
            lease=self.settings.lease, timeout=leases.request_timeout(self._lease_hint)))
        await self._until_stopping(request)
        if not request.done():
            # An answer may already be on its way; give it a moment rather than drop it on the floor.
            await asyncio.wait({request}, timeout=CLAIM_SETTLE)
        if not request.done():
            await _cancel(request)
            return None
        claimed = request.result()
        if claimed is not None:
            self._lease_hint = self.settings.lease or claimed.lease_seconds
        if claimed is not None and self.stopping.is_set():
            with contextlib.suppress(Exception):
                await self.client.release(claimed.task.id, claimed.lease)
            logger.info("handed back %s %s: the worker is stopping", claimed.task.short_id, claimed.task.type)
            return None
        return claimed

    async def _wait_any(self, awaitable: Any) -> Any:
        """Await something, giving up (and returning None) as soon as the worker is stopping."""
        job = asyncio.ensure_future(awaitable)
        await self._until_stopping(job)
        if not job.done():
            await _cancel(job)
            return None
        return job.result()

    async def _until_stopping(self, job: asyncio.Future[Any]) -> None:
        """Return when the job is done or the worker starts stopping, whichever is first."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    def _finished(self, task_id: str, job: asyncio.Task[None]) -> None:
        self.running.pop(task_id, None)
        self._agents_running.discard(task_id)
        self._slot_free.set()
        if not job.cancelled() and job.exception() is not None:
            # Never silent: the task is left to the reaper, so say why here.
            logger.error("running %s crashed", task_id[:8], exc_info=job.exception(), extra={"task_id": task_id})

    def stop(self, note: str = "the worker shut down before the task finished") -> None:
        """Stop claiming; running tasks get the shutdown grace, then are killed and reported."""
        self._shutdown_note = note
        self.stopping.set()

    async def _drain(self) -> None:
        if not self.running:
            return
        logger.info("waiting up to %.0fs for %d running task(s)", self.settings.shutdown_grace, len(self.running))
        _, still = await asyncio.wait(set(self.running.values()), timeout=self.settings.shutdown_grace)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=30)

    # ---- one task ----------------------------------------------------------------------

    async def _execute(self, claimed: ClaimedTask) -> None:
        task, lease = claimed.task, claimed.lease
        started = time.monotonic()
        logger.info("claimed %s %s", task.short_id, task.type, extra={"task_id": task.id})
        checkout = resolved_checkout(task.payload)
        spaces = await workspace.plan(self.settings.workspaces, task.type, task.id, task.payload)
        if spaces is not None:
            checkout = spaces.lock  # the worktree is the task's folder: tasks on one repository run at once
        try:
            await self._until_acknowledged(lambda: self.client.start(
                task.id, lease, checkout=checkout, timeout=leases.request_timeout(claimed.lease_seconds)))
        except (LeaseGone, CredentialRefused) as exc:
            logger.warning("task %s was not started: %s", task.short_id, exc, extra={"task_id": task.id})
            return
        ctx = TaskContext(self.settings, task.id, task.type, client=self.client, lease=lease)
        handler = self.handlers.get(task.type)
        work = asyncio.create_task(
            self._run_with_files(handler, ctx, task.type, task.payload, attachments.folder_for(task.payload, task.id))
            if spaces is None else self._run_in_workspace(handler, ctx, task.id, task.payload, spaces))
        beats = asyncio.create_task(self._heartbeat(task.id, lease, claimed.lease_seconds, ctx, work))
        try:
            result = await asyncio.shield(work)
            if (reason := self._cancel_reason.pop(task.id, None)) is not None:
                # A supervised session ended its turn on the cancel: the task is not this worker's to report.
                logger.info("stopped %s %s: %s", task.short_id, task.type, reason, extra={"task_id": task.id})
                return
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            reason = self._cancel_reason.pop(task.id, None)
            if spaces is not None and reason is not None:
                await asyncio.shield(workspace.discard_unchanged(self.settings.workspaces, spaces))
            if reason is not None:
                logger.info("stopped %s %s: %s", task.short_id, task.type, reason, extra={"task_id": task.id})
                return
            result = Result(FAILED, self._shutdown_note or "the worker stopped before the task finished",
                            "retry it (resolve as pending) once the worker is back", {})
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        await self._report(task.id, lease, task.type, result)
        logger.info("finished %s %s: %s in %.1fs", task.short_id, task.type, result.status,
                    time.monotonic() - started, extra={"task_id": task.id})

    async def _run_handler(self, handler: Handler | None, ctx: TaskContext, task_type: str,
                           payload: dict[str, Any]) -> Result:
        if handler is None:
            return Result(NEEDS_HUMAN, f"no handler for task type {task_type!r} on {self.settings.machine}",
                          f"add handlers/{task_type}.py (or {task_type}.py in a DA_HANDLERS_PATH folder) "
                          "and restart the worker", {})
        try:
            result = await handler.run(ctx, payload)
        except NeedsHuman as exc:
            return Result(NEEDS_HUMAN, exc.notes, exc.action, exc.result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any handler bug becomes needs_human with its traceback
            tail = self.settings.redactor(traceback.format_exc())[-TRACEBACK_TAIL:]
            return Result(NEEDS_HUMAN, f"handler {task_type} raised {type(exc).__name__}: {exc}"[:400],
                          f"fix the handler ({handler.source}) or the payload, then retry", {"traceback": tail})
        if not isinstance(result, Result):
            return Result(NEEDS_HUMAN, f"handler {task_type} returned {type(result).__name__}, not a Result",
                          f"fix {handler.source}", {})
        return result

    async def _run_with_files(self, handler: Handler | None, ctx: TaskContext, task_type: str,
                              payload: dict[str, Any], folder: Path) -> Result:
        """The handler, once the files attached to the task are in `folder` and named in its prompt."""
        if "attachments" not in payload:
            return await self._run_handler(handler, ctx, task_type, payload)
        try:
            given = attachments.unpack(payload, folder)
        except attachments.AttachmentError as exc:
            return Result(NEEDS_HUMAN, str(exc), "attach the files again (in Slack) or fix the payload", {})
        return await self._run_handler(handler, ctx, task_type, given)

    async def _run_in_workspace(self, handler: Handler | None, ctx: TaskContext, task_id: str,
                                payload: dict[str, Any], spaces: workspace.TaskWorkspaces) -> Result:
        """An agent task in its own worktree: made before the handler, committed, summarised and delivered after."""
        settings = self.settings.workspaces
        try:
            given = await workspace.enter(settings, spaces, payload)
        except workspace.WorkspaceError as exc:
            return Result(NEEDS_HUMAN, exc.sentence, exc.action, {})
        result = await self._run_with_files(handler, ctx, workspace.AGENT_TASK, given, Path(given["cwd"]))
        prompt = payload.get("prompt")
        link = payload.get("thread_url")
        fault = await workspace.finish(settings, spaces, result.details, prompt=prompt if isinstance(prompt, str)
                                       else "", task_id=task_id, answer=str(result.details.get("answer") or ""),
                                       link=link if isinstance(link, str) else "")
        if fault is not None and result.status == DONE:
            result = Result(NEEDS_HUMAN, fault.sentence, fault.action, result.details)
        return result

    async def _heartbeat(self, task_id: str, lease: str, seconds_left: float, ctx: TaskContext,
                         work: asyncio.Task[Result]) -> None:
        """Extend the lease every third of its length; stop the work on cancel, a lost lease, a refused
        credential, or a lease that could not be renewed for as long as it lasts.

        Each heartbeat is held by the queue until the next one is due, or answered at once when the
        task is cancelled, so a cancel stops the work within moments. Timed by `lease.LeaseClock`.
        """
        loop = asyncio.get_running_loop()
        clock = leases.LeaseClock.granted(self.settings.lease or seconds_left, loop.time(), seconds_left)
        failure = "no answer from the queue"
        while not work.done():
            sent = loop.time()
            if clock.expired(sent):
                # The queue has given the task up (or soon will) and may hand it to another worker.
                self._stop_work(task_id, work, f"its lease could not be renewed for {clock.length:.1f}s ({failure}); "
                                f"stopped so that it cannot run twice")
                return
            wait = clock.wait()
            call = self.client.heartbeat(task_id, lease, progress=ctx.progress, lease_seconds=self.settings.lease,
                                         wait=wait, messages=ctx.session is not None,
                                         timeout=clock.attempt_timeout(sent, wait))
            try:
                # A renewal that arrived in time is answered at most `wait` after the old lease ran out.
                beat = await asyncio.wait_for(self._held_until_session(call, ctx), clock.expires + wait - sent)
                if beat is None:
                    continue  # a session started: ask again, now for its steering messages too
            except TimeoutError:
                failure = "no answer from the queue"
                continue
            except (queue_errors.LeaseLost, queue_errors.NotFound) as exc:
                self._stop_work(task_id, work, f"lease lost ({exc.detail})")
                return
            except (queue_errors.Unauthorized, queue_errors.Forbidden) as exc:
                self._stop_work(task_id, work, self._credential_refused(exc))
                return
            except queue_errors.QueueError as exc:
                failure = exc.detail
                logger.warning("heartbeat for %s failed: %s", task_id[:8], exc.detail)
            else:
                if beat.cancel:
                    await self._cancel_session(task_id, ctx, work)
                    self._stop_work(task_id, work, "cancelled in the queue")
                    return
                if ctx.session is not None and beat.messages:
                    logger.info("task %s: %d steering message(s) handed to the agent", task_id[:8],
                                len(beat.messages), extra={"task_id": task_id})
                    for message in beat.messages:
                        ctx.session.say(message.text, interrupt=message.interrupt)
                answered = loop.time()
                # A queue that does not say what is left renewed the lease it was asked for, on arrival.
                left = beat.lease_seconds if beat.lease_seconds is not None else clock.length - (answered - sent)
                clock.renewed(sent, answered, left, wait)
            # Keep the pace when an answer came early (a failure, or a queue that does not hold heartbeats).
            await asyncio.sleep(max(0.0, min(sent + wait, clock.expires) - loop.time()))

    @staticmethod
    async def _held_until_session(call: Awaitable[Heartbeat], ctx: TaskContext) -> Heartbeat | None:
        """The heartbeat's answer; None when a session starts while a beat that takes no messages is held,
        so a steering message sent in the session's first moments does not wait for the next beat."""
        if ctx.session is not None:
            return await call
        beat = asyncio.ensure_future(call)
        started = asyncio.ensure_future(ctx.session_started.wait())
        try:
            await asyncio.wait({beat, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            if not beat.done():
                await _cancel(beat)
        return None if beat.cancelled() else beat.result()

    async def _cancel_session(self, task_id: str, ctx: TaskContext, work: asyncio.Task[Result]) -> None:
        """A supervised agent hears session/cancel first and gets its grace period to end the turn."""
        session = ctx.session
        if session is None:
            return
        self._cancel_reason[task_id] = "cancelled in the queue"
        session.cancel()
        await asyncio.wait({work}, timeout=session.request.cancel_grace + runner.KILL_GRACE)

    def _stop_work(self, task_id: str, work: asyncio.Task[Result], reason: str) -> None:
        """Stop a task from the queue's side (or for want of it): nothing is reported then, the log says why."""
        if reason != "cancelled in the queue":
            logger.warning("stopping %s: %s", task_id[:8], reason, extra={"task_id": task_id})
        self._cancel_reason[task_id] = reason
        work.cancel()

    async def _report(self, task_id: str, lease: str, task_type: str, result: Result) -> None:
        """Deliver the outcome until acknowledged, reduced to what the queue accepts.

        A 413 halves the report's budget and sends again; a report the queue refuses as invalid
        (400, 422) is reduced step by step (`report.reduced`) and sent again, and the smallest is
        retried until taken, never dropped. A refused credential ends the delivery: the outcome is
        then kept in this log, with what to fix.
        """
        redact = self.settings.redactor
        budget = report.FIRST_BUDGET
        delivery = report.prepare(result, task_type=task_type, lease=lease, redact=redact, budget=budget)
        refusals: list[str] = []
        # The slot this task frees: the same request claims its next task.
        claim = None if self.stopping.is_set() else report.claim_filter(self.settings, self.handlers,
                                                                         self._claimable())
        while True:
            send = functools.partial(report.deliver, self.client, task_id, lease, delivery, claim,
                                     timeout=leases.request_timeout(self._lease_hint))
            try:
                recorded, handed = await self._until_acknowledged(send)
                if handed is not None and self.stopping.is_set():
                    with contextlib.suppress(Exception):
                        await self.client.release(handed.task.id, handed.lease)
                elif handed is not None:
                    self._start(handed)
                if recorded.status != delivery.status:
                    logger.warning("the queue had given %s up (%s) before this report arrived; the outcome (%s) is "
                                   "kept on the task for whoever resolves it", task_id[:8], recorded.status,
                                   delivery.status, extra={"task_id": task_id})
                return
            except LeaseGone as exc:
                logger.warning("report for %s refused: %s", task_id[:8], exc)
                return
            except CredentialRefused as exc:
                logger.error("could not report %s, so its outcome is kept here: %s; %s", task_id[:8],
                             report.summary(delivery), exc, extra={"task_id": task_id})
                return
            except queue_errors.TooLarge as exc:
                if budget <= report.MIN_BUDGET:
                    logger.error("report for %s is too large for the queue even at %d bytes (%s); giving up",
                                 task_id[:8], budget, exc.detail, extra={"task_id": task_id})
                    return
                budget = max(report.MIN_BUDGET, min(budget, delivery.size(lease)) // 2)
                logger.warning("report for %s too large for the queue (%s); sending a smaller report of at most "
                               "%d bytes", task_id[:8], exc.detail, budget, extra={"task_id": task_id})
                delivery = report.prepare(result, task_type=task_type, lease=lease, redact=redact, budget=budget)
            except queue_errors.BadRequest as exc:
                refusals.append(exc.detail)
                smaller = report.reduced(result, task_type=task_type, lease=lease, redact=redact, refusals=refusals)
                if smaller is None:
                    if self.stopping.is_set():
                        logger.error("report for %s refused by the queue (%s) and the worker is stopping; its outcome "
                                     "is kept here: %s", task_id[:8], exc.detail, report.summary(delivery),
                                     extra={"task_id": task_id})
                        return
                    logger.error("report for %s refused by the queue even reduced to its reason (%s); sending it "
                                 "again in %.0fs. Its outcome: %s", task_id[:8], exc.detail, MAX_BACKOFF,
                                 report.summary(delivery), extra={"task_id": task_id})
                    await self._wait_any(asyncio.sleep(MAX_BACKOFF))
                    continue
                logger.warning("report for %s refused by the queue (%s); sending it reduced. Its outcome: %s",
                               task_id[:8], exc.detail, report.summary(delivery), extra={"task_id": task_id})
                delivery = smaller

    async def _until_acknowledged(self, send: Any) -> Any:
        """Retry an idempotent call with backoff until the queue answers it.

        While shutting down it gives up after the grace period; the lease reaper then settles
        the task.
        """
        backoff = FIRST_BACKOFF
        deadline: float | None = None
        while True:
            if self.stopping.is_set() and deadline is None:
                deadline = time.monotonic() + max(self.settings.shutdown_grace, 5.0)
            try:
                return await send()
            except (queue_errors.LeaseLost, queue_errors.NotFound, queue_errors.Conflict) as exc:
                raise LeaseGone(exc.detail) from exc
            except (queue_errors.Unauthorized, queue_errors.Forbidden) as exc:
                raise CredentialRefused(self._credential_refused(exc)) from exc
            except (queue_errors.BadRequest, queue_errors.TooLarge):
                raise  # the same request would be refused again
            except queue_errors.QueueError as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise LeaseGone(f"gave up while shutting down: {exc.detail}") from exc
                logger.warning("queue did not take it (%s); retrying in %.1fs", exc.detail, backoff)
                await asyncio.sleep(backoff)
                backoff = next_backoff(backoff, exc)





def next_backoff(backoff: float, error: queue_errors.QueueError) -> float:
    """The pause after `backoff` failed again with `error`."""
    return min(backoff * 2, DATABASE_BACKOFF if isinstance(error, queue_errors.DatabaseUnavailable) else MAX_BACKOFF)


def resolved_checkout(payload: dict[str, Any]) -> str | None:
    """The task's folder as this machine sees it (~ expanded, relative to the worker's folder, `..` and
    symlinks resolved): the key of its lock, so every spelling of one folder is one lock."""
    folder = queue_models.checkout_of(payload)
    if folder is None or "\x00" in folder:
        return None  # the handler says what is wrong with it; the lock stays on the text
    try:
        resolved = os.path.realpath(os.path.expanduser(folder))
    except (OSError, ValueError):
        return None
    return resolved if len(resolved) <= queue_models.MAX_PATH else None


async def _cancel(job: asyncio.Future[Any]) -> None:
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await job


def install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: kill running tasks and exit at once."""
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            name = signal.Signals(signum).name
            if worker.running:
                logger.warning("%s: waiting up to %.0fs for %d running task(s): %s; send %s again to stop them now",
                               name, worker.settings.shutdown_grace, len(worker.running),
                               ", ".join(task_id[:8] for task_id in worker.running), name)
            else:
                logger.info("%s: stopping (no task running)", name)
            worker.stop()
        else:
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            worker.settings = dataclasses.replace(worker.settings, shutdown_grace=0.0)
            for task in list(worker.running.values()):
                task.cancel()
            worker.stop("the worker was stopped at once (second signal)")

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
