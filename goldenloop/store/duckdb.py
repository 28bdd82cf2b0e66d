"""Embedded store: one DuckDB file.

DuckDB allows one process per file, so a running server is the single writer and
other processes either talk to it over HTTP or open the file when no server holds it.
Spans are bulk-loaded as Arrow tables. Duplicates are skipped in two steps: a Bloom
filter over the stored keys (``keyfilter``) clears nearly every span as certainly new,
and the few suspects are looked up with a join restricted to their time range, which
DuckDB's zone maps turn into a scan of a few row groups instead of the whole table.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from goldenloop.ingest.arrow import first_of_each_key, span_batch_to_arrow, span_keys
from goldenloop.model import SpanBatch
from goldenloop.store import keyfilter
from goldenloop.store.base import Dialect, StoreError
from goldenloop.store.keyfilter import U64, SpanKeyFilter, key_hashes, start_micros
from goldenloop.store.sql import SqlStore

#: WAL size that triggers a checkpoint (DuckDB's default is 16 MB). A checkpoint
#: compresses and rewrites the table's open row group inside the committing
#: transaction; with ~3.5 KB spans the default meant a checkpoint every ~4,500 spans and
#: the same row group recompressed dozens of times. 64 MB measured ~30% more end-to-end
#: ingest throughput for ~40 MB more resident memory (docs/benchmarks.md).
CHECKPOINT_THRESHOLD = "64MB"

#: Rows per row group (DuckDB's default is 122,880). A checkpoint recompresses the
#: table's last, partly filled row group; with the default, every group was rewritten
#: about seven times while ingest filled it. DuckDB's CPU per span, 650-span commits
#: of ~3.8 KB spans: 67 µs (122,880 rows), 37 (8,192), 30 (4,096) over 1M rows;
#: 58 (32,768), 43 (16,384), 38 (8,192), 31 (4,096), 32 (2,048) over 600k. Query
#: times and file size did not change (docs/benchmarks.md). It is an option of
#: ATTACH, not of the file, hence the in-memory connection that attaches the file on
#: every open.
ROW_GROUP_SIZE = 4096
_CATALOG = "goldenloop"

#: Ingest faster than this (spans/s over the last second) counts as sustained.
BUSY_INGEST_SPANS_PER_S = 2_000
#: After this long without sustained ingest, DuckDB gets its threads back.
QUIET_AFTER_S = 5.0

_LOCK_PID = re.compile(r"PID (\d+)")


class DuckDBStore(SqlStore):
    dialect: Dialect = "duckdb"

    def __init__(
        self, path: str | Path, *, read_only: bool = False, memory_limit: str | None = None
    ) -> None:
        self.location = str(path)
        config: dict[str, str | bool | int | float | list[str]] = (
            {"memory_limit": memory_limit} if memory_limit else {}
        )
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if read_only else "")
        quoted = str(path).replace("'", "''")
        try:
            self._conn = duckdb.connect(":memory:", config=config)
            self._conn.execute(f"ATTACH '{quoted}' AS {_CATALOG} ({options})")
            self._conn.execute(f"USE {_CATALOG}")
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
        except (duckdb.InvalidInputException, duckdb.ParserException) as exc:
            raise StoreError(f"duckdb_memory_limit {memory_limit!r}: {exc}") from None
        if not read_only:
            self._conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._threads = _ThreadYield(self._conn) if not read_only else None
        #: Loaded on the first deduplicated insert (read-only and CLI opens never pay).
        self._stored_keys: SpanKeyFilter | None = None

    # Each thread gets its own cursor: a DuckDB connection is not safe to share.
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._conn.cursor()
            cursor.execute(f"USE {_CATALOG}")
            self._local.cursor = cursor
        return cursor

    def close(self) -> None:
        self._conn.close()

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._threads is not None:
            self._threads.before_read()
        return self._cursor().execute(sql, list(params)).fetchall()

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
        """Insert rows through Arrow (``executemany`` costs milliseconds per row here),
        skipping rows whose primary key is already stored."""
        if not rows:
            return 0
        data = pa.table(
            {name: pa.array([row[i] for row in rows]) for i, name in enumerate(columns)}
        )
        names = ", ".join(columns)
        with self._write_lock:
            cursor = self._cursor()
            cursor.register("_incoming_rows", data)
            try:
                # fetchall(), not fetchone(): an unfinished result left on this cursor
                # blocks the next register() on it.
                before = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                cursor.execute(
                    f"INSERT INTO {table} ({names}) SELECT {names} FROM _incoming_rows "
                    "ON CONFLICT DO NOTHING"
                ).fetchall()
                after = cursor.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            finally:
                cursor.unregister("_incoming_rows")
        return int(after) - int(before)

    def insert_spans(self, batch: SpanBatch, *, dedupe: bool = True) -> int:
        if not len(batch):
            return 0
        return self.insert_span_table(span_batch_to_arrow(batch), dedupe=dedupe)

    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int:
        if not table.num_rows:
            return 0
        # Key hashes are computed once and follow the table through the steps below
        # (recomputed only when a step drops rows, which is rare).
        hashes = key_hashes(table) if dedupe or self._stored_keys is not None else None
        if dedupe:
            table, hashes = _first_of_each_key(table, hashes)
        with self._write_lock:
            cursor = self._cursor()
            if dedupe and self._stored_keys is None:
                self._stored_keys = _load_key_filter(cursor)
            try:
                cursor.execute("BEGIN TRANSACTION")
                if dedupe:
                    table, hashes = self._drop_stored(cursor, table, hashes)
                if table.num_rows:
                    # Scanned by name (DuckDB's replacement scan finds the local):
                    # register() and unregister() cost ~0.8 ms per commit.
                    incoming_spans = table  # noqa: F841
                    cursor.execute("INSERT INTO spans SELECT * FROM incoming_spans").fetchall()
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            if self._stored_keys is not None and table.num_rows:
                _remember(self._stored_keys, table, hashes)
        if self._threads is not None:
            self._threads.after_insert(table.num_rows)
        return int(table.num_rows)

    def _drop_stored(
        self, cursor: duckdb.DuckDBPyConnection, table: pa.Table, hashes: U64 | None
    ) -> tuple[pa.Table, U64 | None]:
        """Remove spans already stored. The key filter clears most spans as certainly
        new; only the rest (usually none) are looked up."""
        assert self._stored_keys is not None
        if hashes is None:
            return _drop_stored_exactly(cursor, table), None
        suspects = self._stored_keys.suspects(hashes, start_micros(table))
        if not suspects.any():
            return table, hashes
        among = table if suspects.all() else table.filter(pa.array(suspects))
        kept = _drop_stored_exactly(cursor, table, among=among)
        return kept, (hashes if kept.num_rows == table.num_rows else key_hashes(kept))


def _first_of_each_key(table: pa.Table, hashes: U64 | None) -> tuple[pa.Table, U64 | None]:
    """The table with repeated keys kept once, and its hashes. Distinct hashes prove
    distinct keys; otherwise (a repeat, or a rare 64-bit collision) the keys decide."""
    if hashes is not None and len(np.unique(hashes)) == len(hashes):
        return table, hashes
    kept = first_of_each_key(table)
    if kept.num_rows == table.num_rows:
        return table, hashes
    return kept, key_hashes(kept)


def _remember(stored_keys: SpanKeyFilter, table: pa.Table, hashes: U64 | None) -> None:
    if hashes is None:
        # Keys the filter cannot hash are never asked about either (such a table is
        # checked exactly), but a later, regular table may repeat them.
        stored_keys.horizon = max(stored_keys.horizon, int(start_micros(table).max()))
    else:
        stored_keys.add(hashes, start_micros(table))


def _load_key_filter(cursor: duckdb.DuckDBPyConnection) -> SpanKeyFilter:
    """A filter holding the newest stored keys (by row position); every other stored
    span starts at or before its horizon."""
    capacity = keyfilter.CAPACITY
    cursor.execute("BEGIN TRANSACTION")
    try:
        (last,) = cursor.execute("SELECT max(rowid) FROM spans").fetchall()[0]
        if last is None:
            return SpanKeyFilter(capacity=capacity)
        first = max(0, int(last) - capacity + 1)
        (older,) = cursor.execute(
            "SELECT epoch_us(max(start_time)) FROM spans WHERE rowid < ?", [first]
        ).fetchall()[0]
        recent: pa.Table = cursor.sql(
            f"SELECT trace_id, span_id, start_time FROM spans WHERE rowid >= {first:d}"
        ).to_arrow_table()
    finally:
        cursor.execute("COMMIT")
    stored_keys = SpanKeyFilter(
        capacity=capacity, horizon=keyfilter.NO_HORIZON if older is None else int(older)
    )
    if recent.num_rows:
        _remember(stored_keys, recent, key_hashes(recent))
    return stored_keys


def _stored_keys_among(cursor: duckdb.DuckDBPyConnection, table: pa.Table) -> list[str]:
    """``trace_id || span_id`` of the table's spans that are stored. Only
    (trace_id, span_id, start_time) of the table's time range are read, which zone
    maps narrow to a few row groups."""
    starts = pc.min_max(table.column("start_time"))
    incoming_keys = table.select(["trace_id", "span_id"])  # noqa: F841 - scanned by name
    stored = cursor.execute(
        """SELECT s.trace_id || s.span_id FROM spans s
           JOIN incoming_keys k ON s.trace_id = k.trace_id AND s.span_id = k.span_id
           WHERE s.start_time BETWEEN ? AND ?""",
        [starts["min"].as_py(), starts["max"].as_py()],
    ).fetchall()
    return [key for (key,) in stored]


def _drop_stored_exactly(
    cursor: duckdb.DuckDBPyConnection, table: pa.Table, *, among: pa.Table | None = None
) -> pa.Table:
    """The table without its stored spans, looking up only ``among`` (default: all)."""
    stored = _stored_keys_among(cursor, table if among is None else among)
    if not stored:
        return table
    already = pa.array(stored, pa.string())
    return table.filter(pc.invert(pc.is_in(span_keys(table), value_set=already)))


class _ThreadYield:
    """Under sustained ingest, run DuckDB on one thread; give the rest back when quiet.

    The server's decode workers already keep the other cores busy during heavy ingest,
    and DuckDB's spare worker thread then only competes with them: measured on 2 cores,
    one DuckDB thread cut the server's CPU per ingested span from ~56 to ~47 µs
    (+13% end-to-end spans/s). Queries want every thread on a quiet server (the
    overview is ~30% slower on one), so the first read after ``QUIET_AFTER_S`` without
    sustained ingest restores DuckDB's own default.
    """

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn
        self._full = int(conn.execute("SELECT current_setting('threads')").fetchall()[0][0])
        self._lean = False
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()
        self._busy_until = 0.0

    def _set(self, threads: int) -> None:
        with self._conn.cursor() as cursor:
            cursor.execute(f"SET threads = {threads}")

    def after_insert(self, rows: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, rows))
            while self._recent and self._recent[0][0] < now - 1.0:
                self._recent.popleft()
            if sum(n for _, n in self._recent) < BUSY_INGEST_SPANS_PER_S:
                return
            self._busy_until = now + QUIET_AFTER_S
            if not self._lean and self._full > 1:
                self._set(1)
                self._lean = True

    def before_read(self) -> None:
        if not self._lean:
            return
        with self._lock:
            if self._lean and time.monotonic() >= self._busy_until:
                self._set(self._full)
                self._lean = False
