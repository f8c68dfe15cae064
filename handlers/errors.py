"""Errors a handler reports to its caller, with the prefixes scrum4me-mcp's clients know.

MCP tools turn these into ``isError`` results whose text is ``str(exc)``; the CLI prints
them; the daemon logs them. Anything else escaping a handler is a bug.
"""

from __future__ import annotations


class HandlerError(Exception):
    """A refusal with a message meant for the caller (an agent, an operator)."""

    prefix = ""

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.prefix}: {message}" if self.prefix else message


class ValidationError(HandlerError):
    prefix = "VALIDATION_ERROR"


class PermissionDenied(HandlerError):
    prefix = "PERMISSION_DENIED"


class JobCancelled(HandlerError):
    prefix = "JOB_CANCELLED"


class NotFound(HandlerError):
    """An id that names nothing (plain message, as scrum4me-mcp)."""


class Conflict(HandlerError):
    """The row is not in a state that allows this (plain message)."""
