"""Who is acting: a raw API token resolved to its user, token id and worker instance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from handlers.errors import PermissionDenied
from reactor.db import Database
from reactor.sqlfiles import query

_RESOLVE = query("auth.resolve_token")


class AuthError(Exception):
    """The token cannot be used; ``reason`` is invalid, revoked or expired."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Worker:
    """The identity every claim and every write is fenced on."""

    user_id: str
    token_id: str
    instance_id: str
    username: str
    is_demo: bool

    def require_write(self) -> None:
        if self.is_demo:
            raise PermissionDenied("Demo accounts cannot perform write operations")


def token_hash(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode("utf-8")).hexdigest()


async def authenticate(db: Database, raw_token: str, instance_id: str, *, source: str) -> Worker:
    """Resolve a raw token; ``source`` names where it came from for the error message."""
    row = await db.fetchrow(_RESOLVE, token_hash(raw_token.strip()))
    if row is None:
        raise AuthError(
            f"{source} is invalid or revoked: no API token with that value exists. Create a "
            "token in Scrum4Me (/settings/tokens) and use it as is.",
            "invalid",
        )
    if row["revoked"]:
        raise AuthError(f"{source} is invalid or revoked: the token was revoked.", "revoked")
    if row["expired"]:
        raise AuthError(
            f"{source} has expired. Create a new token in Scrum4Me (/settings/tokens).", "expired"
        )
    return Worker(row["user_id"], row["token_id"], instance_id, row["username"], row["is_demo"])
