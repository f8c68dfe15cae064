"""reactor: an event-driven Postgres LISTEN/NOTIFY job reactor for the Scrum4Me agent-job queue."""

import warnings

# Rule 1 of the stack wiring: trio_asyncio patches asyncio.get_running_loop, and anyio's
# asyncio backend binds that function when it is imported. Importing trio_asyncio here,
# before any reactor module can pull in mcp/anyio/uvicorn, keeps the order right.
with warnings.catch_warnings():
    # Python 3.12+: trio_asyncio subclasses the deprecated AbstractChildWatcher
    # (python-trio/trio-asyncio#152); harmless on the 3.11-3.13 range we support.
    warnings.filterwarnings("ignore", "'AbstractChildWatcher' is deprecated", DeprecationWarning)
    import trio_asyncio  # noqa: F401

__version__ = "0.1.0"
