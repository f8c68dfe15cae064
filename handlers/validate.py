"""Validation of every external value that becomes a path, a branch or an argv element.

Ids and branch names arrive from the database and from agents. Before any of them reaches the
file system or git's command line it must pass one of these checks, so that a hostile or broken
value (``../x``, ``-rf``, ``a..b``) fails loudly instead of escaping the worktree directory or
being read by git as an option. Pure functions, no I/O.
"""

from __future__ import annotations

import re

# Prisma cuid-like ids. Starting with an alphanumeric keeps them from being read as an option
# or a hidden file; the character set excludes every path separator and shell metacharacter.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# git check-ref-format forbids these anywhere in a ref name.
_BRANCH_FORBIDDEN_CHARS = frozenset(" ~^:?*[\\")
_BRANCH_MAX_LEN = 200


class InvalidInput(ValueError):
    """A value from outside failed validation; the message names the field and the rule."""


def _identifier(field: str, value: str) -> str:
    # fullmatch, not match with "$": "$" also matches before a trailing newline.
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"{field} {value!r} is not a valid id: use 1-128 characters from A-Z, a-z, 0-9, "
            "'_' and '-', starting with a letter or digit"
        )
    return value


def job_id(value: str) -> str:
    """Return ``value`` if it is a safe job id, else raise :class:`InvalidInput`."""
    return _identifier("job_id", value)


def story_id(value: str) -> str:
    """Return ``value`` if it is a safe story id, else raise :class:`InvalidInput`."""
    return _identifier("story_id", value)


def product_id(value: str) -> str:
    """Return ``value`` if it is a safe product id, else raise :class:`InvalidInput`."""
    return _identifier("product_id", value)


def branch_name(value: str) -> str:
    """Return ``value`` if git accepts it as a branch name and it cannot pass as an option.

    Implements the rules of ``git check-ref-format --branch`` and is stricter in three ways:
    no leading ``-``, ASCII only, and at most 200 characters.

    Raises:
        InvalidInput: naming the first rule the value breaks.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"branch name must be a string, got {type(value).__name__}")
    problem = _branch_problem(value)
    if problem is not None:
        raise InvalidInput(f"branch name {value!r} is not allowed: {problem}")
    return value


def _branch_problem(value: str) -> str | None:
    if not value:
        return "it is empty"
    if len(value) > _BRANCH_MAX_LEN:
        return f"it is longer than {_BRANCH_MAX_LEN} characters"
    if value.startswith("-"):
        return "it starts with '-' and would be read as a git option"
    if value in ("@", "HEAD"):
        return f"{value!r} is reserved by git"
    return _branch_char_problem(value) or _branch_shape_problem(value)


def _branch_char_problem(value: str) -> str | None:
    for char in value:
        if not char.isascii():
            return "only ASCII characters are allowed"
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return "it contains a control character"
        if char in _BRANCH_FORBIDDEN_CHARS:
            return f"it contains {char!r} (space ~ ^ : ? * [ \\ are not allowed)"
    return None


def _branch_shape_problem(value: str) -> str | None:
    if ".." in value:
        return "it contains '..'"
    if "@{" in value:
        return "it contains '@{'"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "it has an empty path component (leading, trailing or double '/')"
    if value.endswith("."):
        return "it ends with '.'"
    for component in value.split("/"):
        if component.startswith("."):
            return f"component {component!r} starts with '.'"
        if component.endswith(".lock"):
            return f"component {component!r} ends with '.lock'"
    return None


# story_branch's parameter is named like the public function, as the callers know it.
_valid_story_id = story_id


def story_branch(story_id: str) -> str:
    """The branch shared by all tasks of a story: ``feat/story-<last 8 chars of the id>``."""
    return branch_name(f"feat/story-{_valid_story_id(story_id)[-8:]}")
