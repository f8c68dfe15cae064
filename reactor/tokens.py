"""Bearer tokens of MCP-over-HTTP callers, resolved to workers with a short cache.

A token is looked up again at most every few seconds, so a revoked token stops working
quickly without costing a query per request. The caller's instance id comes from the
``X-Scrum4Me-Instance-Id`` header (give the agent the same id the daemon gave it in
SCRUM4ME_INSTANCE_ID), else it is ``http-<token id>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import trio

from handlers.auth import AuthError, Worker, authenticate
from reactor.config import INSTANCE_ID_RE
from reactor.db import Database

INSTANCE_HEADER = "x-scrum4me-instance-id"


class TokenCache:
    def __init__(self, db: Database, *, ttl_seconds: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._cache: dict[tuple[str, str | None], tuple[float, Worker]] = {}

    async def worker(self, raw_token: str, instance_header: str | None) -> Worker:
        if instance_header is not None and not INSTANCE_ID_RE.match(instance_header):
            raise AuthError(
                f"The {INSTANCE_HEADER} header may only contain letters, digits and . _ : @ - "
                "(at most 128 characters).",
                "invalid",
            )
        digest = hashlib.sha256(raw_token.encode("utf-8")).hexdigest()
        key = (digest, instance_header)
        now = trio.current_time()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        worker = await authenticate(self._db, raw_token, "pending", source="The Bearer token")
        instance = instance_header or f"http-{worker.token_id}"
        worker = Worker(worker.user_id, worker.token_id, instance, worker.username, worker.is_demo)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, worker)
        return worker


def bearer_token(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
