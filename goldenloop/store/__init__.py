"""Storage backends behind one ``Store`` protocol: DuckDB (embedded) and PostgreSQL."""

from __future__ import annotations

from goldenloop.config import Settings
from goldenloop.store.base import Store, StoreError


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open the store the settings name (PostgreSQL when ``database_url`` is set)."""
    store: Store
    if settings.database_url:
        try:
            from goldenloop.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise StoreError(
                "PostgreSQL support needs the 'postgres' extra: pip install 'goldenloop[postgres]'"
            ) from exc
        store = PostgresStore(settings.database_url)
    else:
        from goldenloop.store.duckdb import DuckDBStore

        store = DuckDBStore(settings.db, memory_limit=settings.duckdb_memory_limit)
    if migrate:
        store.migrate()
    return store


__all__ = ["Store", "StoreError", "open_store"]
