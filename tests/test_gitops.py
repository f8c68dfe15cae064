"""handlers.gitops against real repositories: a bare origin, a clone, and agent worktrees."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from handlers import gitops, validate
from handlers.gitops import GitError, create_worktree, push_branch, remove_worktree
from tests.gitrepo import (
    Setup,
    branches,
    commit,
    commits_between,
    git,
    has_branch,
    make_setup,
    push_from_other_clone,
    rev,
)

BRANCH = "feat/story-abcd1234"


@pytest.fixture
def repo(tmp_path: Path) -> Setup:
    return make_setup(tmp_path)


def _create(
    repo: Setup, job_id: str, branch: str = BRANCH, *, reuse: bool = False
) -> gitops.WorktreeInfo:
    return create_worktree(repo.root, repo.worktrees, job_id, branch, reuse_branch=reuse)


def _commit_locally_on(repo: Setup, branch: str) -> str:
    """Give the root clone a local ``branch`` with one commit origin does not have."""
    git(repo.root, "branch", branch, "origin/main")
    scratch = repo.worktrees.parent / "scratch"
    git(repo.root, "worktree", "add", "--quiet", str(scratch), branch)
    sha = commit(scratch, "unpushed.txt")
    git(repo.root, "worktree", "remove", str(scratch))
    return sha


# --- create ---------------------------------------------------------------------------------


def test_worktree_is_created_at_job_dir_on_requested_branch(repo: Setup) -> None:
    info = _create(repo, "job1")

    assert info.path == repo.worktrees / "job1"
    assert git(info.path, "rev-parse", "--abbrev-ref", "HEAD") == BRANCH
    assert info.branch == BRANCH
    assert info.base_ref == "origin/main"
    assert info.base_sha == rev(repo.root, "origin/main") == git(info.path, "rev-parse", "HEAD")
    assert not info.reused_branch
    assert info.removed_stale == ()


@pytest.mark.parametrize("default_branch", ["master", "trunk"])
def test_base_is_origin_default_branch_whatever_its_name(
    tmp_path: Path, default_branch: str
) -> None:
    repo = make_setup(tmp_path, default_branch=default_branch)

    info = _create(repo, "job1")

    assert gitops.resolve_default_ref(repo.root) == f"origin/{default_branch}"
    assert info.base_ref == f"origin/{default_branch}"
    assert info.base_sha == rev(repo.root, f"origin/{default_branch}")


def test_default_ref_falls_back_to_origin_main_when_origin_head_is_unknown(repo: Setup) -> None:
    git(repo.root, "symbolic-ref", "--delete", "refs/remotes/origin/HEAD")
    git(repo.root, "remote", "set-url", "origin", str(repo.worktrees.parent / "gone.git"))

    assert gitops.resolve_default_ref(repo.root) == "origin/main"


def test_default_ref_error_names_the_repo_when_nothing_is_known(tmp_path: Path) -> None:
    repo = make_setup(tmp_path, default_branch="trunk")
    git(repo.root, "symbolic-ref", "--delete", "refs/remotes/origin/HEAD")
    git(repo.root, "remote", "set-url", "origin", str(tmp_path / "gone.git"))

    with pytest.raises(GitError, match=f"{repo.root}.*set-head"):
        gitops.resolve_default_ref(repo.root)


def test_three_sibling_tasks_share_one_branch_and_push_three_commits(repo: Setup) -> None:
    previous: Path | None = None
    for number, job in enumerate(["job-a", "job-b", "job-c"]):
        info = _create(repo, job, reuse=number > 0)

        assert info.branch == BRANCH
        assert info.removed_stale == (() if previous is None else (previous,))
        assert previous is None or not previous.exists()
        commit(info.path, f"task{number}.txt")
        assert push_branch(info.path, BRANCH, info.base_sha).outcome == "pushed"
        previous = info.path

    assert branches(repo.origin) == {"main", BRANCH}
    assert commits_between(repo.origin, "main", BRANCH) == 3


def test_reuse_of_remote_only_branch_starts_from_origin_tip(repo: Setup) -> None:
    pushed = push_from_other_clone(repo, BRANCH, repo.worktrees.parent / "other")
    git(repo.root, "fetch", "--quiet", "origin")

    info = _create(repo, "job1", reuse=True)

    assert info.reused_branch
    assert info.base_sha == pushed
    assert git(info.path, "rev-parse", "--abbrev-ref", "@{upstream}") == f"origin/{BRANCH}"


def test_reuse_of_local_only_branch_checks_it_out(repo: Setup) -> None:
    local = _commit_locally_on(repo, BRANCH)

    info = _create(repo, "job1", reuse=True)

    assert info.reused_branch
    assert info.base_sha == local


def test_reuse_with_stale_local_branch_moves_to_origin_tip(repo: Setup) -> None:
    git(repo.root, "branch", BRANCH, "origin/main")
    pushed = push_from_other_clone(repo, BRANCH, repo.worktrees.parent / "other")

    info = _create(repo, "job1", reuse=True)

    assert info.base_sha == pushed
    assert rev(repo.root, f"refs/heads/{BRANCH}") == pushed


def test_reuse_never_resets_a_local_branch_with_unpushed_commits(repo: Setup) -> None:
    push_from_other_clone(repo, BRANCH, repo.worktrees.parent / "other")
    local = _commit_locally_on(repo, BRANCH)

    info = _create(repo, "job1", reuse=True)

    assert info.branch == BRANCH
    assert info.base_sha == local


def test_reuse_of_branch_nowhere_starts_fresh_from_default(repo: Setup) -> None:
    info = _create(repo, "job1", reuse=True)

    assert not info.reused_branch
    assert info.base_sha == rev(repo.root, "origin/main")


def test_fresh_claim_keeps_local_branch_with_unpushed_commits_and_renames(repo: Setup) -> None:
    local = _commit_locally_on(repo, BRANCH)

    info = _create(repo, "job1")

    assert info.branch.startswith(f"{BRANCH}-")
    assert info.branch.removeprefix(f"{BRANCH}-").isdigit()
    assert rev(repo.root, f"refs/heads/{BRANCH}") == local
    assert info.base_sha == rev(repo.root, "origin/main")


def test_fresh_claim_deletes_pushed_orphan_branch_and_reuses_its_name(repo: Setup) -> None:
    git(repo.root, "branch", BRANCH, "origin/main")

    info = _create(repo, "job1")

    assert info.branch == BRANCH
    assert not info.reused_branch


def test_fresh_claim_continues_a_branch_already_pushed(repo: Setup) -> None:
    pushed = push_from_other_clone(repo, BRANCH, repo.worktrees.parent / "other")

    info = _create(repo, "job1")

    assert info.reused_branch
    assert info.base_sha == pushed


def test_existing_path_is_refused(repo: Setup) -> None:
    (repo.worktrees / "job1").mkdir(parents=True)

    with pytest.raises(GitError, match="Worktree path already exists"):
        _create(repo, "job1")


def test_branch_checked_out_outside_the_worktree_dir_is_not_evicted(repo: Setup) -> None:
    elsewhere = repo.worktrees.parent / "human"
    git(repo.root, "worktree", "add", "--quiet", "-b", BRANCH, str(elsewhere))

    with pytest.raises(GitError, match="outside"):
        _create(repo, "job1", reuse=True)
    assert elsewhere.is_dir()


def test_unreachable_origin_fails_without_leaving_anything(repo: Setup) -> None:
    git(repo.root, "remote", "set-url", "origin", str(repo.worktrees.parent / "gone.git"))

    with pytest.raises(GitError, match="Cannot fetch from origin"):
        _create(repo, "job1")
    assert not (repo.worktrees / "job1").exists()


def test_failure_after_add_removes_the_half_made_worktree(repo: Setup) -> None:
    (repo.root / "node_modules").mkdir()
    info_dir = repo.root / ".git" / "info"
    (info_dir / "exclude").unlink()
    info_dir.rmdir()
    info_dir.write_text("")  # git shrugs; writing info/exclude after the add fails

    with pytest.raises(GitError, match="Worktree creation failed"):
        _create(repo, "job1")

    assert not (repo.worktrees / "job1").exists()
    assert str(repo.worktrees / "job1") not in git(repo.root, "worktree", "list")
    assert (repo.root / "node_modules").is_dir()


@pytest.mark.parametrize("job_id", ["../x", "/etc", "-rf", "a/b", "", "x\x00y"])
def test_hostile_job_ids_are_rejected_before_touching_disk(repo: Setup, job_id: str) -> None:
    with pytest.raises(validate.InvalidInput, match="job_id"):
        _create(repo, job_id)
    assert not repo.worktrees.exists()


@pytest.mark.parametrize("branch", ["-delete", "a..b", "foo.lock", "a b", "x~1", "@", "refs//x"])
def test_hostile_branch_names_are_rejected_before_touching_disk(repo: Setup, branch: str) -> None:
    with pytest.raises(validate.InvalidInput, match="branch"):
        _create(repo, "job1", branch)
    assert not repo.worktrees.exists()
    assert branches(repo.root) == {"main"}


def test_concurrent_creates_on_one_repo_all_succeed(repo: Setup) -> None:
    count = 16
    start = threading.Barrier(count)

    def create(number: int) -> gitops.WorktreeInfo:
        start.wait()
        return _create(repo, f"job{number}", f"feat/story-{number:08d}")

    with ThreadPoolExecutor(max_workers=count) as pool:
        infos = list(pool.map(create, range(count)))

    for number, info in enumerate(infos):
        assert git(info.path, "rev-parse", "--abbrev-ref", "HEAD") == f"feat/story-{number:08d}"
    assert len(git(repo.root, "worktree", "list").splitlines()) == count + 1


# --- node_modules ----------------------------------------------------------------------------


def test_node_modules_is_linked_and_hidden_from_git_status(repo: Setup) -> None:
    (repo.root / "node_modules").mkdir()

    info = _create(repo, "job1")

    link = info.path / "node_modules"
    assert link.is_symlink()
    assert Path(os.readlink(link)) == repo.root / "node_modules"
    assert git(info.path, "status", "--porcelain") == ""


def test_node_modules_is_not_linked_when_the_repo_has_none_or_linking_is_off(repo: Setup) -> None:
    first = _create(repo, "job1")
    (repo.root / "node_modules").mkdir()
    second = create_worktree(
        repo.root, repo.worktrees, "job2", "feat/other", reuse_branch=False, link_node_modules=False
    )

    assert not os.path.lexists(first.path / "node_modules")
    assert not os.path.lexists(second.path / "node_modules")


def test_shared_node_modules_survives_worktree_removal(repo: Setup) -> None:
    (repo.root / "node_modules" / "pkg").mkdir(parents=True)
    (repo.root / "node_modules" / "pkg" / "index.js").write_text("module.exports = 1\n")
    info = _create(repo, "job1")

    assert remove_worktree(repo.root, info.path, keep_branch=True).removed

    assert (repo.root / "node_modules" / "pkg" / "index.js").read_text() == "module.exports = 1\n"


# --- push ------------------------------------------------------------------------------------


def test_push_without_new_commits_is_no_changes(repo: Setup) -> None:
    info = _create(repo, "job1")

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason, result.head_sha) == ("no-changes", None, None)
    assert not has_branch(repo.origin, BRANCH)


def test_push_without_base_sha_compares_with_origin_default(tmp_path: Path) -> None:
    repo = make_setup(tmp_path, default_branch="master")
    info = _create(repo, "job1")

    assert push_branch(info.path, BRANCH, None).outcome == "no-changes"


def test_push_with_commits_publishes_the_branch(repo: Setup) -> None:
    info = _create(repo, "job1")
    head = commit(info.path)

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason, result.head_sha) == ("pushed", None, head)
    assert rev(repo.origin, BRANCH) == head
    assert git(info.path, "rev-parse", "--abbrev-ref", "@{upstream}") == f"origin/{BRANCH}"


def test_push_rejected_as_non_fast_forward_is_a_conflict(repo: Setup) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    push_from_other_clone(repo, BRANCH, repo.worktrees.parent / "other")

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason, result.head_sha) == ("failed", "conflict", None)
    assert "rejected" in result.detail


def test_push_to_missing_remote_fails_with_unknown_reason(repo: Setup) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    git(repo.root, "remote", "set-url", "origin", str(repo.worktrees.parent / "gone.git"))

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason) == ("failed", "unknown")
    assert "gone.git" in result.detail


def test_push_refuses_when_head_is_not_the_branch_tip(repo: Setup) -> None:
    info = _create(repo, "job1")
    git(info.path, "checkout", "--quiet", "-b", "agent-own-branch")
    commit(info.path)

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason) == ("failed", "unknown")
    assert not has_branch(repo.origin, BRANCH)


class _AuthRequired(BaseHTTPRequestHandler):
    """A git HTTP remote that wants credentials for everything."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return


