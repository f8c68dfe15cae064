"""The built-in demo agent: commits one file per task in the job's worktree, then exits 0.

``reactor demo`` launches it through ``--agent-command`` exactly as a real agent would be
launched: working directory = the job's worktree; the command line passes the job context file
the daemon exported as SCRUM4ME_JOB_CONTEXT:
``python -m reactor.demo_agent "$SCRUM4ME_JOB_CONTEXT"``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import git


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m reactor.demo_agent <job context JSON file>", file=sys.stderr)
        return 2
    context = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    task = context.get("task") or {}
    worktree = Path(context.get("worktree_path") or Path.cwd())
    time.sleep(0.3)  # a moment of "work", so the narration shows jobs overlapping
    name = f"{task.get('code') or context['job_id']}.md"
    target = worktree / "tasks" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        f"# {task.get('title', 'task')}\n\n{task.get('implementation_plan') or ''}\n",
        encoding="utf-8",
    )
    repo = git.Repo(worktree)
    try:
        repo.index.add([str(target.relative_to(worktree))])
        author = git.Actor("reactor demo agent", "demo-agent@scrum4me.invalid")
        repo.index.commit(
            f"{task.get('code', 'task')}: {task.get('title', '')}", author=author, committer=author
        )
    finally:
        repo.close()
    print(f"committed tasks/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
