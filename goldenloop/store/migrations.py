"""Versioned schema migrations, applied in order at start-up.

Each migration has statements for both backends plus optional backend-only ones.
A migration is applied in one transaction together with its row in
``schema_migrations``, so an interrupted upgrade leaves the previous version intact.
Never edit a released migration: add a new one.

Each feature keeps its migrations in its own module under ``goldenloop/store/schema/``
(a module-level ``MIGRATIONS`` tuple); they are collected here and ordered by version.
Version numbers are global: core 1–9, metrics/SLOs 10–19, flags & triage 20–29,
golden set & evals 30–39, alerts 40–49, incidents & versions 50–59, drift 60–69.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from goldenloop.model import SPAN_COLUMNS, ColumnType

_SQL_TYPES: dict[ColumnType, str] = {
    "text": "TEXT",
    "bigint": "BIGINT",
    "double": "DOUBLE PRECISION",
    "timestamp": "TIMESTAMP",
    "json": "TEXT",
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    duckdb_only: tuple[str, ...] = ()
    postgres_only: tuple[str, ...] = ()

    def statements_for(self, dialect: str) -> tuple[str, ...]:
        extra = self.duckdb_only if dialect == "duckdb" else self.postgres_only
        return self.statements + extra


#: Large free-text columns. DuckDB stores them zstd-compressed: measured on simulator
#: spans (~3.5 KB of text each) this made bulk inserts ~2-3x faster than the default
#: FSST/dictionary choice and the file ~6x smaller, with the same speed for the
#: metric queries, which never read these columns.
ZSTD_COLUMNS = frozenset(
    {"input_text", "output_text", "attributes", "resource", "events", "tool_args", "status_message"}
)


def spans_table_sql(dialect: str) -> str:
    def column(name: str, kind: ColumnType) -> str:
        sql = f"{name} {_SQL_TYPES[kind]}"
        if dialect == "duckdb" and name in ZSTD_COLUMNS:
            sql += " USING COMPRESSION zstd"
        return sql

    cols = ",\n  ".join(column(name, kind) for name, kind in SPAN_COLUMNS)
    return f"CREATE TABLE spans (\n  {cols}\n)"


def _collect() -> tuple[Migration, ...]:
    from goldenloop.store import schema

    found: dict[int, Migration] = {}
    for module_info in pkgutil.iter_modules(schema.__path__):
        module = importlib.import_module(f"{schema.__name__}.{module_info.name}")
        for migration in getattr(module, "MIGRATIONS", ()):
            if migration.version in found:
                raise RuntimeError(
                    f"migration version {migration.version} is defined twice "
                    f"({found[migration.version].description!r} and {migration.description!r})"
                )
            found[migration.version] = migration
    return tuple(found[v] for v in sorted(found))


def all_migrations() -> tuple[Migration, ...]:
    return _collect()


def latest_version() -> int:
    return all_migrations()[-1].version


def __getattr__(name: str) -> object:
    # ``MIGRATIONS`` / ``LATEST_VERSION`` are computed on first use: the schema
    # modules import this one, so they cannot be collected at import time.
    if name == "MIGRATIONS":
        return all_migrations()
    if name == "LATEST_VERSION":
        return latest_version()
    raise AttributeError(name)


SCHEMA_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""