@pytest.fixture
def auth_remote() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AuthRequired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/acme/app.git"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_push_needing_credentials_fails_fast_as_no_credentials(
    repo: Setup, auth_remote: str
) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    git(repo.root, "remote", "set-url", "--push", "origin", auth_remote)

    result = push_branch(info.path, BRANCH, info.base_sha)

    assert (result.outcome, result.reason) == ("failed", "no-credentials")


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ("fatal: Authentication failed for 'https://git.example/x.git/'", "no-credentials"),
        (
            "fatal: could not read Username for 'https://git.example': No such device",
            "no-credentials",
        ),
        (
            "fatal: could not read Username for 'https://x': terminal prompts disabled",
            "no-credentials",
        ),
        (" ! [rejected]        b -> b (non-fast-forward)", "conflict"),
        (" ! [rejected]        b -> b (fetch first)", "conflict"),
        ("error: failed to push some refs: reference already exists on the remote", "conflict"),
        ("fatal: '/nowhere' does not appear to be a git repository", "unknown"),
        ("", "unknown"),
    ],
)
def test_push_stderr_is_classified(stderr: str, reason: str) -> None:
    assert gitops.classify_push_failure(stderr) == reason


# --- remove ----------------------------------------------------------------------------------


def test_remove_keeps_the_branch_when_asked(repo: Setup) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    push_branch(info.path, BRANCH, info.base_sha)

    result = remove_worktree(repo.root, info.path, keep_branch=True)

    assert (result.removed, result.branch, result.branch_deleted) == (True, BRANCH, False)
    assert not info.path.exists()
    assert has_branch(repo.root, BRANCH)


