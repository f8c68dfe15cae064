"""check_queue_empty: how much work is left for this user, per accessible product."""

from __future__ import annotations

from typing import Any

from handlers import validate
from handlers.auth import Worker
from handlers.errors import NotFound, ValidationError
from reactor.db import Database
from reactor.sqlfiles import query

_COUNTS = query("transitions.queue_counts")
_ACCESS = query("transitions.product_access")


async def check_queue_empty(db: Database, worker: Worker, product_id: str | None) -> dict[str, Any]:
    worker.require_write()
    if product_id is not None:
        try:
            validate.product_id(product_id)
        except validate.InvalidInput as exc:
            raise ValidationError(f"product_id: {exc}") from None
        if await db.fetchval(_ACCESS, product_id, worker.user_id) is None:
            raise NotFound(f"Product {product_id} not found or not accessible")
    rows = await db.fetch(_COUNTS, worker.user_id, product_id)
    by_product = {row["product_id"]: row["remaining"] for row in rows}
    remaining = sum(by_product.values())
    result: dict[str, Any] = {"empty": remaining == 0, "remaining": remaining}
    if product_id is None:
        result["by_product"] = by_product
    return result
