"""``reactor demo`` end to end, as a user runs it on a machine with nothing set up.

The demo starts its own embedded PostgreSQL. HOME, the XDG directories and TMPDIR all point
into the test's tmp_path, so it initialises a fresh server there instead of touching the real
``~/.local/share/reactor``, and whatever it forgets to clean up stays visible to the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import trio

from tests.pg import embedded_server_stopped
from tests.waiting import eventually

LABELS = ("A1", "A2", "A3", "B1")
BRANCH = re.compile(r"^feat/story-[0-9a-z]{8}$")


def summary_rows(out: str) -> dict[str, list[str]]:
    """The Summary table: label -> [task, status, claimed after, worked, branch, pushed, tree].

    Columns are padded with at least two spaces and no cell contains two in a row.
    """
    table = out.split("\nSummary\n", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


async def test_the_demo_runs_every_job_to_a_pushed_branch_and_cleans_up_after_itself(
    tmp_path: Path,
) -> None:
    data_home, tmp_dir = tmp_path / "xdg-data", tmp_path / "tmp"
    (tmp_path / "home").mkdir()
    tmp_dir.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(data_home),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "TMPDIR": str(tmp_dir),
    }
    start = time.monotonic()
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "reactor", "demo"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=120,
            check=False,
        )
    )
    elapsed = time.monotonic() - start
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"

    # Its own server in the test's data home, not the user's.
    pgdata = data_home / "reactor" / "pgdata"
    assert f"starting the embedded PostgreSQL in {data_home / 'reactor'}" in out
    assert (pgdata / "PG_VERSION").is_file()
    assert not (tmp_path / "home" / ".local").exists()

    rows = summary_rows(out)
    assert sorted(rows) == sorted(LABELS), out
    for label in LABELS:
        _task, status, _claimed, _worked, branch, pushed, worktree = rows[label]
        assert (status, pushed, worktree) == ("done", "yes", "removed"), (label, rows[label])
        assert BRANCH.match(branch), (label, branch)
        assert f"✔ {label} done: pushed {branch}" in out
    # One branch per story: the three tasks of story A share one, B has its own.
    story_a = rows["A1"][4]
    assert rows["A2"][4] == rows["A3"][4] == story_a != rows["B1"][4]
    origin = out.split("Origin now has:", 1)[1].splitlines()[0]
    assert f"{story_a} (3 commits on top of main)" in origin
    assert f"{rows['B1'][4]} (1 commit on top of main)" in origin
    assert out.rstrip().endswith("reactor demo: all jobs done, pushed and cleaned up.")

    # The demo's scratch repositories are gone, and so, shortly after, is its server.
    assert list(tmp_dir.glob("reactor-demo-*")) == []
    # psutil sees the postmaster by its "-D <pgdata>" argument; its workers go down with it,
    # and a cleanly stopped server removes its postmaster.pid.
    await eventually(
        lambda: embedded_server_stopped(pgdata),
        within=10,
    )