def test_remove_deletes_the_branch_when_origin_has_its_tip(repo: Setup) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    push_branch(info.path, BRANCH, info.base_sha)

    result = remove_worktree(repo.root, info.path, keep_branch=False)

    assert (result.removed, result.branch_deleted) == (True, True)
    assert not has_branch(repo.root, BRANCH)
    assert has_branch(repo.origin, BRANCH)


def test_remove_keeps_a_branch_with_unpushed_commits(repo: Setup) -> None:
    info = _create(repo, "job1")
    head = commit(info.path)

    result = remove_worktree(repo.root, info.path, keep_branch=False)

    assert (result.removed, result.branch_deleted) == (True, False)
    assert "origin lacks" in result.detail
    assert rev(repo.root, f"refs/heads/{BRANCH}") == head
    assert gitops.branch_tip_on_origin(repo.root, BRANCH) is False


def test_branch_tip_on_origin_is_true_once_pushed(repo: Setup) -> None:
    info = _create(repo, "job1")
    commit(info.path)
    push_branch(info.path, BRANCH, info.base_sha)

    assert gitops.branch_tip_on_origin(repo.root, BRANCH) is True
    assert gitops.branch_tip_on_origin(repo.root, "feat/never-existed") is False


def test_removing_a_missing_directory_reports_not_removed(repo: Setup) -> None:
    result = remove_worktree(repo.root, repo.worktrees / "job1", keep_branch=False)

    assert (result.removed, result.branch, result.branch_deleted) == (False, None, False)


