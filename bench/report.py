"""Markdown tables from the JSON lines of the benchmarks (``python -m bench report FILE...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _cell(spread: dict[str, float], digits: int = 2) -> str:
    fmt = f"{{:,.{digits}f}}"
    return (
        f"**{fmt.format(spread['median'])}** "
        f"({fmt.format(spread['min'])}–{fmt.format(spread['max'])})"
    )


def _latency(summary: dict[str, Any]) -> list[str]:
    rows = [
        "| system | p50 | p95 | p99 | max | enqueue p50 | commit→claim p50 | commit→claim p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system, row in summary["latency"].items():
        cells = [
            _cell(row[f]) for f in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "enqueue_call_ms_p50")
        ]
        cells += [
            _cell(row[key]) if key in row else "–"
            for key in ("commit_to_claim_p50_ms", "commit_to_claim_p99_ms")
        ]
        rows.append(f"| {system} | " + " | ".join(cells) + " |")
    return rows


def _throughput(summary: dict[str, Any]) -> list[str]:
    rows = [
        "| system / settings / K | jobs/s | worker CPU ms/job | PG CPU ms/job ≈ | steal % "
        "| busy % | verified |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in sorted(summary["throughput"].items(), key=lambda kv: kv[0].split("/")[2]):
        pg = row.get("pg_cpu_ms_per_job_approx")
        rows.append(
            f"| {key} | {_cell(row['jobs_per_s'], 0)} | {_cell(row['worker_cpu_ms_per_job'])} | "
            f"{_cell(pg) if pg else '–'} | "
            f"{_cell(row['cpu_steal_pct'], 1)} | {_cell(row['machine_cpu_busy_pct'], 0)} | "
            f"{'yes' if row['verified'] else 'NO'} |"
        )
    return rows


def render(paths: list[Path]) -> str:
    out: list[str] = []
    for path in paths:
        for raw in path.read_text().splitlines():
            if not raw.startswith("{"):
                continue
            line = json.loads(raw)
            if line.get("bench") == "compare-summary":
                out += [f"### {path.name}: medians of {line['repetitions']} (min–max)", ""]
                out += [*_latency(line), "", *_throughput(line), ""]
                out += ["ratios: " + json.dumps(line["ratios"]), ""]
            elif line.get("bench") in ("latency", "throughput", "idle", "worktree", "reconnect"):
                out.append(f"- `{json.dumps(line)}`")
    return "\n".join(out)
