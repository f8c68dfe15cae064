"""Agent slots: the daemon runs a command for every job it claims (``--agent-command``).

Per job: prepare it (worktree on the story branch), mark it RUNNING, run the command through
``/bin/sh -c`` in the worktree with the job in its environment (``SCRUM4ME_JOB_ID``,
``SCRUM4ME_JOB_CONTEXT`` = path of a JSON file, ``SCRUM4ME_INSTANCE_ID`` so the agent's own
MCP calls are accepted for this claim), renew the lease while it runs, and write its output
to ``<log dir>/<job id>.log``. When it exits, a result it already reported through the MCP
tools stands; otherwise exit 0 means done (with push) and anything else failed, with the last
lines of its stderr. A run past REACTOR_AGENT_TIMEOUT_SECONDS is stopped and failed. On
shutdown, running agents get REACTOR_AGENT_GRACE_SECONDS, then are stopped and their jobs
requeued without counting a retry.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import trio

from handlers import validate
from handlers.claim import ClaimedJob, renew_leases, rollback_claim
from handlers.errors import HandlerError
from handlers.transition import StatusReport, update_job_status
from handlers.workspace import Workspace
from handlers.worktree import WorktreeUnavailable
from reactor.db import DatabaseError
from reactor.events import JobStatusChanged
from reactor.health import AgentStats
from reactor.jobflow import CleanupService, prepare_job
from reactor.logs import get_logger
from reactor.runtime import Reactor
from reactor.sqlfiles import query

log = get_logger("reactor.agent")

_STATUS_OF = query("jobs.status_of")
STDERR_TAIL_LINES = 20
KILL_AFTER_SECONDS = 10.0


@dataclass
class _Run:
    job: ClaimedJob
    process: trio.Process | None = None
    stop_reason: str | None = None
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class AgentSlots:
    """A pump consumer with REACTOR_CONCURRENCY slots that launches the agent per job."""

    name = "agent"
    product_id: str | None = None

    def __init__(
        self,
        reactor: Reactor,
        ws: Workspace,
        command: str,
        stats: AgentStats,
        cleanup: CleanupService | None = None,
    ) -> None:
        self._reactor = reactor
        self._cleanup = cleanup
        self._ws = ws
        self._command = command
        self._stats = stats
        self._settings = reactor.settings
        self._runs: dict[str, _Run] = {}
        self._idle = trio.Event()
        self.draining = False
        reactor.status_hooks.append(self._on_status_changed)

    def free_slots(self) -> int:
        return 0 if self.draining else self._settings.concurrency - len(self._runs)

    def offer(self, job: ClaimedJob) -> bool:
        if self.draining:
            return False
        run = self._runs[job.id] = _Run(job)
        self._stats.running = len(self._runs)
        self._reactor.nursery.start_soon(self._run_job, run)
        return True

    async def drain(self) -> None:
        """Shutdown: no new jobs; wait out the grace period, then stop and requeue the rest."""
        self.draining = True
        if not self._runs:
            return
        grace = self._settings.agent_grace_seconds
        log.info(
            "agent.draining", running=list(self._runs), grace_s=grace, why="shutdown requested"
        )
        with trio.move_on_after(grace):
            await self._wait_idle()
        for run in list(self._runs.values()):
            run.stop_reason = "shutdown"
            run.cancel_scope.cancel()
        with trio.move_on_after(KILL_AFTER_SECONDS + 5):
            await self._wait_idle()

    async def _wait_idle(self) -> None:
        while self._runs:
            await self._idle.wait()

    async def _run_job(self, run: _Run) -> None:
        job = run.job
        try:
            with run.cancel_scope:
                await self._work(run)
        except WorktreeUnavailable:
            pass  # already given back and logged, with a cool-down
        except (HandlerError, DatabaseError) as exc:
            log.error("agent.job_failed", job_id=job.id, why=str(exc))
        except Exception:
            # One job's unexpected error must not take the daemon (and its other agents)
            # down: log it and give the claim back so it is retried.
            log.exception("agent.job_crashed", job_id=job.id)
            run.stop_reason = run.stop_reason or "crashed"
        finally:
            if run.stop_reason in ("shutdown", "crashed"):
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await rollback_claim(
                        self._reactor.db, self._reactor.worker, job.id, reason=run.stop_reason
                    )
            if job.id in self._ws.in_use:
                self._ws.in_use.discard(job.id)
                if self._cleanup is not None:
                    # Cleanup skipped this worktree while the agent still worked in it.
                    self._reactor.nursery.start_soon(self._cleanup.after_release, job.id)
            del self._runs[job.id]
            self._stats.running = len(self._runs)
            if not self._runs:
                self._idle.set()
                self._idle = trio.Event()
            self._reactor.pump.wake("agent slot freed")

    async def _work(self, run: _Run) -> None:
        job = run.job
        context = await prepare_job(self._reactor, self._ws, self._reactor.worker, job)
        worktree = context.get("worktree_path")
        if worktree:
            self._ws.in_use.add(job.id)
        await self._report(job.id, "running")
        exit_code, stderr_tail = await self._launch(
            run, context, Path(worktree) if worktree else None
        )
        self._stats.record(exit_code)
        await self._finish(run, exit_code, stderr_tail)

    async def _launch(
        self, run: _Run, context: dict[str, object], worktree: Path | None
    ) -> tuple[int, str]:
        job = run.job
        log_dir = self._settings.log_dir
        await trio.Path(log_dir).mkdir(parents=True, exist_ok=True)
        validate.job_id(job.id)  # the claim only takes safe ids; never build a path from others
        context_file = log_dir / f"{job.id}.context.json"
        await trio.Path(context_file).write_text(
            json.dumps(context, indent=2, default=str), encoding="utf-8"
        )
        env = {
            **self._settings.environ,
            "SCRUM4ME_JOB_ID": job.id,
            "SCRUM4ME_JOB_CONTEXT": str(context_file),
            "SCRUM4ME_INSTANCE_ID": self._reactor.worker.instance_id,
        }
        if worktree is not None:
            env["SCRUM4ME_WORKTREE"] = str(worktree)
        cwd = worktree or log_dir
        output = (log_dir / f"{job.id}.log").open("ab")
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        try:
            process = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", self._command],
                cwd=str(cwd),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            output.close()
            raise
        run.process = process
        log.info("agent.started", job_id=job.id, pid=process.pid, cwd=str(cwd), log=output.name)
        try:
            async with trio.open_nursery() as nursery:
                copied = trio.Event()
                nursery.start_soon(self._keep_lease, run, nursery.cancel_scope)
                nursery.start_soon(self._copy_stderr, process, output, tail, copied)
                with trio.move_on_after(self._settings.agent_timeout_seconds) as deadline:
                    await process.wait()
                if deadline.cancelled_caught:
                    run.stop_reason = "timeout"
                else:
                    # Let the copier drain what is still in the pipe (bounded: a background
                    # child of the agent may hold the pipe open).
                    with trio.move_on_after(2):
                        await copied.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop(process)
            output.close()
        return process.returncode if process.returncode is not None else -1, "".join(tail)

    async def _keep_lease(self, run: _Run, scope: trio.CancelScope) -> None:
        """Renew the lease at a third of its length; stop the agent if the claim is lost."""
        interval = max(1.0, self._settings.lease_seconds / 3)
        while True:
            await trio.sleep(interval)
            try:
                held = await renew_leases(
                    self._reactor.db,
                    self._reactor.worker,
                    [run.job.id],
                    self._settings.lease_seconds,
                )
            except DatabaseError as exc:
                log.warning("agent.lease_renewal_failed", job_id=run.job.id, why=str(exc))
                continue
            if not held:
                run.stop_reason = run.stop_reason or "claim lost"
                log.warning(
                    "agent.claim_lost",
                    job_id=run.job.id,
                    why="the job is no longer ours; stopping the agent",
                )
                scope.cancel()
                return

    @staticmethod
    async def _copy_stderr(
        process: trio.Process, output: BinaryIO, tail: collections.deque[str], copied: trio.Event
    ) -> None:
        assert process.stderr is not None
        pending = b""
        try:
            async for chunk in process.stderr:
                output.write(chunk)
                output.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                tail.extend(line.decode("utf-8", "replace") + "\n" for line in lines)
            if pending:
                tail.append(pending.decode("utf-8", "replace"))
        finally:
            copied.set()

    @staticmethod
    async def _stop(process: trio.Process) -> None:
        """SIGTERM the agent's process group, SIGKILL it if it does not go."""
        if process.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, KILL_AFTER_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            with trio.move_on_after(wait):
                await process.wait()
            if process.returncode is not None:
                return

    async def _finish(self, run: _Run, exit_code: int, stderr_tail: str) -> None:
        job = run.job
        if run.stop_reason == "shutdown":
            return  # requeued by _run_job without counting a retry
        row = await self._reactor.db.fetchrow(_STATUS_OF, job.id)
        if (
            row is None
            or row["status"] not in ("CLAIMED", "RUNNING")
            or row["worker_instance_id"] != self._reactor.worker.instance_id
        ):
            log.info(
                "agent.exited",
                job_id=job.id,
                exit_code=exit_code,
                stored=row["status"] if row else None,
                why="the job already has a result (reported by the agent, cancelled, taken back)",
            )
            return
        if run.stop_reason == "timeout":
            limit = self._settings.agent_timeout_seconds
            await self._report(
                job.id,
                "failed",
                error=f"agent exceeded REACTOR_AGENT_TIMEOUT_SECONDS ({limit:g} s) and was stopped",
            )
        elif exit_code == 0:
            await self._report(job.id, "done", summary="agent exited 0")
        else:
            tail = stderr_tail.strip()[-1500:] or "(no output on stderr)"
            await self._report(
                job.id, "failed", error=f"agent exited with code {exit_code}: {tail}"
            )
        log.info("agent.exited", job_id=job.id, exit_code=exit_code, stop_reason=run.stop_reason)

    async def _report(self, job_id: str, status: str, **fields: str) -> None:
        report = StatusReport(job_id, status, **fields)  # type: ignore[arg-type]
        await update_job_status(
            self._reactor.db, self._ws, self._reactor.worker, report, kinds=self._settings.kinds
        )

    async def _on_status_changed(self, event: JobStatusChanged) -> None:
        run = self._runs.get(event.job_id)
        if run is not None and event.new_status == "CANCELLED":
            log.info(
                "agent.cancelled",
                job_id=event.job_id,
                why="the job was cancelled in Scrum4Me; stopping its agent",
            )
            run.stop_reason = "cancelled"
            run.cancel_scope.cancel()