def test_untracked_leftover_directory_is_force_removed(repo: Setup) -> None:
    leftover = repo.worktrees / "job1"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "file.txt").write_text("junk\n")

    result = remove_worktree(repo.root, leftover, keep_branch=False)

    assert (result.removed, result.branch) == (True, None)
    assert not leftover.exists()


def test_remove_refuses_paths_that_are_not_job_directories(tmp_path: Path) -> None:
    repo = make_setup(tmp_path / "outer")
    standalone = repo.worktrees / "job9"
    git(tmp_path, "init", "--quiet", str(standalone))

    with pytest.raises(validate.InvalidInput, match=r"'\.\.'"):
        remove_worktree(repo.root, repo.root / ".." / "root", keep_branch=True)
    with pytest.raises(validate.InvalidInput, match="job_id"):
        remove_worktree(repo.root, repo.worktrees / ".locks", keep_branch=True)
    with pytest.raises(GitError, match="contains the repository"):
        remove_worktree(repo.root, tmp_path / "outer", keep_branch=True)
    with pytest.raises(GitError, match="standalone repository"):
        remove_worktree(repo.root, standalone, keep_branch=True)
    with pytest.raises(GitError, match="not inside"):
        remove_worktree(repo.root, standalone, keep_branch=True, worktree_dir=tmp_path)
    assert (repo.root / ".git").is_dir()
    assert (standalone / ".git").is_dir()


# --- repo_name_from_url ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/acme/my-app.git", "my-app"),
        ("https://github.com/acme/my-app", "my-app"),
        ("https://github.com/acme/my-app/", "my-app"),
        ("https://github.com/acme/my-app.git/", "my-app"),
        ("ssh://git@github.com:22/acme/my_app.git", "my_app"),
        ("git@github.com:acme/my.app.git", "my.app"),
        ("git@github.com:my-app", "my-app"),
        ("https://x/..", None),
        ("https://x/-rf.git", None),
        ("https://x/.hidden", None),
        ("https://x/a..b", None),
        ("no-separator", None),
    ],
)
def test_repo_name_is_taken_from_the_url_and_validated(url: str, name: str | None) -> None:
    assert gitops.repo_name_from_url(url) == name
