"""handlers.validate: ids and branch names that reach paths and git's argv."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers import validate
from handlers.validate import InvalidInput
from reactor import events

ID_CHECKS: list[tuple[str, Callable[[str], str]]] = [
    ("job_id", validate.job_id),
    ("story_id", validate.story_id),
    ("product_id", validate.product_id),
]


def _git_accepts_branch(name: str) -> bool:
    # Run outside any repository so nothing like "@" gets expanded to a real branch.
    proc = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0 and proc.stdout.strip() == name


def _accepted(name: str) -> bool:
    try:
        validate.branch_name(name)
    except InvalidInput:
        return False
    return True


@pytest.mark.parametrize(("field", "check"), ID_CHECKS)
@pytest.mark.parametrize("value", ["clx1abc2300000l4e8f9g7h6", "a", "A_b-c", "9" * 128])
def test_cuid_like_ids_are_accepted(field: str, check: Callable[[str], str], value: str) -> None:
    assert check(value) == value


@pytest.mark.parametrize(("field", "check"), ID_CHECKS)
@pytest.mark.parametrize(
    "value",
    [
        "../x",
        "/etc",
        "-rf",
        "a/b",
        "",
        "x\x00y",
        "..",
        ".",
        "a\\b",
        " a",
        "a b",
        "a\n",
        "_a",
        "x" * 129,
        "a.b",
        "é",
    ],
)
def test_unsafe_ids_are_rejected_naming_the_field(
    field: str, check: Callable[[str], str], value: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        check(value)


@pytest.mark.parametrize(
    "name", ["feat/story-abcd1234", "main", "a.b", "release/1.2.3", "x-1", "a@b", "a./b", "_x"]
)
def test_ordinary_branch_names_are_accepted(name: str) -> None:
    assert validate.branch_name(name) == name
    assert _git_accepts_branch(name)


@pytest.mark.parametrize(
    "name",
    [
        "-delete",
        "a..b",
        "foo.lock",
        "a b",
        "x~1",
        "@",
        "refs//x",
        "",
        "/a",
        "a/",
        "a.",
        ".a",
        "a/.b",
        "x.lock/y",
        "a@{1}",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "a\x7fb",
        "a\tb",
        "a\x00b",
        "HEAD",
        "é",
        "b" * 201,
    ],
)
def test_unsafe_branch_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInput, match="branch name"):
        validate.branch_name(name)


_FRAGMENTS = st.sampled_from(
    [
        "a",
        "Z",
        "9",
        "-",
        "_",
        ".",
        "/",
        "..",
        "@",
        "{",
        "@{",
        ".lock",
        "lock",
        "~",
        "^",
        ":",
        "?",
        "*",
        "[",
        "]",
        "\\",
        " ",
        "\t",
        "\x7f",
        "\x01",
        "é",
        "HEAD",
        "feat",
        "!",
        "#",
        "%",
    ]
)
_BRANCH_LIKE = st.one_of(
    st.lists(_FRAGMENTS, max_size=8).map("".join),
    st.text(st.characters(max_codepoint=0x7F), max_size=16),
)


@settings(max_examples=200, deadline=None, database=None)
@given(_BRANCH_LIKE)
def test_every_accepted_branch_name_passes_git_check_ref_format(name: str) -> None:
    if _accepted(name):
        assert _git_accepts_branch(name)


@settings(max_examples=200, deadline=None, database=None)
@given(_BRANCH_LIKE)
def test_validator_is_only_stricter_than_git_where_documented(name: str) -> None:
    # Outside its documented extra rules (ASCII only, no '@' alone, length) the validator
    # should agree with git, so it does not reject names git would take.
    if "\x00" in name or name == "@" or not name.isascii() or len(name) > 200:
        return
    assert _accepted(name) == _git_accepts_branch(name)


def test_story_branch_uses_the_last_eight_characters_of_the_story_id() -> None:
    assert validate.story_branch("clx9abcdefgh12345678") == "feat/story-12345678"
    assert validate.story_branch("abc") == "feat/story-abc"


@pytest.mark.parametrize("story", ["../etc/passwd", "", "-x", "a/b"])
def test_story_branch_rejects_unsafe_story_ids(story: str) -> None:
    with pytest.raises(InvalidInput, match="story_id"):
        validate.story_branch(story)


_STATUS_CHANGE = {
    "job_id": "cjob1",
    "user_id": "cuser1",
    "product_id": "cprod1",
    "task_id": None,
    "kind": "TASK_IMPLEMENTATION",
    "old_status": "RUNNING",
    "new_status": "DONE",
}


def test_a_well_formed_status_change_parses() -> None:
    event = events.parse(events.JOB_STATUS_CHANGED, json.dumps(_STATUS_CHANGE))
    assert isinstance(event, events.JobStatusChanged)
    assert (event.job_id, event.new_status) == ("cjob1", "DONE")


@pytest.mark.parametrize("key", ["job_id", "user_id", "kind", "new_status"])
def test_notification_fields_with_a_trailing_newline_are_malformed(key: str) -> None:
    payload = {**_STATUS_CHANGE, key: f"{_STATUS_CHANGE[key]}\n"}
    with pytest.raises(events.MalformedPayload, match=key):
        events.parse(events.JOB_STATUS_CHANGED, json.dumps(payload))


def test_worker_connected_instance_id_with_a_trailing_newline_is_malformed() -> None:
    payload = {"worker_id": "cw1", "user_id": "cu1", "instance_id": "mcp-nas-7\n"}
    with pytest.raises(events.MalformedPayload, match="instance_id"):
        events.parse(events.WORKER_CONNECTED, json.dumps(payload))


def test_worker_connected_accepts_a_default_instance_id_with_a_dotted_host() -> None:
    payload = {"worker_id": "cw1", "user_id": "cu1", "instance_id": "mcp-laptop.local-4242"}
    event = events.parse(events.WORKER_CONNECTED, json.dumps(payload))
    assert isinstance(event, events.WorkerConnected)
    assert event.instance_id == "mcp-laptop.local-4242"
