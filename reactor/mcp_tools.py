"""The MCP tools, with scrum4me-mcp's names, inputs and output shapes, over the same handlers.

Tools run on stdio (entered on trio) and on streamable HTTP (entered on asyncio inside
uvicorn); ``on_trio`` makes one body serve both. Every result is JSON text plus
``structuredContent``; every refusal is ``isError`` with scrum4me-mcp's prefixes
(``VALIDATION_ERROR:``, ``PERMISSION_DENIED:``, ``JOB_CANCELLED:``, or a plain message).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import sniffio
import trio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import Field
from pydantic import ValidationError as PydanticValidationError
from trio_asyncio import trio_as_aio

from handlers import validate
from handlers.auth import Worker
from handlers.claim import rollback_claim
from handlers.cleanup import cleanup_my_worktrees
from handlers.errors import HandlerError, ValidationError
from handlers.heartbeat import job_heartbeat
from handlers.queue import check_queue_empty
from handlers.transition import StatusReport, update_job_status
from handlers.workspace import Workspace
from reactor import __version__
from reactor.db import DatabaseError
from reactor.jobflow import launched_context, prepare_job
from reactor.logs import get_logger
from reactor.pump import Waiter
from reactor.runtime import Reactor

log = get_logger("reactor.mcp")

P = ParamSpec("P")
T = TypeVar("T")

WorkerSource = Callable[[Context[Any, Any] | None], Awaitable[Worker]]

INSTRUCTIONS = (
    "Scrum4Me job queue, served by reactor (event-driven: no polling). Loop: call "
    "wait_for_job; work only inside the returned worktree_path on branch_name; call "
    "job_heartbeat about every 60 s while you work; commit your changes; then call "
    "update_job_status with done (the reactor pushes the branch) or failed. When next_action "
    "is wait_for_job_again, call wait_for_job again."
)


def on_trio(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a trio coroutine function whether the tool was entered on trio or on asyncio."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if sniffio.current_async_library() == "trio":
            return await fn(*args, **kwargs)
        return await trio_as_aio(functools.partial(fn, *args, **kwargs))()  # type: ignore[no-any-return]

    return wrapper


def result(value: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(value, indent=2, default=str))],
        structured_content=value,
    )


def refusal(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


class ReactorMCP(MCPServer[Any]):
    """MCPServer whose argument-validation errors read ``VALIDATION_ERROR: path: message``."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, PydanticValidationError):
                details = "; ".join(
                    f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                    for error in cause.errors()
                )
                return refusal(f"VALIDATION_ERROR: {details}")
            raise


