"""The job context an agent receives (the wait_for_job payload of scrum4me-mcp §2.2)."""

from __future__ import annotations

from typing import Any

from reactor.db import Database, Row
from reactor.sqlfiles import query

_CONTEXT = query("jobs.context")

HEARTBEAT_INTERVAL_SECONDS = 60


async def context_row(db: Database, job_id: str) -> Row | None:
    """The job with its task, story, pbi, sprint and product (one query)."""
    return await db.fetchrow(_CONTEXT, job_id)


def build_context(row: Row) -> dict[str, Any]:
    """Shape one context row like scrum4me-mcp's getFullJobContext output."""
    job_id = row["id"]
    context: dict[str, Any] = {
        "job_id": job_id,
        "kind": row["kind"],
        "status": row["status"].lower(),
        "config": _config(row),
        "task": None,
        "story": None,
        "pbi": None,
        "sprint": None,
        "product": {
            "id": row["product_id"],
            "name": row["product_name"],
            "repo_url": row["product_repo_url"],
        },
        "branch_suggestion": f"feat/job-{job_id[-8:]}",
        "lease_until": _iso(row["lease_until"]),
        "retry_count": row["retry_count"],
        "heartbeat_interval_seconds": HEARTBEAT_INTERVAL_SECONDS,
    }
    if row["task_id"] is not None:
        context["task"] = {
            "id": row["task_id"],
            "code": row["task_code"],
            "title": row["task_title"],
            "description": row["task_description"],
            "implementation_plan": row["implementation_plan"],
            "priority": row["task_priority"],
            "repo_url": row["task_repo_url"],
        }
    if row["story_id"] is not None:
        context["story"] = {
            "id": row["story_id"],
            "code": row["story_code"],
            "title": row["story_title"],
            "description": row["story_description"],
            "acceptance_criteria": row["acceptance_criteria"],
        }
    if row["pbi_id"] is not None:
        context["pbi"] = {
            "id": row["pbi_id"],
            "title": row["pbi_title"],
            "priority": row["pbi_priority"],
            "status": row["pbi_status"],
        }
    if row["sprint_id"] is not None:
        context["sprint"] = {
            "id": row["sprint_id"],
            "goal": row["sprint_goal"],
            "status": row["sprint_status"],
        }
    return context


def _config(row: Row) -> dict[str, Any]:
    """Model settings, in scrum4me-mcp's order: task needs Opus, job request, product default."""
    model = "opus" if row["requires_opus"] else (row["requested_model"] or row["preferred_model"])
    return {
        "model": model,
        "thinking_budget": row["requested_thinking_budget"] or row["thinking_budget_default"],
        "permission_mode": row["requested_permission_mode"] or row["preferred_permission_mode"],
    }


def _iso(value: object) -> str | None:
    if value is None:
        return None
    return f"{value.isoformat()}Z" if hasattr(value, "isoformat") else str(value)
