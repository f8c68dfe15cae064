"""SQL shipped with reactor: migrations, named queries and the standalone app schema."""
