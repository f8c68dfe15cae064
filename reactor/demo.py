"""``reactor demo``: the whole flow on the embedded default, narrated live.

It builds a fresh ``reactor_demo`` database on the embedded server, a git repository with a
bare origin, a demo user and product with a sprint run, one story of three tasks and one
story of one task; starts the real daemon in this process with the built-in demo agent (a
subprocess that commits one file per task); enqueues the four jobs as the UI would; and
narrates from the reactor's own structured log events. Nothing is simulated.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import git
import trio

from handlers.auth import token_hash
from reactor import aioloop
from reactor.app import embedded_database, serve_daemon
from reactor.config import Settings
from reactor.db import Database
from reactor.ids import new_cuid
from reactor.sqlfiles import query

DEADLINE_SECONDS = 50

_STORIES = (
    ("Sign-in page", ("Add the login form", "Validate the credentials", "Show a friendly error")),
    ("Health badge", ("Render the health badge",)),
)


@dataclass
class Scene:
    """What the narrator knows about the demo's jobs."""

    labels: dict[str, str] = field(default_factory=dict)  # job id -> "A1"
    titles: dict[str, str] = field(default_factory=dict)
    enqueued_at: dict[str, float] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class Narrator(logging.Handler):
    """Turns the reactor's structured events into a readable story on stdout."""

    def __init__(self, scene: Scene, out: TextIO) -> None:
        super().__init__(logging.INFO)
        self._scene = scene
        self._out = out
        self.changed: trio.Event | None = None
        self._last_deferred: tuple[str, tuple[str, ...]] | None = None

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self._scene.started
        print(f"[{elapsed:5.2f}s] {text}", file=self._out, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__
        line = self._describe(record.getMessage(), fields)
        if line:
            self.say(line)
        if self.changed is not None and trio.lowlevel.in_trio_run():
            # From a worker thread set() raises; the next event from trio wakes the watcher.
            with contextlib.suppress(RuntimeError):
                self.changed.set()

    def _label(self, fields: dict[str, Any]) -> str:
        job_id = str(fields.get("job_id", ""))
        return self._scene.labels.get(job_id, job_id[-6:])

    def _describe(self, event: str, f: dict[str, Any]) -> str | None:
        label = self._label(f)
        if event == "claim.claimed":
            title = self._scene.titles.get(str(f.get("job_id")), "")
            if label.endswith("1"):
                return (
                    f"▸ {label} claimed {f.get('waited_ms')} ms after its enqueue commit ({title})"
                )
            return f"▸ {label} claimed the moment its turn came: the previous task ended ({title})"
        if event == "worktree.ready":
            how = "reusing the story's branch" if f.get("reused_branch") else "new story branch"
            stale = (
                " — removed the previous task's worktree first" if f.get("removed_stale") else ""
            )
            where = f"worktree …{Path(str(f.get('path'))).name[-8:]} on {f.get('branch')}"
            return f"  {label}: {where} ({how}, base {str(f.get('base_sha'))[:7]}){stale}"
        if event == "agent.started":
            return f"  {label}: demo agent started (pid {f.get('pid')})"
        if event == "transition.finished":
            self._scene.finished.add(str(f.get("job_id")))
            if f.get("stored") != "DONE":
                self._scene.failures.append(f"{label}: {f.get('stored')} ({f.get('why')})")
            pushed = f"pushed {f.get('branch')}" if f.get("pushed") else str(f.get("why"))
            return f"✔ {label} {str(f.get('stored')).lower()}: {pushed}   {self._progress()}"
        if event == "cleanup.deferred":
            # Both the status change and the agent's exit ask for cleanup: say it once.
            seen = (str(f.get("story_id")), tuple(f.get("active_jobs") or ()))
            if seen == self._last_deferred:
                return None
            self._last_deferred = seen
            return f"  cleanup deferred: {len(seen[1])} sibling job(s) of the story still active"
        if event == "cleanup.removed":
            self._scene.removed.add(str(f.get("job_id")))
            kept = "branch kept" if not f.get("branch_deleted") else "branch deleted"
            return (
                f"  cleanup: removed {label}'s worktree ({kept}): the story's last active job ended"
            )
        if event in ("job.prepare_failed", "agent.job_failed", "rescue.lease_expired"):
            self._scene.failures.append(f"{label}: {f.get('why')}")
            return f"! {label}: {f.get('why')}"
        return None

    def _progress(self) -> str:
        total = len(self._scene.labels)
        done = len(self._scene.finished)
        return f"[{'#' * done}{'-' * (total - done)}] {done}/{total} done"


async def run_demo(settings: Settings, *, out: TextIO = sys.stdout, keep: bool = False) -> int:
    scene = Scene()
    narrator = Narrator(scene, out)
    root = logging.getLogger()
    quiet = [handler for handler in root.handlers if handler.get_name() == "reactor"]
    for handler in quiet:
        handler.setLevel(logging.ERROR)
    root.addHandler(narrator)
    root.setLevel(logging.INFO)
    workdir = Path(tempfile.mkdtemp(prefix="reactor-demo-"))
    try:
        async with aioloop.open_loop():
            return await _play(settings, scene, narrator, workdir, out)
    finally:
        root.removeHandler(narrator)
        for handler in quiet:
            handler.setLevel(logging.NOTSET)
        if keep:
            print(f"\nDemo files kept in {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _play(
    settings: Settings, scene: Scene, narrator: Narrator, workdir: Path, out: TextIO
) -> int:
    narrator.say(f"starting the embedded PostgreSQL in {settings.data_dir} (first run: initdb)")
    dsn = await embedded_database(settings, demo=True)
    narrator.say(f"database ready: {dsn}")
    repo_root = await trio.to_thread.run_sync(_make_repository, workdir)
    narrator.say(f"git repository {repo_root} with a bare origin ({workdir / 'origin.git'})")
    db = await Database.connect(dsn, max_size=4, application_name="reactor-demo")
    try:
        seed = await _seed(db, scene)
        demo_settings = settings.with_overrides(
            database_url=dsn,
            direct_url=None,
            token=seed["token"],
            instance_id="reactor-demo",
            repo_roots_by_product={seed["product_id"]: repo_root},
            worktree_dir=workdir / "worktrees",
            log_dir=workdir / "logs",
            agent_command=f"{shlex.quote(sys.executable)} -m reactor.demo_agent "
            '"$SCRUM4ME_JOB_CONTEXT"',
            concurrency=2,
            http_host="127.0.0.1",
            http_port=0,
            cleanup_grace_seconds=0.0,
            kinds=("TASK_IMPLEMENTATION",),
            worktrees=True,
        )
        async with trio.open_nursery() as nursery:
            daemon = await nursery.start(serve_daemon, demo_settings, db)
            narrator.say(
                f"daemon up: listening on job_enqueued, agent slots 2, http://127.0.0.1:{daemon.port}/health"
            )
            await _enqueue_all(db, seed, scene, narrator)
            await _wait_until_settled(scene, narrator, workdir)
            daemon.stop.set()
        await _summary(db, scene, workdir, out)
    finally:
        await db.close()
    ok = not scene.failures and len(scene.finished) == len(scene.labels)
    print(
        "\nreactor demo: "
        + (
            "all jobs done, pushed and cleaned up."
            if ok
            else "something went wrong: " + "; ".join(scene.failures)
        ),
        file=out,
    )
    return 0 if ok else 1


def _make_repository(workdir: Path) -> Path:
    """A bare origin with one commit on main, and a clone of it as the product's repo root."""
    origin = git.Repo.init(workdir / "origin.git", bare=True, initial_branch="main")
    seed = git.Repo.init(workdir / "seed", initial_branch="main")
    (workdir / "seed" / "README.md").write_text("# Demo product\n", encoding="utf-8")
    seed.index.add(["README.md"])
    author = git.Actor("reactor demo", "demo@scrum4me.invalid")
    seed.index.commit("Initial commit", author=author, committer=author)
    seed.git.push(str(workdir / "origin.git"), "main:main")
    clone = git.Repo.clone_from(str(workdir / "origin.git"), workdir / "repo")
    for repo in (origin, seed, clone):
        repo.close()
    return workdir / "repo"


async def _seed(db: Database, scene: Scene) -> dict[str, Any]:
    user_id, token_id, product_id = new_cuid(), new_cuid(), new_cuid()
    token = f"s4m_demo_{new_cuid()}"
    await db.fetchval(query("seed.insert_user"), user_id, "demo-agent", False)
    await db.fetchval(
        query("seed.insert_api_token"), token_id, user_id, token_hash(token), "reactor demo"
    )
    await db.fetchval(
        query("seed.insert_product"),
        product_id,
        user_id,
        "Demo product",
        "DEMO",
        "https://example.invalid/demo/app.git",
    )
    pbi_id, sprint_id, run_id = new_cuid(), new_cuid(), new_cuid()
    await db.fetchval(query("seed.insert_pbi"), pbi_id, product_id, "PBI-1", "Better onboarding", 1)
    await db.fetchval(query("seed.insert_sprint"), sprint_id, product_id, "S1", "Ship the demo")
    await db.fetchval(query("seed.insert_sprint_run"), run_id, sprint_id, user_id, "STORY")
    tasks: list[tuple[str, str, str]] = []
    for story_number, (story_title, task_titles) in enumerate(_STORIES, start=1):
        story_id = new_cuid()
        letter = "AB"[story_number - 1]
        await db.fetchval(
            query("seed.insert_story"),
            story_id,
            pbi_id,
            product_id,
            sprint_id,
            f"ST-{letter}",
            story_title,
            story_number,
        )
        for number, title in enumerate(task_titles, start=1):
            task_id = new_cuid()
            plan = f"- Change `tasks/DEMO-{letter}{number}.md`: {title.lower()}."
            await db.fetchval(
                query("seed.insert_task"),
                task_id,
                story_id,
                product_id,
                sprint_id,
                f"DEMO-{letter}{number}",
                title,
                plan,
                number,
                None,
            )
            tasks.append((f"{letter}{number}", title, task_id))
    return {
        "token": token,
        "user_id": user_id,
        "product_id": product_id,
        "run_id": run_id,
        "tasks": tasks,
    }


async def _enqueue_all(
    db: Database, seed: dict[str, Any], scene: Scene, narrator: Narrator
) -> None:
    narrator.say(
        "enqueueing 4 jobs the way the Scrum4Me UI does (plain INSERTs, no explicit NOTIFY)"
    )
    for label, title, task_id in seed["tasks"]:
        job_id = new_cuid()
        scene.labels[job_id] = label
        scene.titles[job_id] = title
        scene.enqueued_at[job_id] = time.monotonic()
        await db.fetchrow(
            query("seed.enqueue_job"),
            job_id,
            seed["user_id"],
            seed["product_id"],
            task_id,
            seed["run_id"],
            "TASK_IMPLEMENTATION",
            None,
        )
        narrator.say(f"  enqueued {label} ({title})")


async def _wait_until_settled(scene: Scene, narrator: Narrator, workdir: Path) -> None:
    total = len(scene.labels)

    def worktrees_left() -> bool:
        return any((workdir / "worktrees" / job_id).exists() for job_id in scene.labels)

    with trio.move_on_after(DEADLINE_SECONDS) as deadline:
        while len(scene.finished) < total or worktrees_left():
            if scene.failures:
                return
            narrator.changed = trio.Event()
            await narrator.changed.wait()
    if deadline.cancelled_caught:
        scene.failures.append(f"not settled within {DEADLINE_SECONDS} s")


async def _summary(db: Database, scene: Scene, workdir: Path, out: TextIO) -> None:
    rows = await db.fetch(query("demo.summary"), list(scene.labels))
    print("\nSummary", file=out)
    header = ("job", "task", "status", "claimed after", "worked", "branch", "pushed", "worktree")
    table = [header]
    for row in sorted(rows, key=lambda r: scene.labels[r["id"]]):
        table.append((
            scene.labels[row["id"]],
            row["title"],
            row["status"].lower(),
            f"{row['wait_seconds'] * 1000:.0f} ms",
            f"{row['work_seconds']:.1f} s",
            row["branch"] or "-",
            "yes" if row["pushed_at"] else "no",
            "removed" if not (workdir / "worktrees" / row["id"]).exists() else "kept",
        ))  # fmt: skip
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for index, line in enumerate(table):
        print(
            "  "
            + "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)),
            file=out,
        )
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths), file=out)
    origin = await trio.to_thread.run_sync(_origin_branches, workdir / "origin.git")
    print(
        "\nOrigin now has: "
        + ", ".join(
            f"{name} ({count} commit{'s' * (count != 1)} on top of main)" for name, count in origin
        ),
        file=out,
    )


def _origin_branches(origin: Path) -> list[tuple[str, int]]:
    repo = git.Repo(origin)
    try:
        return [
            (head.name, int(repo.git.rev_list("--count", f"main..{head.name}")))
            for head in repo.heads
            if head.name != "main"
        ]
    finally:
        repo.close()
