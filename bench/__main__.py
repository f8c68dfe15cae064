"""python -m bench <latency|throughput|compare|worktree|idle|reconnect>: one JSON line each.

Results go to stdout, progress to stderr. Each run creates its own ``bench_<label>_<random>``
databases on the server and drops them afterwards; without --dsn and without a server on
127.0.0.1:5432, an embedded PostgreSQL is started in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bench.common import DEFAULT_DSN, emit, find_server, machine, progress, work_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn",
        default=None,
        help=f"admin DSN (default {DEFAULT_DSN}, else an embedded server)",
    )
    common.add_argument("--repeat", type=int, default=1, help="repetitions (default 1)")
    common.add_argument("--seed", type=int, default=1, help="seed of the idle gaps (default 1)")
    sub = parser.add_subparsers(dest="command", required=True)

    lat = sub.add_parser("latency", parents=[common], help="sequential pickup latency")
    lat.add_argument("--samples", type=int, default=1000)
    lat.add_argument("--warmup", type=int, default=100)
    lat.add_argument(
        "--mode", default="worker,mcp", help="worker (T2 = claim committed), mcp (wait_for_job)"
    )

    thr = sub.add_parser("throughput", parents=[common], help="claim -> done burn-down")
    thr.add_argument("--stories", type=int, default=1000)
    thr.add_argument("--tasks", type=int, default=10, help="tasks (jobs) per story")
    thr.add_argument("--workers", default="1,2,4", help="K values, comma-separated")
    thr.add_argument("--slots", type=int, default=32, help="consumer slots per reactor process")

    cmp_ = sub.add_parser("compare", parents=[common], help="reactor vs polling vs peers")
    cmp_.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    cmp_.add_argument("--samples", type=int, default=None, help="latency samples (default 300)")
    cmp_.add_argument("--warmup", type=int, default=None)
    cmp_.add_argument("--poll-samples", type=int, default=None, help="polling5s (default 30)")
    cmp_.add_argument("--stories", type=int, default=None, help="default 1000 (x10 tasks)")
    cmp_.add_argument("--tasks", type=int, default=10)
    cmp_.add_argument("--workers", default=None, help="K values (default 1,2,4)")
    cmp_.add_argument("--slots", type=int, default=32)
    cmp_.add_argument(
        "--systems",
        default="reactor,reactor-mcp,polling5s,pgqueuer,procrastinate,sqlfloor",
        help="which systems to run",
    )
    cmp_.add_argument("--skip", default="", help="latency or throughput: leave that part out")

    wt = sub.add_parser("worktree", parents=[common], help="worktree creation vs git clone")
    wt.add_argument("--files", default="1000,10000", help="repository sizes")
    wt.add_argument("--runs", type=int, default=5, help="runs per variant (median reported)")
    wt.add_argument("--node-modules-files", type=int, default=20000)

    idle = sub.add_parser("idle", parents=[common], help="queries/s and CPU of an idle reactor")
    idle.add_argument("--seconds", type=float, default=60.0)
    idle.add_argument("--target", default="daemon", help="daemon (reactor run), mcp, worker")

    rec = sub.add_parser("reconnect", parents=[common], help="listener killed -> next claim")
    rec.add_argument("--samples", type=int, default=50)
    rec.add_argument("--warmup", type=int, default=5)

    rep = sub.add_parser("report", help="markdown tables from saved JSON lines")
    rep.add_argument("files", nargs="+")
    return parser


async def _main(args: Any) -> None:
    if args.command == "report":
        from pathlib import Path

        from bench import report

        print(report.render([Path(f) for f in args.files]))
        return
    # SIGTERM cancels like Ctrl-C does: workers stopped, databases dropped on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    logs = work_dir()
    progress(f"logs and scratch files: {logs}")
    if args.command == "worktree":
        from bench import worktree

        emit({"bench": "machine", **machine()})
        await worktree.run(args, logs)
        return
    server = await find_server(args.dsn)
    emit({"bench": "machine", **machine(), "postgres": server.version, "embedded": server.embedded})
    if args.command == "latency":
        from bench import latency

        await latency.run(args, server, logs)
    elif args.command == "throughput":
        from bench import throughput

        await throughput.run(args, server, logs)
    elif args.command == "compare":
        from bench import compare

        await compare.run(args, server, logs)
    elif args.command == "idle":
        from bench import idle

        await idle.run(args, server, logs)
    elif args.command == "reconnect":
        from bench import reconnect

        await reconnect.run(args, server, logs)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted: workers stopped, databases dropped")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