class ToolHost:
    """The tool bodies: resolve who calls, run the handler, shape the answer."""

    def __init__(
        self,
        reactor: Reactor,
        ws: Workspace,
        worker_source: WorkerSource,
        *,
        launched_for_job: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.ws = ws
        self._worker_source = worker_source
        # Set when `reactor run` launched the agent that started this server for one job:
        # the daemon claims, renews and cleans up; this server only serves that job.
        self._launched_for_job = launched_for_job
        self._launched_delivered = False

    async def call(
        self, ctx: Context[Any, Any] | None, body: Callable[[Worker], Awaitable[dict[str, Any]]]
    ) -> CallToolResult:
        try:
            worker = await self._worker_source(ctx)
            return result(await body(worker))
        except HandlerError as exc:
            return refusal(str(exc))
        except DatabaseError as exc:
            log.warning("mcp.database_unavailable", why=str(exc))
            return refusal(
                f"The Scrum4Me database is unavailable right now ({exc}); try again shortly."
            )

    async def wait_for_job(
        self, worker: Worker, product_id: str | None, wait_seconds: int
    ) -> dict[str, Any]:
        worker.require_write()
        if product_id is not None:
            _checked("product_id", validate.product_id, product_id)
        if self._launched_for_job is not None:
            return await self._launched_job(worker, self._launched_for_job)
        pump = self.reactor.pump_for(worker)
        deadline = trio.current_time() + wait_seconds
        waiter = Waiter(product_id)
        pump.add(waiter)
        try:
            with trio.move_on_at(deadline):
                await waiter.wait_filled()
            if waiter.job is None:
                return {"status": "timeout", "message": "No job available within wait window"}
            return await prepare_job(self.reactor, self.ws, worker, waiter.job)
        except HandlerError:
            raise  # prepare_job gave the claim back itself
        except BaseException:
            # The caller went away (or something broke) after the pump filled the waiter,
            # possibly in the very tick the cancellation arrived: give the job back so another
            # worker gets it now rather than after the lease expires.
            if waiter.job is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await rollback_claim(
                        self.reactor.db, worker, waiter.job.id, reason="caller gone"
                    )
            raise
        finally:
            waiter.closed = True
            pump.remove(waiter)

    async def _launched_job(self, worker: Worker, job_id: str) -> dict[str, Any]:
        """An agent launched by the daemon asks for work: hand it its own job, once.

        The standard Scrum4Me prompt loops on wait_for_job. Claiming here would take jobs
        under the daemon's instance id behind its back (past REACTOR_CONCURRENCY, without its
        lease keeper), so the second call answers at once that there is nothing more."""
        if not self._launched_delivered:
            self._launched_delivered = True
            context = await launched_context(self.reactor.db, self.ws, worker, job_id)
            if context is not None:
                return context
        return {
            "status": "timeout",
            "message": f"This agent was launched by reactor run for job {job_id}; the daemon "
            "hands out the next job. Finish with update_job_status and exit.",
        }


def _duration(seconds: int) -> str:
    """REACTOR_LEASE_SECONDS in the words of the tool descriptions ("5 minute", "90 second")."""
    return f"{seconds // 60} minute" if seconds % 60 == 0 else f"{seconds} second"


def _checked(field: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except validate.InvalidInput as exc:
        raise ValidationError(f"{field}: {exc}") from None


def _id(description: str) -> Any:
    """The schema of an id argument (the handlers check the characters)."""
    return Field(min_length=1, max_length=128, description=description)


TokenCount = Annotated[
    int | None,
    Field(
        strict=True, ge=0, le=2**31 - 1, description="Token usage of your run (optional, stored)."
    ),
]


def build_server(host: ToolHost) -> ReactorMCP:
    server = ReactorMCP("scrum4me", version=__version__, instructions=INSTRUCTIONS)
    settings = host.reactor.settings
    lease = _duration(settings.lease_seconds)

    @server.tool(name="wait_for_job", description=WAIT_FOR_JOB.replace("{lease}", lease))
    @on_trio
    async def wait_for_job(
        ctx: Context[Any, Any],
        product_id: Annotated[
            str | None, _id("Only claim jobs of this product (a filter; optional).")
        ] = None,
        wait_seconds: Annotated[
            int,
            Field(
                strict=True, ge=1, le=600, description="How long to wait for a job, 1-600 seconds."
            ),
        ] = 300,
        capability: Annotated[
            Literal["HIGH_P", "MEDIUM_P", "LOW_P"] | None,
            Field(
                description="Accepted for compatibility with newer clients; not used for routing."
            ),
        ] = None,
    ) -> CallToolResult:
        return await host.call(
            ctx, lambda worker: host.wait_for_job(worker, product_id, wait_seconds)
        )

    @server.tool(name="update_job_status", description=UPDATE_JOB_STATUS)
    @on_trio
    async def update_job_status_tool(
        ctx: Context[Any, Any],
        job_id: Annotated[
            str, Field(min_length=1, max_length=128, description="The job_id from wait_for_job.")
        ],
        status: Annotated[
            Literal["running", "done", "failed", "skipped"],
            Field(description="running, done, failed or skipped."),
        ],
        branch: Annotated[
            str | None,
            Field(
                max_length=200,
                description="The branch you committed on (defaults to the job's branch).",
            ),
        ] = None,
        summary: Annotated[
            str | None,
            Field(max_length=4000, description="What you did (at most 4000 characters)."),
        ] = None,
        error: Annotated[
            str | None,
            Field(
                max_length=2000,
                description="Why it failed or was skipped (<= 2000 chars; skipped needs >= 10).",
            ),
        ] = None,
        model_id: Annotated[
            str | None,
            Field(max_length=200, description="The model that did the work (usage tracking)."),
        ] = None,
        input_tokens: TokenCount = None,
        output_tokens: TokenCount = None,
        cache_read_tokens: TokenCount = None,
        cache_write_tokens: TokenCount = None,
        actual_thinking_tokens: TokenCount = None,
    ) -> CallToolResult:
        report = StatusReport(
            job_id, status, branch, summary, error, model_id, input_tokens, output_tokens,
            cache_read_tokens, cache_write_tokens, actual_thinking_tokens,
        )  # fmt: skip
        return await host.call(
            ctx,
            lambda worker: update_job_status(
                host.reactor.db, host.ws, worker, report, kinds=settings.kinds
            ),
        )

    @server.tool(name="job_heartbeat", description=JOB_HEARTBEAT.replace("{lease}", lease))
    @on_trio
    async def job_heartbeat_tool(
        ctx: Context[Any, Any],
        job_id: Annotated[
            str, Field(min_length=1, max_length=128, description="The job you are working on.")
        ],
    ) -> CallToolResult:
        return await host.call(
            ctx,
            lambda worker: job_heartbeat(
                host.reactor.db, worker, job_id, lease_seconds=settings.lease_seconds
            ),
        )

    @server.tool(name="cleanup_my_worktrees", description=CLEANUP_MY_WORKTREES)
    @on_trio
    async def cleanup_my_worktrees_tool(ctx: Context[Any, Any]) -> CallToolResult:
        async def body(worker: Worker) -> dict[str, Any]:
            return (await cleanup_my_worktrees(host.reactor.db, host.ws, worker)).as_dict()

        return await host.call(ctx, body)

    @server.tool(name="check_queue_empty", description=CHECK_QUEUE_EMPTY)
    @on_trio
    async def check_queue_empty_tool(
        ctx: Context[Any, Any],
        product_id: Annotated[
            str | None, _id("Count only this product (must be yours or shared with you).")
        ] = None,
    ) -> CallToolResult:
        return await host.call(
            ctx, lambda worker: check_queue_empty(host.reactor.db, worker, product_id)
        )

    return server


WAIT_FOR_JOB = """\
Claim the next Scrum4Me job for your token's user, waiting for one if the queue is empty.

Returns at once when a job is queued; otherwise it waits (event-driven, no polling) until a
job is enqueued or wait_seconds (1-600, default 300) pass, then returns
{"status": "timeout", "message": ...} exactly on time. Jobs of one story are handed out one at
a time, oldest first.

On success the job is CLAIMED for you with a {lease} lease. The result has job_id, kind,
config (model, thinking_budget, permission_mode), task, story, pbi, sprint, product and, for
TASK_IMPLEMENTATION jobs, worktree_path (a git worktree made for this job: work ONLY there),
branch_name (the story's branch, shared with the story's other tasks), reused_branch and
base_sha. Then: call job_heartbeat about every 60 s while working, commit in the worktree, and
finish with update_job_status. If the worktree could not be made (for example no repo root is
configured) the claim is given back and the error says what to configure."""

UPDATE_JOB_STATUS = """\
Report progress or the result of a job you claimed.

status: "running" (you started), "done", "failed" or "skipped" (needs an error of at least 10
characters saying why). Only the worker that claimed the job may report, and only while it is
CLAIMED or RUNNING.
On "done" the reactor pushes your branch (git push -u origin <branch>) unless you made no
commits; if the push fails the job is stored as failed with the reason and the worktree is
kept. summary <= 4000 and error <= 2000 characters (longer is rejected, not cut).
Returns the stored job (status, branch, pushed_at, summary, error, timestamps) and
next_action: "wait_for_job_again" when more jobs you could take are queued, "queue_empty"
otherwise, "idle" after "running".
Errors: PERMISSION_DENIED (not your job, or your lease expired and it was given to another
worker), JOB_CANCELLED (cancelled in Scrum4Me: discard your changes and call wait_for_job),
VALIDATION_ERROR (bad input; nothing was changed)."""

JOB_HEARTBEAT = """\
Extend the lease on a job you are working on to {lease} from now. Call it about every 60
seconds: a job whose lease runs out is taken back and given to another worker, and your later
reports on it are refused. Returns {ok, job_id, lease_until, sprint_run_status,
sprint_run_pause_reason}."""

CLEANUP_MY_WORKTREES = """\
Remove the git worktrees of your finished jobs (DONE, FAILED, CANCELLED, SKIPPED) from the
agent worktree directory; worktrees of active jobs are kept. Branches whose commits are not on
origin are never deleted. Returns {removed, kept, skipped} (lists of job ids) and reasons for
the skipped ones. The reactor already cleans up automatically when a story's last job ends;
use this after a crash or to reclaim disk."""

CHECK_QUEUE_EMPTY = """\
How many of your jobs are still QUEUED, CLAIMED or RUNNING. With product_id (which must be
yours or shared with you) returns {empty, remaining}; without it also by_product: {product_id:
count}."""
