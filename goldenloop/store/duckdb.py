"""Embedded store: one DuckDB file.

DuckDB allows one process per file, so a running server is the single writer and
other processes either talk to it over HTTP or open the file when no server holds it.
Spans are bulk-loaded as Arrow tables; duplicates are skipped with an anti-join that is
restricted to the batch's time range, which DuckDB's zone maps turn into a scan of the
few recent row groups instead of the whole table.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from goldenloop.model import SPAN_COLUMN_NAMES, SPAN_COLUMNS, ColumnType, SpanBatch
from goldenloop.store.base import Dialect, StoreError
from goldenloop.store.sql import SqlStore

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "timestamp": pa.int64(),  # epoch microseconds in a SpanBatch; cast below
    "json": pa.string(),
}


def span_batch_to_arrow(batch: SpanBatch) -> pa.Table:
    arrays = []
    for name, kind in SPAN_COLUMNS:
        array = pa.array(batch.columns[name], type=_ARROW_TYPES[kind])
        if kind == "timestamp":
            array = array.cast(pa.timestamp("us"))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=list(SPAN_COLUMN_NAMES))


_LOCK_PID = re.compile(r"PID (\d+)")


class DuckDBStore(SqlStore):
    dialect: Dialect = "duckdb"

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.location = str(path)
        try:
            self._conn = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" in message.lower():
                pid = _LOCK_PID.search(message)
                holder = f" (process {pid.group(1)})" if pid else ""
                raise StoreError(
                    f"{path} is held by another goldenloop process{holder}, most likely a "
                    "running `goldenloop serve`. Talk to that server over HTTP, or stop it "
                    "to open the file directly."
                ) from None
            raise StoreError(f"cannot open DuckDB file {path}: {message}") from None
        self._local = threading.local()
        self._write_lock = threading.Lock()

    # Each thread gets its own cursor: a DuckDB connection is not safe to share.
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._conn.cursor()
            self._local.cursor = cursor
        return cursor

    def close(self) -> None:
        self._conn.close()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cursor().execute(sql, list(params)).fetchall()

    def fetch_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        return self._cursor().execute(sql, list(params)).to_arrow_table()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._write_lock:
            self._cursor().execute(sql, list(params))

    def _run_in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._write_lock:
            cursor = self._cursor()
            cursor.execute("BEGIN TRANSACTION")
            try:
                for sql, params in statements:
                    cursor.execute(sql, list(params))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> int:
        if not rows:
            return 0
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        with self._write_lock:
            cursor = self._cursor()
            # Small tables only (feedback, outcomes, service rows): executemany is fine
            # at these volumes. Read results with fetchall() so no result stays open on
            # the cursor (an open result blocks the next register() on this cursor).
            before = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            cursor.executemany(
                f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                [list(r) for r in rows],
            )
            after = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
        return int(after[0]) - int(before[0])

    def insert_spans(self, batch: SpanBatch, *, dedupe: bool = True) -> int:
        if not len(batch):
            return 0
        table = span_batch_to_arrow(batch)
        with self._write_lock:
            cursor = self._cursor()
            cursor.register("_incoming_spans", table)
            try:
                cursor.execute("BEGIN TRANSACTION")
                if dedupe:
                    starts = batch.columns["start_time"]
                    sql = f"""
                        INSERT INTO spans
                        SELECT {", ".join("b." + c for c in SPAN_COLUMN_NAMES)}
                        FROM (SELECT DISTINCT ON (trace_id, span_id) * FROM _incoming_spans) b
                        WHERE NOT EXISTS (
                            SELECT 1 FROM spans s
                            WHERE s.start_time BETWEEN make_timestamp(?) AND make_timestamp(?)
                              AND s.trace_id = b.trace_id AND s.span_id = b.span_id)
                    """
                    result = cursor.execute(sql, [min(starts), max(starts)]).fetchall()
                else:
                    result = cursor.execute(
                        "INSERT INTO spans SELECT * FROM _incoming_spans"
                    ).fetchall()
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.unregister("_incoming_spans")
        return int(result[0][0]) if result else 0
