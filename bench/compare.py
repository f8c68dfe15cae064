"""Reactor vs the original 5 s poll vs PgQueuer vs Procrastinate, in one run on one server.

Every repetition runs every system, with the order rotated per repetition (latency first,
then throughput per K). Each system has its own database. The last line is a summary: the
median of the repetitions (with min-max) per system and setting, and the reactor's ratios.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import latency, peers, throughput
from bench.common import Server, emit, percentiles, progress

# The SQL floor (bench/peer_workers.py) has no listener: it bounds throughput, not latency.
THROUGHPUT_ONLY = ("sqlfloor",)
LATENCY_FIELDS = ("p50_ms", "p95_ms", "p99_ms", "max_ms", "enqueue_call_ms_p50")
THROUGHPUT_CONFIGS = [
    ("reactor", "slots"),
    ("sqlfloor", "slots"),
    ("pgqueuer", "defaults"),
    ("pgqueuer", "tuned"),
    ("procrastinate", "defaults"),
    ("procrastinate", "tuned"),
]


def _rotate(items: list[Any], by: int) -> list[Any]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def _spread(values: list[float]) -> dict[str, float]:
    stats = percentiles(values)
    return {"median": stats["p50"], "min": stats["min"], "max": stats["max"]}


async def _latency(
    server: Server, logs: Path, system: str, sizes: dict[str, int], seed: int
) -> dict[str, Any]:
    polling = system == "polling5s"
    samples = sizes["poll_samples"] if polling else sizes["samples"]
    warmup = sizes["poll_warmup"] if polling else sizes["warmup"]
    gap = (0.0, 5000.0) if polling else (50.0, 250.0)
    if system in ("reactor", "reactor-mcp"):
        mode = "worker" if system == "reactor" else "mcp"
        async with latency.reactor_system(server, mode, logs) as reactor:
            return await latency.measure(
                reactor, samples=samples, warmup=warmup, gap_ms=gap, seed=seed
            )
    async with peers.latency_system(server, system, logs) as peer:
        return await latency.measure(peer, samples=samples, warmup=warmup, gap_ms=gap, seed=seed)


async def run(args: Any, server: Server, logs: Path) -> None:
    quick = args.quick
    sizes = {
        "samples": args.samples or (100 if quick else 300),
        "warmup": args.warmup or (10 if quick else 30),
        "poll_samples": args.poll_samples or (6 if quick else 30),
        "poll_warmup": 1 if quick else 3,
    }
    stories = args.stories or (200 if quick else 1000)
    ks = [int(k) for k in (args.workers or ("1,2" if quick else "1,2,4")).split(",")]
    systems = args.systems.split(",")
    skip = set(args.skip.split(",")) - {""}
    lat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    thr: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    configs = [c for c in THROUGHPUT_CONFIGS if c[0] in systems]
    for rep in range(args.repeat):
        if "latency" not in skip:
            for system in _rotate([s for s in systems if s not in THROUGHPUT_ONLY], rep):
                progress(f"compare latency {system}: repetition {rep + 1}/{args.repeat}")
                result = await _latency(server, logs, system, sizes, args.seed)
                lat[system].append(result)
                emit(
                    {"bench": "compare-latency", "system": system, "repetition": rep + 1, **result}
                )
        if "throughput" not in skip:
            for k in ks:
                for system, settings in _rotate([c for c in configs if c[0] != "reactor-mcp"], rep):
                    if settings == "slots":
                        settings = f"slots{args.slots}"
                    result = await throughput.drain(
                        server,
                        logs,
                        system,
                        settings,
                        k,
                        stories=stories,
                        tasks=args.tasks,
                        slots=args.slots,
                    )
                    thr[(system, settings, k)].append(result)
                    emit({"bench": "compare-throughput", "repetition": rep + 1, **result})
    emit(_summary(lat, thr, args.repeat, sizes, stories * args.tasks))


def _summary(
    lat: dict[str, list[dict[str, Any]]],
    thr: dict[tuple[str, str, int], list[dict[str, Any]]],
    repeat: int,
    sizes: dict[str, int],
    jobs: int,
) -> dict[str, Any]:
    latency_table: dict[str, dict[str, dict[str, float]]] = {
        system: {f: _spread([r[f] for r in results]) for f in LATENCY_FIELDS}
        | {
            f"commit_to_claim_{q}_ms": _spread([r["commit_to_claim_ms"][q] for r in results])
            for q in ("p50", "p99")
        }
        for system, results in lat.items()
    }
    throughput_table: dict[str, dict[str, Any]] = {
        f"{system}/{settings}/K={k}": {
            "jobs_per_s": _spread([r["jobs_per_s"] for r in results]),
            "worker_cpu_ms_per_job": _spread([r["worker_cpu_ms_per_job"] for r in results]),
            "pg_cpu_ms_per_job_approx": _spread([r["pg_cpu_ms_per_job_approx"] for r in results]),
            "cpu_steal_pct": _spread([r["cpu_steal_pct"] for r in results]),
            "machine_cpu_busy_pct": _spread([r["machine_cpu_busy_pct"] for r in results]),
            "verified": all(r["verified"] for r in results),
        }
        for (system, settings, k), results in thr.items()
    }
    ratios: dict[str, float] = {}
    reactor = latency_table.get("reactor")
    for peer in ("pgqueuer", "procrastinate", "polling5s", "reactor-mcp"):
        if reactor and peer in latency_table:
            for f in ("p50_ms", "p99_ms"):
                ratios[f"latency {f} reactor/{peer}"] = round(
                    reactor[f]["median"] / latency_table[peer][f]["median"], 3
                )
    for key, row in throughput_table.items():
        system, settings, k = key.split("/")
        if system == "reactor":
            continue
        mine = next((v for q, v in throughput_table.items() if q.startswith("reactor/")
                     and q.endswith(f"/{k}")), None)  # fmt: skip
        if mine is not None:
            ratios[f"jobs/s reactor/{system}-{settings} {k}"] = round(
                mine["jobs_per_s"]["median"] / row["jobs_per_s"]["median"], 3
            )
    return {
        "bench": "compare-summary",
        "repetitions": repeat,
        "aggregate": "median (min, max) of the repetitions",
        "latency_sizes": sizes,
        "throughput_jobs": jobs,
        "latency": latency_table,
        "throughput": throughput_table,
        "ratios": ratios,
    }
