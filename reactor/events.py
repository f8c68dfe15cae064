"""Notification payloads, parsed into small typed events.

A payload is a hint, so parsing is strict about shape and lenient about meaning: a payload
that is not what the channel promises is dropped (and counted); one that is valid but about
someone else's jobs is simply not acted on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from reactor.config import INSTANCE_ID_RE

JOB_ENQUEUED = "job_enqueued"
JOB_STATUS_CHANGED = "job_status_changed"
WORKER_CONNECTED = "worker_connected"
APP_CHANGES = "scrum4me_changes"

# Matched with fullmatch: "^...$" would let "id\n" through ("$" matches before a final
# newline), and a payload is input from anyone who can NOTIFY.
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_WORD = re.compile(r"[A-Z_]{1,64}")


class MalformedPayload(ValueError):
    """The payload does not have the shape its channel promises."""


@dataclass(frozen=True)
class JobEnqueued:
    user_id: str
    product_id: str | None
    kind: str | None
    job_id: str | None


@dataclass(frozen=True)
class JobStatusChanged:
    job_id: str
    user_id: str
    product_id: str
    task_id: str | None
    kind: str
    old_status: str
    new_status: str


@dataclass(frozen=True)
class WorkerConnected:
    worker_id: str
    user_id: str
    instance_id: str


Event = JobEnqueued | JobStatusChanged | WorkerConnected


def parse(channel: str, payload: str) -> Event | None:
    """Parse one notification; None means "not for the reactor" (other app messages)."""
    data = _json_object(payload)
    if channel == JOB_ENQUEUED:
        return JobEnqueued(
            _id(data, "user_id"), _id(data, "product_id"), _word(data, "kind"), _id(data, "job_id")
        )
    if channel == JOB_STATUS_CHANGED:
        return JobStatusChanged(
            _id(data, "job_id"),
            _id(data, "user_id"),
            _id(data, "product_id"),
            _optional_id(data, "task_id"),
            _word(data, "kind"),
            _word(data, "old_status"),
            _word(data, "new_status"),
        )
    if channel == WORKER_CONNECTED:
        return WorkerConnected(
            _id(data, "worker_id"), _id(data, "user_id"), _instance_id(data, "instance_id")
        )
    if channel == APP_CHANGES:
        if data.get("type") != "claude_job_enqueued":
            return None
        kind = data.get("kind")
        return JobEnqueued(
            _id(data, "user_id"),
            _optional_id(data, "product_id"),
            _word(data, "kind") if kind is not None else None,
            _optional_id(data, "job_id"),
        )
    raise MalformedPayload(f"no parser for channel {channel!r}")


def _json_object(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # deeply nested input exhausts the parser's stack
        raise MalformedPayload("payload is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedPayload("payload is not a JSON object")
    return data


def _id(data: dict[str, Any], key: str, limit: int = 128) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit or _ID.fullmatch(value) is None:
        raise MalformedPayload(f"{key} is missing or not an id")
    return value


def _instance_id(data: dict[str, Any], key: str) -> str:
    # Instance ids follow SCRUM4ME_INSTANCE_ID's rule, not the cuid one: the defaults carry the
    # host name, which may contain dots (mcp-laptop.local-4242).
    value = data.get(key)
    if not isinstance(value, str) or INSTANCE_ID_RE.fullmatch(value) is None:
        raise MalformedPayload(f"{key} is missing or not an instance id")
    return value


def _optional_id(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _id(data, key)


def _word(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or _WORD.fullmatch(value) is None:
        raise MalformedPayload(f"{key} is missing or not an enum value")
    return value
