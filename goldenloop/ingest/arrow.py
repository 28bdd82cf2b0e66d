"""Spans as an Arrow table: the form a batch travels in between processes and into a store.

``normalize_spans`` builds a ``SpanBatch`` (Python lists, one per column); the ingest
pipeline turns it into an Arrow table as soon as it exists, because an Arrow table
crosses a process boundary as one buffer copy (IPC) and DuckDB scans it without
touching Python objects. Timestamps are ``timestamp[us]`` columns here (epoch
microseconds in a ``SpanBatch``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from goldenloop.model import SPAN_COLUMN_NAMES, SPAN_COLUMNS, ColumnType, SpanBatch

_ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "timestamp": pa.timestamp("us"),
    "json": pa.string(),
}

#: The schema of every span table, in ``SPAN_COLUMNS`` order.
SPAN_SCHEMA = pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in SPAN_COLUMNS])
_TIMESTAMP_COLUMNS = tuple(name for name, kind in SPAN_COLUMNS if kind == "timestamp")


def span_batch_to_arrow(batch: SpanBatch) -> pa.Table:
    arrays = []
    for name, kind in SPAN_COLUMNS:
        values = batch.columns[name]
        if kind == "timestamp":
            arrays.append(pa.array(values, pa.int64()).cast(pa.timestamp("us")))
        else:
            arrays.append(pa.array(values, _ARROW_TYPES[kind]))
    return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)


def arrow_to_span_batch(table: pa.Table) -> SpanBatch:
    """The table as Python lists (timestamps back to epoch microseconds)."""
    columns: dict[str, list[object]] = {}
    for name in SPAN_COLUMN_NAMES:
        column = table.column(name)
        if name in _TIMESTAMP_COLUMNS:
            column = column.cast(pa.int64())
        columns[name] = column.to_pylist()
    return SpanBatch(columns)


def empty_span_table() -> pa.Table:
    return SPAN_SCHEMA.empty_table()


#: Made once: a plain ``""`` argument goes through ``pa.scalar``, which costs ~100 µs
#: when pandas is not installed (pyarrow tries to import it on every call).
_NO_SEPARATOR = pa.scalar("", pa.string())


def span_keys(table: pa.Table) -> pa.ChunkedArray:
    """One string per span, ``trace_id`` + ``span_id`` (both fixed-width hex)."""
    return pc.binary_join_element_wise(
        table.column("trace_id"), table.column("span_id"), _NO_SEPARATOR
    )


def first_of_each_key(table: pa.Table) -> pa.Table:
    """The table with repeated (trace_id, span_id) pairs kept once (first wins)."""
    keys = span_keys(table)
    if pc.count_distinct(keys).as_py() == table.num_rows:
        return table
    seen: set[str] = set()
    keep = []
    for index, key in enumerate(keys.to_pylist()):
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return table.take(pa.array(keep, pa.int64()))


def to_ipc(table: pa.Table) -> pa.Buffer:
    """The table as one Arrow IPC stream (what a decode worker sends back). A
    ``pa.Buffer`` supports the buffer protocol, so it is written without a copy."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(data: bytes | memoryview | pa.Buffer) -> pa.Table:
    """The table in an IPC stream; zero-copy: its columns point into ``data``."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
