"""The stored-key filter that lets the embedded store skip most duplicate lookups.

The filter may say "maybe stored" for a new span (then the store looks it up), but
must never say "new" for a stored one, across rotations, restarts and odd ids.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import BASE_TIME, span_batch

from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.store import duckdb as duckdb_store
from goldenloop.store import keyfilter
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.store.keyfilter import SpanKeyFilter, key_hashes, start_micros

RNG = np.random.default_rng(7)


def random_hex(rows: int, width: int) -> list[str]:
    return [RNG.bytes(width // 2).hex() for _ in range(rows)]


def keys_table(rows: int, *, first_start: int = 0, traces: list[str] | None = None) -> pa.Table:
    return pa.table(
        {
            "trace_id": traces if traces is not None else random_hex(rows, 32),
            "span_id": random_hex(rows, 16),
            "start_time": pa.array(np.arange(first_start, first_start + rows), pa.int64()).cast(
                pa.timestamp("us")
            ),
        }
    )


def regular_spans(count: int, *, offset: int = 0) -> list[dict[str, object]]:
    """Spans with ids shaped as normalization writes them (hex, fixed width)."""
    return [
        {
            "trace_id": f"{(offset + i) // 4:032x}",
            "span_id": f"{offset + i + 1:016x}",
            "start_time": BASE_TIME + timedelta(seconds=offset + i),
        }
        for i in range(count)
    ]


# -- hashing ---------------------------------------------------------------------------
def test_equal_keys_hash_equal_and_distinct_keys_hash_apart() -> None:
    table = keys_table(5_000)
    hashes = key_hashes(table)
    assert hashes is not None and hashes.dtype == np.uint64
    assert len(np.unique(hashes)) == 5_000
    again = key_hashes(table.slice(1_000, 10))  # a slice: offsets into the same buffers
    assert again is not None and list(again) == list(hashes[1_000:1_010])


def test_sequential_ids_still_spread_over_the_filter() -> None:
    table = span_batch_to_arrow(span_batch(*regular_spans(4_096)))
    hashes = key_hashes(table)
    assert hashes is not None
    buckets = np.bincount((hashes >> np.uint64(58)).astype(np.int64), minlength=64)
    assert buckets.min() > 20  # ~64 per bucket; sequential ids do not pile up


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        ("trace-1", "00000000000000a1"),  # wrong width
        ("0" * 31 + "A", "00000000000000a1"),  # upper case is not what normalization writes
        ("0" * 32, "00000000000000g1"),  # not hex
        ("0" * 32, None),  # missing
    ],
)
def test_ids_of_another_shape_get_no_hashes(trace_id: str, span_id: str | None) -> None:
    table = pa.table(
        {
            "trace_id": ["f" * 32, trace_id],
            "span_id": pa.array(["00000000000000a0", span_id], pa.string()),
            "start_time": pa.array([1, 2], pa.timestamp("us")),
        }
    )
    assert key_hashes(table) is None


# -- the filter ------------------------------------------------------------------------
def test_every_added_key_stays_a_suspect_through_rotations() -> None:
    stored_keys = SpanKeyFilter(capacity=1_000)
    batches = [keys_table(300, first_start=i * 300) for i in range(12)]
    for table in batches:
        hashes = key_hashes(table)
        assert hashes is not None
        stored_keys.add(hashes, start_micros(table))
    assert stored_keys.horizon > keyfilter.NO_HORIZON  # a generation was dropped
    for table in batches:
        hashes = key_hashes(table)
        assert hashes is not None
        assert stored_keys.suspects(hashes, start_micros(table)).all()
    assert stored_keys.keys <= 2 * 1_000


def test_new_keys_are_almost_never_suspects() -> None:
    stored_keys = SpanKeyFilter(capacity=20_000)
    stored = keys_table(20_000)
    stored_hashes = key_hashes(stored)
    assert stored_hashes is not None
    stored_keys.add(stored_hashes, start_micros(stored))
    fresh = keys_table(20_000, first_start=50_000)
    fresh_hashes = key_hashes(fresh)
    assert fresh_hashes is not None
    false_positives = int(stored_keys.suspects(fresh_hashes, start_micros(fresh)).sum())
    assert false_positives <= 60  # ~0.1% expected at capacity


def test_spans_at_or_before_the_horizon_are_suspects() -> None:
    stored_keys = SpanKeyFilter(horizon=100)
    table = keys_table(3, first_start=99)
    hashes = key_hashes(table)
    assert hashes is not None
    assert list(stored_keys.suspects(hashes, start_micros(table))) == [True, True, False]


# -- in the DuckDB store ---------------------------------------------------------------
@pytest.fixture
def duck(tmp_path: Path) -> DuckDBStore:
    store = DuckDBStore(tmp_path / "keys.duckdb")
    store.migrate()
    return store


def test_retried_regular_spans_are_stored_once(duck: DuckDBStore) -> None:
    first = regular_spans(600)
    assert duck.insert_spans(span_batch(*first)) == 600
    assert duck.insert_spans(span_batch(*first[::3], *regular_spans(50, offset=600))) == 50
    assert duck.count_spans() == 650


def test_duplicates_are_found_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.duckdb"
    store = DuckDBStore(path)
    store.migrate()
    store.insert_spans(span_batch(*regular_spans(400)), dedupe=False)
    store.close()

    reopened = DuckDBStore(path)
    assert reopened.insert_spans(span_batch(*regular_spans(450))) == 50
    assert reopened.count_spans() == 450
    reopened.close()


def test_keys_the_filter_did_not_load_are_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store with more spans than the filter holds: the oldest are behind the
    horizon and looked up exactly."""
    path = tmp_path / "big.duckdb"
    store = DuckDBStore(path)
    store.migrate()
    store.insert_spans(span_batch(*regular_spans(500)), dedupe=False)
    store.close()

    monkeypatch.setattr(keyfilter, "CAPACITY", 100)
    reopened = DuckDBStore(path)
    assert reopened.insert_spans(span_batch(*regular_spans(10))) == 0  # oldest, unloaded
    assert reopened.insert_spans(span_batch(*regular_spans(10, offset=490))) == 0  # loaded
    assert reopened.insert_spans(span_batch(*regular_spans(10, offset=500))) == 10
    assert reopened.count_spans() == 510
    reopened.close()


