"""The reactor worker child: a real ``Reactor`` with a no-op consumer, reporting on stdout.

    python -m bench.reactor_worker --slots N [--wait-for-go]

Configuration comes from the environment exactly as for ``reactor run`` (DATABASE_URL,
SCRUM4ME_TOKEN, SCRUM4ME_INSTANCE_ID, REACTOR_WORKTREES=off, ...). Lines written:

    ready                      the reactor listens, verified, caught up
    c <perf_counter> <job_id>  offer(): the claim has committed (T2)
    d <perf_counter> <job_id>  the real update_job_status(done) returned

Commands on stdin: ``go`` opens the slots (``--wait-for-go``); EOF stops the process.

``BENCH_REACTOR_PATCH`` (comma-separated) applies measurement-only experiments inside this
bench process, never to the product: ``trace`` (timestamps of the hot path on stderr),
``quiet-logs`` (log level warning), ``generic-plans``
(plan_cache_mode=force_generic_plan on the pool's connections), ``claim-topn`` (jobs.claim
with the sorted candidate subquery bounded by a LIMIT: a top-N sort instead of a full one).
The experiments of the first measurements that paid off (no pool reset query, EXISTS for
next_action, gc.freeze() once started) are in the product now.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import trio

from handlers.auth import Worker
from handlers.claim import ClaimedJob
from handlers.transition import StatusReport, update_job_status
from handlers.workspace import Workspace
from reactor import aioloop, logs
from reactor.app import authenticate_token, check_import_order, open_database, settle_memory
from reactor.config import Settings
from reactor.db import Database
from reactor.runtime import Reactor

PATCHES = frozenset(p for p in os.environ.get("BENCH_REACTOR_PATCH", "").split(",") if p)


def apply_patches() -> None:
    if "trace" in PATCHES:
        _trace_hot_path()
    if "generic-plans" in PATCHES:
        import asyncpg

        plain = asyncpg.create_pool

        def generic_pool(*args: Any, **kwargs: Any) -> Any:
            settings = dict(kwargs.get("server_settings") or {})
            settings["plan_cache_mode"] = "force_generic_plan"
            kwargs["server_settings"] = settings
            return plain(*args, **kwargs)

        asyncpg.create_pool = generic_pool
    if "claim-topn" in PATCHES:
        from handlers import claim
        from reactor.sqlfiles import Query

        old = claim._CLAIM
        fence = "COALESCE(cj.sprint_sequence, 2147483647), cj.id\n        OFFSET 0"
        assert fence in old.text, "jobs.claim changed; update the claim-topn experiment"
        bounded = fence.replace("OFFSET 0", "LIMIT $7::int * 50 + 100")
        claim._CLAIM = Query(old.name, old.text.replace(fence, bounded))


def _trace_hot_path() -> None:
    """Timestamps of the enqueue-to-claim path on stderr: notification callback, pump pass,
    statement sent, statement back (``trace <stage> <perf_counter>``)."""
    from reactor import db, dispatch, pump

    def stamp(stage: str) -> None:
        os.write(2, f"trace {stage} {time.perf_counter()!r}\n".encode())

    deliver = dispatch.Dispatcher.deliver

    def traced_deliver(self: Any, channel: str, payload: str) -> None:
        if channel == "job_enqueued":
            stamp("notified")
        deliver(self, channel, payload)

    dispatch.Dispatcher.deliver = traced_deliver  # type: ignore[method-assign]
    pass_ = pump.ClaimPump._pass

    async def traced_pass(self: Any) -> None:
        stamp("pass")
        await pass_(self)

    pump.ClaimPump._pass = traced_pass  # type: ignore[method-assign]
    bridge = db._bridge

    async def traced_bridge(method: Any, q: Any, args: Any) -> Any:
        traced = q.name == "jobs.claim"
        if traced:
            stamp("sent")
        result = await bridge(method, q, args)
        if traced:
            stamp("back")
        return result

    db._bridge = traced_bridge


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


class NoOpConsumer:
    """``slots`` parallel no-op agents: report the claim, then report done at once."""

    name = "bench"
    product_id: str | None = None

    def __init__(
        self, slots: int, db: Database, ws: Workspace, worker: Worker, kinds: tuple[str, ...]
    ) -> None:
        self.slots = slots
        self.open = False
        self.active = 0
        self.done = 0
        self._db, self._ws, self._worker, self._kinds = db, ws, worker, kinds
        self.reactor: Reactor | None = None
        self.nursery: trio.Nursery | None = None

    def free_slots(self) -> int:
        return self.slots - self.active if self.open else 0

    def offer(self, job: ClaimedJob) -> bool:
        now = time.perf_counter()
        say(f"c {now!r} {job.id}")
        if "trace" in PATCHES:
            os.write(2, f"trace offer {now!r}\n".encode())
        assert self.nursery is not None
        self.active += 1
        self.nursery.start_soon(self._finish, job.id)
        return True

    async def _finish(self, job_id: str) -> None:
        try:
            await update_job_status(
                self._db, self._ws, self._worker, StatusReport(job_id, "done"), kinds=self._kinds
            )
            say(f"d {time.perf_counter()!r} {job_id}")
        finally:
            self.active -= 1
            assert self.reactor is not None
            self.reactor.pump.wake("bench slot freed")


async def _commands(consumer: NoOpConsumer, cancel: trio.CancelScope) -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            cancel.cancel()
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip() == b"go":
                consumer.open = True
                assert consumer.reactor is not None
                consumer.reactor.pump.wake("bench go")


async def main(args: Any) -> None:
    check_import_order()
    settings = Settings.from_env()
    async with aioloop.open_loop():
        opened = await open_database(settings, role="bench")
        try:
            worker = await authenticate_token(opened.db, opened.settings, "reactor")
            ws = Workspace.from_settings(opened.settings)
            consumer = NoOpConsumer(args.slots, opened.db, ws, worker, opened.settings.kinds)
            consumer.open = not args.wait_for_go
            reactor = Reactor(opened.settings, opened.db, worker, role="bench")
            consumer.reactor = reactor
            reactor.pump.add(consumer)
            async with trio.open_nursery() as nursery:
                consumer.nursery = nursery
                await nursery.start(reactor.run)
                settle_memory()  # as reactor run and reactor mcp do once started
                say("ready")
                await _commands(consumer, nursery.cancel_scope)
        finally:
            await opened.db.close()


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reactor_worker")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--wait-for-go", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    level = "warning" if "quiet-logs" in PATCHES else settings.log_level
    logs.configure(level, settings.log_format)
    apply_patches()
    trio.run(main, args)


if __name__ == "__main__":
    cli()
