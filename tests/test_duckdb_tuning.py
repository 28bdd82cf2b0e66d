"""DuckDB-specific tuning: small row groups and yielding threads under ingest.

Both are invisible in results; these tests pin down that they are in effect and that
they give back what they take.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import span_batch

from goldenloop.store import duckdb as duckdb_store
from goldenloop.store.duckdb import ROW_GROUP_SIZE, DuckDBStore


def threads_of(store: DuckDBStore) -> int:
    return int(store._conn.execute("SELECT current_setting('threads')").fetchall()[0][0])


def test_row_groups_are_small_on_every_open(tmp_path: Path) -> None:
    path = tmp_path / "groups.duckdb"
    for attempt in range(2):  # the option is per open, not stored in the file
        store = DuckDBStore(path)
        store.migrate()
        store.insert_spans(
            span_batch(*({"span_id": f"{attempt}-{i}"} for i in range(3 * ROW_GROUP_SIZE))),
            dedupe=False,
        )
        store.execute("CHECKPOINT")
        groups = store.fetch(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('spans')"
        )[0][0]
        assert groups >= 3 * (attempt + 1)
        store.close()


def test_sustained_ingest_runs_duckdb_on_one_thread_and_quiet_gives_threads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_store, "QUIET_AFTER_S", 2.0)
    store = DuckDBStore(tmp_path / "threads.duckdb")
    store.migrate()
    store.execute("SET threads = 2")  # what DuckDB picks on this 2-core machine
    store._threads = duckdb_store._ThreadYield(store._conn)
    try:
        store.insert_spans(span_batch({"span_id": "small"}))
        assert threads_of(store) == 2, "a trickle of spans is not sustained ingest"
        busy = span_batch(*({"span_id": f"b{i}"} for i in range(2 * 1_000)))
        store.insert_spans(busy)
        store.insert_spans(span_batch(*({"span_id": f"c{i}"} for i in range(1_000))))
        assert threads_of(store) == 1
        assert store.count_spans() == 3_001  # a read while still busy keeps one thread
        assert threads_of(store) == 1
        time.sleep(2.1)
        assert store.count_spans() == 3_001
        assert threads_of(store) == 2
    finally:
        store.close()
