"""Handlers: plain async functions over the small DB API in reactor.db, plus git operations."""