def test_inserts_without_dedupe_still_teach_the_filter(duck: DuckDBStore) -> None:
    duck.insert_spans(span_batch(*regular_spans(5)))  # loads the filter
    duck.insert_spans(span_batch(*regular_spans(100, offset=5)), dedupe=False)
    assert duck.insert_spans(span_batch(*regular_spans(105))) == 0


def test_spans_of_another_shape_move_the_horizon_up(duck: DuckDBStore) -> None:
    """Odd ids cannot be hashed, so their spans would be invisible to the filter: the
    store looks up everything that old from then on."""
    duck.insert_spans(span_batch(*regular_spans(5)))
    odd = {"trace_id": "0" * 32, "span_id": "odd", "start_time": BASE_TIME + timedelta(days=1)}
    duck.insert_spans(span_batch(odd, *regular_spans(5, offset=5)))
    assert duck.insert_spans(span_batch(*regular_spans(10))) == 0
    assert duck.insert_spans(span_batch(odd)) == 0
    assert duck.count_spans() == 11


def test_new_spans_skip_the_lookup_and_retries_take_it(
    duck: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[int] = []
    exact = duckdb_store._stored_keys_among

    def counting(cursor: object, table: pa.Table) -> list[str]:
        looked_up.append(table.num_rows)
        return exact(cursor, table)  # type: ignore[arg-type]

    monkeypatch.setattr(duckdb_store, "_stored_keys_among", counting)
    duck.insert_spans(span_batch(*regular_spans(1_000)))
    duck.insert_spans(span_batch(*regular_spans(1_000, offset=1_000)))
    assert sum(looked_up) <= 5  # false positives only
    looked_up.clear()
    assert duck.insert_spans(span_batch(*regular_spans(20, offset=1_990))) == 10
    assert 10 <= sum(looked_up) <= 15  # the ten stored ones (and a false positive or so)


def test_repeats_within_a_regular_batch_keep_the_first(duck: DuckDBStore) -> None:
    spans = regular_spans(4)
    repeat = {**spans[1], "name": "the retry"}
    assert duck.insert_spans(span_batch(*spans, repeat)) == 4
    [stored] = [
        s for s in duck.get_trace(str(spans[1]["trace_id"])) if s.span_id == spans[1]["span_id"]
    ]
    assert stored.name == "chat"
    assert duck.insert_spans(span_batch(repeat, *regular_spans(1, offset=4))) == 1
