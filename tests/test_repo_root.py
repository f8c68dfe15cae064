"""handlers.repo_root: which clone a job's worktree comes from, and what to do when none."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.repo_root import RepoRoot, RepoRootConfig, resolve_repo_root
from tests.gitrepo import git

PRODUCT = "prod1"
PRODUCT_URL = "https://git.example/acme/product-app.git"
TASK_URL = "git@git.example:acme/task-lib.git"


@dataclass
class World:
    tmp: Path
    home: Path
    by_product: dict[str, Path]
    by_repo: dict[str, Path]
    config: dict[str, str]

    @property
    def config_file(self) -> Path:
        return self.home / ".scrum4me-agent-config.json"

    def clone(self, name: str) -> Path:
        path = self.tmp / "clones" / name
        git(self.tmp, "init", "--quiet", str(path))
        return path

    def resolve(self, task_url: str | None = TASK_URL) -> RepoRoot:
        if self.config:
            self.config_file.write_text(json.dumps({"repoRoots": self.config}))
        cfg = RepoRootConfig(self.by_product, self.by_repo, self.config_file, self.home)
        return resolve_repo_root(cfg, PRODUCT, PRODUCT_URL, task_url)


@pytest.fixture
def world(tmp_path: Path) -> World:
    home = tmp_path / "home"
    home.mkdir()
    return World(tmp_path, home, {}, {}, {})


def _convention(world: World, repo: str) -> Path:
    path = world.home / "Projects" / repo
    git(world.tmp, "init", "--quiet", str(path))
    return path


STEPS = [
    "env:SCRUM4ME_REPO_ROOT_REPO_task-lib",
    "config:repoRoots[task-lib]",
    "convention:~/Projects/task-lib",
    f"env:SCRUM4ME_REPO_ROOT_{PRODUCT}",
    f"config:repoRoots[{PRODUCT}]",
    "convention:~/Projects/product-app",
]


def _enable(world: World, step: str) -> Path:
    if step == STEPS[0]:
        world.by_repo["task-lib"] = path = world.clone("by-repo-env")
    elif step == STEPS[1]:
        world.config["task-lib"] = str(path := world.clone("by-repo-config"))
    elif step == STEPS[2]:
        path = _convention(world, "task-lib")
    elif step == STEPS[3]:
        world.by_product[PRODUCT] = path = world.clone("by-product-env")
    elif step == STEPS[4]:
        world.config[PRODUCT] = str(path := world.clone("by-product-config"))
    else:
        path = _convention(world, "product-app")
    return path


@pytest.mark.parametrize("winner", range(len(STEPS)))
def test_each_resolution_step_wins_over_the_later_ones(world: World, winner: int) -> None:
    paths = [_enable(world, step) for step in STEPS[winner:]]

    result = world.resolve()

    assert (result.path, result.via, result.hint) == (paths[0], STEPS[winner], None)


def test_without_a_task_repo_the_product_settings_are_used(world: World) -> None:
    world.by_repo["task-lib"] = world.clone("by-repo-env")
    expected = _enable(world, STEPS[5])

    result = world.resolve(task_url=None)

    assert (result.path, result.via) == (expected, "convention:~/Projects/product-app")


def test_unresolved_hint_names_every_way_to_configure_it(world: World) -> None:
    result = world.resolve()

    assert result.path is None
    assert result.hint == (
        f"No repo root for product {PRODUCT} (repo task-lib). Set "
        f"SCRUM4ME_REPO_ROOT_{PRODUCT}=/path/to/clone or SCRUM4ME_REPO_ROOT_REPO_task-lib=..., "
        f'add "repoRoots": {{"{PRODUCT}": "/path"}} to ~/.scrum4me-agent-config.json, '
        "or clone it to ~/Projects/task-lib."
    )


def test_unresolved_without_repo_urls_suggests_product_settings_only(world: World) -> None:
    cfg = RepoRootConfig({}, {}, world.config_file, world.home)

    result = resolve_repo_root(cfg, PRODUCT, None, None)

    assert result.path is None
    assert result.hint is not None
    assert f"SCRUM4ME_REPO_ROOT_{PRODUCT}=" in result.hint
    assert "REPO_ROOT_REPO_" not in result.hint
    assert "Projects" not in result.hint


def test_unusable_task_repo_url_falls_back_to_the_product(world: World) -> None:
    expected = _enable(world, STEPS[3])

    assert world.resolve(task_url="https://git.example/acme/..").path == expected
    world.by_product.clear()
    hint = world.resolve(task_url="https://git.example/acme/..").hint
    assert hint is not None
    assert "no usable repository name" in hint


def test_missing_config_file_counts_as_empty(world: World) -> None:
    expected = _convention(world, "product-app")

    result = world.resolve()

    assert not world.config_file.exists()
    assert result.path == expected


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot be read as JSON"),
        ('["a list"]', "must be an object"),
        ('{"repoRoots": ["/x"]}', "must be an object"),
        ('{"repoRoots": {"prod1": 42}}', "must be an object"),
    ],
)
def test_invalid_config_file_is_unresolved_with_a_hint_naming_it(
    world: World, content: str, problem: str
) -> None:
    _convention(world, "task-lib")  # would win later, but the broken file comes first
    world.config_file.write_text(content)

    result = world.resolve()

    assert result.path is None
    assert result.hint is not None
    assert str(world.config_file) in result.hint
    assert problem in result.hint


def test_broken_config_file_is_not_read_when_the_env_answers(world: World) -> None:
    expected = _enable(world, STEPS[0])
    world.config_file.write_text("{not json")

    assert world.resolve().path == expected


def test_configured_path_that_does_not_exist_names_the_variable(world: World) -> None:
    _convention(world, "task-lib")  # must not be used instead of the broken setting
    missing = world.tmp / "nowhere"
    world.by_repo["task-lib"] = missing

    result = world.resolve()

    assert (result.path, result.via) == (None, "env:SCRUM4ME_REPO_ROOT_REPO_task-lib")
    assert result.hint is not None
    assert "SCRUM4ME_REPO_ROOT_REPO_task-lib" in result.hint
    assert str(missing) in result.hint
    assert "does not exist" in result.hint


def test_configured_directory_that_is_not_a_clone_names_the_config_key(world: World) -> None:
    plain = world.tmp / "plain"
    plain.mkdir()
    world.config[PRODUCT] = str(plain)

    result = world.resolve(task_url=None)

    assert result.path is None
    assert result.hint is not None
    assert f'"repoRoots": {{"{PRODUCT}": ...}}' in result.hint
    assert "not a git clone" in result.hint


def test_config_paths_may_start_with_a_tilde(world: World) -> None:
    expected = _convention(world, "elsewhere")
    world.config[PRODUCT] = "~/Projects/elsewhere"

    assert world.resolve(task_url=None).path == expected


def test_invalid_product_id_is_unresolved(world: World) -> None:
    cfg = RepoRootConfig({}, {}, world.config_file, world.home)

    result = resolve_repo_root(cfg, "../etc", PRODUCT_URL, None)

    assert result.path is None
    assert result.hint is not None
    assert "product_id" in result.hint


def test_every_outcome_is_logged_with_how_it_was_resolved(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactor.repo_root")
    world.resolve()
    expected = _enable(world, STEPS[3])
    world.resolve()

    unresolved, resolved = caplog.records
    assert (unresolved.getMessage(), unresolved.levelno) == (
        "repo_root.unresolved",
        logging.WARNING,
    )
    assert resolved.getMessage() == "repo_root.resolved"
    assert resolved.__dict__["via"] == STEPS[3]
    assert resolved.__dict__["path"] == str(expected)
