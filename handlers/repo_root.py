"""Find the local clone a job's worktree is cut from (scrum4me-mcp ``resolveRepoRoot``).

Order, first hit wins: for a task with its own repo URL the env override, the config file and
the ``~/Projects/<name>`` convention for that repository; then the same three for the product.
An explicitly configured path that is not a git clone stops the search: silently falling
through to another clone could put the work in the wrong repository. The environment is not
read here; the caller passes the maps in :class:`RepoRootConfig`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from handlers import validate
from handlers.gitrefs import repo_name_from_url
from reactor.logs import get_logger

log = get_logger("reactor.repo_root")

_ENV_PRODUCT = "SCRUM4ME_REPO_ROOT_"
_ENV_REPO = "SCRUM4ME_REPO_ROOT_REPO_"


@dataclass(frozen=True)
class RepoRootConfig:
    by_product: Mapping[str, Path]  # SCRUM4ME_REPO_ROOT_<productId>
    by_repo: Mapping[str, Path]  # SCRUM4ME_REPO_ROOT_REPO_<repoName>
    config_file: Path  # ~/.scrum4me-agent-config.json
    home: Path


@dataclass(frozen=True)
class RepoRoot:
    path: Path | None  # None: unresolved, see hint
    via: str
    hint: str | None


@dataclass(frozen=True)
class _Candidate:
    via: str
    label: str  # how an operator finds the setting, for hints
    path: Path
    explicit: bool  # configured by someone, so a bad path is an error rather than a miss


class _Unusable(Exception):
    def __init__(self, via: str, hint: str) -> None:
        super().__init__(hint)
        self.via = via
        self.hint = hint


def resolve_repo_root(
    cfg: RepoRootConfig,
    product_id: str,
    product_repo_url: str | None,
    task_repo_url: str | None,
) -> RepoRoot:
    """Resolve the clone for a product (or a task's own repository) and log how."""
    result = _resolve(cfg, product_id, product_repo_url, task_repo_url)
    if result.path is not None:
        log.info("repo_root.resolved", product_id=product_id, via=result.via, path=str(result.path))
    else:
        log.warning("repo_root.unresolved", product_id=product_id, via=result.via, why=result.hint)
    return result


def _resolve(
    cfg: RepoRootConfig, product_id: str, product_repo_url: str | None, task_repo_url: str | None
) -> RepoRoot:
    try:
        validate.product_id(product_id)
    except validate.InvalidInput as exc:
        return RepoRoot(None, "none", str(exc))
    config = _ConfigFile(cfg.config_file, cfg.home)
    task_repo = repo_name_from_url(task_repo_url) if task_repo_url else None
    product_repo = repo_name_from_url(product_repo_url) if product_repo_url else None
    try:
        for candidate in _candidates(cfg, config, product_id, task_repo, product_repo):
            if _is_clone(candidate.path):
                return RepoRoot(candidate.path, candidate.via, None)
            if candidate.explicit:
                return RepoRoot(None, candidate.via, _bad_path_hint(candidate))
    except _Unusable as exc:
        return RepoRoot(None, exc.via, exc.hint)
    return RepoRoot(
        None, "none", _not_found_hint(cfg, product_id, task_repo_url, task_repo, product_repo)
    )


def _candidates(
    cfg: RepoRootConfig,
    config: _ConfigFile,
    product_id: str,
    task_repo: str | None,
    product_repo: str | None,
) -> Iterator[_Candidate]:
    if task_repo is not None:
        yield from _keyed(cfg.by_repo.get(task_repo), f"{_ENV_REPO}{task_repo}", config, task_repo)
        yield _convention(cfg.home, task_repo)
    yield from _keyed(
        cfg.by_product.get(product_id), f"{_ENV_PRODUCT}{product_id}", config, product_id
    )
    if product_repo is not None:
        yield _convention(cfg.home, product_repo)


def _keyed(
    env_path: Path | None, env_var: str, config: _ConfigFile, key: str
) -> Iterator[_Candidate]:
    if env_path is not None:
        yield _Candidate(f"env:{env_var}", f"env var {env_var}", env_path, explicit=True)
    # Read the file only when the environment did not answer, so a broken file cannot
    # block a setup that does not rely on it.
    configured = config.roots().get(key)
    if configured is not None:
        label = f'"repoRoots": {{"{key}": ...}} in {config.path}'
        yield _Candidate(f"config:repoRoots[{key}]", label, configured, explicit=True)


def _convention(home: Path, repo: str) -> _Candidate:
    return _Candidate(
        f"convention:~/Projects/{repo}",
        f"~/Projects/{repo}",
        home / "Projects" / repo,
        explicit=False,
    )


def _is_clone(path: Path) -> bool:
    return path.is_absolute() and path.is_dir() and (path / ".git").exists()


def _bad_path_hint(candidate: _Candidate) -> str:
    if not candidate.path.is_absolute():
        problem = "which is not an absolute path"
    elif not candidate.path.exists():
        problem = "which does not exist"
    elif not candidate.path.is_dir():
        problem = "which is not a directory"
    else:
        problem = "which is not a git clone (no .git inside)"
    return (
        f"{candidate.label} points to {candidate.path}, {problem}. "
        "Point it at a clone of the repository or remove the setting."
    )


def _not_found_hint(
    cfg: RepoRootConfig,
    product_id: str,
    task_repo_url: str | None,
    task_repo: str | None,
    product_repo: str | None,
) -> str:
    repo = task_repo or product_repo
    config_file = _display(cfg.config_file, cfg.home)
    env = f"{_ENV_PRODUCT}{product_id}=/path/to/clone"
    if repo is None:
        hint = (
            f"No repo root for product {product_id}. Set {env}, or add "
            f'"repoRoots": {{"{product_id}": "/path"}} to {config_file}.'
        )
    else:
        hint = (
            f"No repo root for product {product_id} (repo {repo}). Set {env} or "
            f'{_ENV_REPO}{repo}=..., add "repoRoots": {{"{product_id}": "/path"}} to '
            f"{config_file}, or clone it to {_display(cfg.home / 'Projects' / repo, cfg.home)}."
        )
    if task_repo_url and task_repo is None:
        hint += f" (The task repo_url {task_repo_url!r} has no usable repository name.)"
    return hint


def _display(path: Path, home: Path) -> str:
    try:
        return f"~/{path.relative_to(home)}"
    except ValueError:
        return str(path)


class _ConfigFile:
    """``~/.scrum4me-agent-config.json``, read at most once per resolution, on first use."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self._home = home
        self._roots: dict[str, Path] | None = None

    def roots(self) -> dict[str, Path]:
        if self._roots is None:
            self._roots = self._load()
        return self._roots

    def _load(self) -> dict[str, Path]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._unusable(f"cannot be read as JSON ({exc})") from exc
        roots = data.get("repoRoots", {}) if isinstance(data, dict) else None
        if not isinstance(roots, dict) or not all(isinstance(v, str) for v in roots.values()):
            raise self._unusable('"repoRoots" must be an object of name -> path strings')
        return {str(key): self._expand(value) for key, value in roots.items()}

    def _expand(self, value: str) -> Path:
        if value == "~" or value.startswith("~/"):
            return self._home / value[2:]
        return Path(value)

    def _unusable(self, problem: str) -> _Unusable:
        return _Unusable(
            f"config:{self.path}",
            f"{self.path} {problem}. Expected "
            '{"repoRoots": {"<productId or repo name>": "/absolute/path/to/clone"}}.',
        )
