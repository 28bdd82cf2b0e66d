"""The group-commit writer against a real DuckDB file.

Stores here are the real ``DuckDBStore`` with a thin subclass that can hold a commit
open (to pile up work deterministically) or fail for a marked span; they still write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import span_batch

from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.ingest.writer import GroupCommitWriter, QueueFull, WriterStopped
from goldenloop.model import Feedback, Outcome
from goldenloop.store.duckdb import DuckDBStore

TIMEOUT = 10


class GatedStore(DuckDBStore):
    """Real DuckDB store that records commits, can hold them and can refuse a marker span."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []
        self.fail_marker: str | None = None

    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int:
        span_ids = table.column("span_id").to_pylist()
        self.batches.append(span_ids)
        self.entered.set()
        assert self.gate.wait(TIMEOUT)
        if self.fail_marker is not None and self.fail_marker in span_ids:
            raise RuntimeError(f"refusing batch with {self.fail_marker}")
        return super().insert_span_table(table, dedupe=dedupe)

    def span_ids(self) -> set[str]:
        return {row[0] for row in self.fetch("SELECT span_id FROM spans")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    opened = GatedStore(tmp_path / "writer.duckdb")
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def writer(store: GatedStore) -> Iterator[GroupCommitWriter]:
    w = GroupCommitWriter(store, batch_max_wait_ms=1)
    w.start()
    try:
        yield w
    finally:
        store.gate.set()
        w.stop()


def batch_of(*span_ids: str, trace: str = "trace-1") -> pa.Table:
    return span_batch_to_arrow(span_batch(*({"trace_id": trace, "span_id": s} for s in span_ids)))


def hold_first_commit(store: GatedStore, writer: GroupCommitWriter) -> Future[int]:
    """Submit one job and wait until the writer is inside its commit, gate closed."""
    store.gate.clear()
    future = writer.submit_spans(batch_of("first"))
    assert store.entered.wait(TIMEOUT)
    return future


def feedback(item_id: str) -> Feedback:
    return Feedback(
        id=item_id, project="demo", session_id="sess-1", message_id=None, rating="up",
        category=None, comment=None, prompt_hash=None, model_hash=None, user_id=None,
        created_at=datetime(2024, 6, 1, tzinfo=UTC),
    )  # fmt: skip


def outcome(item_id: str) -> Outcome:
    return Outcome(
        id=item_id, project="demo", session_id="sess-1", message_id=None, name="refund",
        success=True, value=1.0, attributes={"k": "v"}, created_at=datetime(2024, 6, 1, tzinfo=UTC),
    )  # fmt: skip


def test_submitted_spans_are_committed_and_the_future_reports_the_span_count(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    future = writer.submit_spans(batch_of("a", "b", "c"))
    assert future.result(TIMEOUT) == 3
    assert store.span_ids() == {"a", "b", "c"}
    assert writer.stats.committed_spans == 3
    assert writer.stats.new_spans == 3
    assert writer.stats.queued_spans == 0


def test_group_commit_merges_concurrent_submissions_into_one_commit(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    first = hold_first_commit(store, writer)
    futures = [writer.submit_spans(batch_of(f"s{i}")) for i in range(10)]
    store.gate.set()
    assert first.result(TIMEOUT) == 1
    assert [f.result(TIMEOUT) for f in futures] == [1] * 10
    # One commit for the first job and one for all ten that queued behind it.
    assert store.batches == [["first"], [f"s{i}" for i in range(10)]]
    assert writer.stats.commits == 2
    assert len(store.span_ids()) == 11


def test_submissions_from_many_threads_share_commits(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    first = hold_first_commit(store, writer)
    barrier = threading.Barrier(8)
    futures: list[Future[int]] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        barrier.wait()
        future = writer.submit_spans(batch_of(f"t{n}-a", f"t{n}-b", trace=f"trace-{n}"))
        with lock:
            futures.append(future)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.gate.set()
    first.result(TIMEOUT)
    assert all(f.result(TIMEOUT) == 2 for f in futures)
    assert len(store.batches) == 2
    assert store.count_spans() == 17


def test_batch_max_spans_splits_the_queue_into_several_commits(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, batch_max_spans=4, batch_max_wait_ms=1)
    writer.start()
    try:
        first = hold_first_commit(store, writer)
        futures = [writer.submit_spans(batch_of(f"{i}-a", f"{i}-b")) for i in range(4)]
        store.gate.set()
        first.result(TIMEOUT)
        assert [f.result(TIMEOUT) for f in futures] == [2] * 4
    finally:
        store.gate.set()
        writer.stop()
    assert [len(b) for b in store.batches] == [1, 4, 4]


def test_future_resolves_only_after_the_rows_are_committed(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    store.gate.clear()
    future = writer.submit_spans(batch_of("late"))
    assert store.entered.wait(TIMEOUT)
    time.sleep(0.05)
    assert not future.done(), "acknowledged before the commit finished"
    assert store.span_ids() == set()

    seen_when_resolved: list[set[str]] = []
    callback_ran = threading.Event()

    def read_from_another_thread(_: Future[int]) -> None:
        # Runs the moment the future resolves; a fresh thread has its own cursor, so it
        # sees only what is committed.
        reader = threading.Thread(target=lambda: seen_when_resolved.append(store.span_ids()))
        reader.start()
        reader.join(TIMEOUT)
        callback_ran.set()

    future.add_done_callback(read_from_another_thread)
    store.gate.set()
    assert future.result(TIMEOUT) == 1
    assert callback_ran.wait(TIMEOUT)
    assert seen_when_resolved == [{"late"}]


def test_a_failing_job_in_a_merged_batch_fails_alone(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    first = hold_first_commit(store, writer)
    store.fail_marker = "poison"
    good_before = writer.submit_spans(batch_of("good-1", "good-2"))
    bad = writer.submit_spans(batch_of("ok-in-bad-job", "poison"))
    good_after = writer.submit_spans(batch_of("good-3"))
    fb = writer.submit_feedback([feedback("fb-1")])
    store.gate.set()
    first.result(TIMEOUT)
    assert good_before.result(TIMEOUT) == 2
    assert good_after.result(TIMEOUT) == 1
    assert fb.result(TIMEOUT) == 0
    with pytest.raises(RuntimeError, match="refusing batch with poison"):
        bad.result(TIMEOUT)
    assert store.span_ids() == {"first", "good-1", "good-2", "good-3"}
    assert store.fetch("SELECT id FROM feedback") == [("fb-1",)]
    assert writer.stats.failed_jobs == 1
    # The merged attempt came first, then each job alone.
    assert store.batches[1] == ["good-1", "good-2", "ok-in-bad-job", "poison", "good-3"]
    assert store.batches[2:] == [["good-1", "good-2"], ["ok-in-bad-job", "poison"], ["good-3"]]
    # The writer keeps going.
    assert writer.submit_spans(batch_of("after")).result(TIMEOUT) == 1


def test_duplicate_spans_across_submissions_are_stored_once(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    assert writer.submit_spans(batch_of("a", "b")).result(TIMEOUT) == 2
    assert writer.submit_spans(batch_of("a", "b")).result(TIMEOUT) == 2
    # Merged into one commit, duplicates of each other and of stored rows.
    first = hold_first_commit(store, writer)
    again = [writer.submit_spans(batch_of("b", "c")) for _ in range(3)]
    store.gate.set()
    first.result(TIMEOUT)
    assert [f.result(TIMEOUT) for f in again] == [2, 2, 2]
    rows = store.fetch("SELECT span_id, count(*) FROM spans GROUP BY span_id ORDER BY span_id")
    assert rows == [("a", 1), ("b", 1), ("c", 1), ("first", 1)]
    assert writer.stats.new_spans == 4
    assert writer.stats.committed_spans == 2 + 2 + 1 + 6


def test_feedback_and_outcomes_are_committed_with_spans(
    store: GatedStore, writer: GroupCommitWriter
) -> None:
    first = hold_first_commit(store, writer)
    futures = [
        writer.submit_feedback([feedback("fb-1"), feedback("fb-2")]),
        writer.submit_outcomes([outcome("oc-1")]),
        writer.submit_spans(batch_of("x")),
        writer.submit_feedback([feedback("fb-1")]),  # same id again: stored once
    ]
    store.gate.set()
    first.result(TIMEOUT)
    assert [f.result(TIMEOUT) for f in futures] == [0, 0, 1, 0]
    assert store.fetch("SELECT id FROM feedback ORDER BY id") == [("fb-1",), ("fb-2",)]
    assert store.fetch("SELECT id, attributes FROM outcomes") == [("oc-1", '{"k": "v"}')]
    assert len(store.batches) == 2


def test_queue_full_raises_with_retry_after_and_frees_up_after_commit(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, max_queue_spans=3, batch_max_wait_ms=1)
    writer.start()
    try:
        first = hold_first_commit(store, writer)  # 1 span queued until committed
        accepted = writer.submit_spans(batch_of("a", "b"))  # 3 queued: at the limit
        with pytest.raises(QueueFull) as excinfo:
            writer.submit_spans(batch_of("c"))
        assert excinfo.value.retry_after >= 1
        assert "retry later" in str(excinfo.value)
        store.gate.set()
        first.result(TIMEOUT)
        assert accepted.result(TIMEOUT) == 2
        assert writer.stats.queued_spans == 0
        assert writer.submit_spans(batch_of("c")).result(TIMEOUT) == 1
    finally:
        store.gate.set()
        writer.stop()
    assert store.span_ids() == {"first", "a", "b", "c"}


def test_feedback_is_not_held_back_by_a_full_span_queue(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, max_queue_spans=1, batch_max_wait_ms=1)
    writer.start()
    try:
        first = hold_first_commit(store, writer)
        with pytest.raises(QueueFull):
            writer.submit_spans(batch_of("c"))
        fb = writer.submit_feedback([feedback("fb")])
        oc = writer.submit_outcomes([outcome("oc")])
        store.gate.set()
        assert (first.result(TIMEOUT), fb.result(TIMEOUT), oc.result(TIMEOUT)) == (1, 0, 0)
    finally:
        store.gate.set()
        writer.stop()
    assert store.fetch("SELECT id FROM feedback") == [("fb",)]


def test_spans_still_commit_after_feedback_and_outcomes(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, batch_max_wait_ms=1)
    writer.start()
    try:
        assert writer.submit_feedback([feedback("fb")]).result(TIMEOUT) == 0
        assert writer.submit_spans(batch_of("after-feedback")).result(TIMEOUT) == 1
        assert writer.submit_outcomes([outcome("oc")]).result(TIMEOUT) == 0
        assert writer.submit_spans(batch_of("after-outcome")).result(TIMEOUT) == 1
    finally:
        writer.stop()


def test_an_empty_queue_accepts_a_job_larger_than_the_queue(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, max_queue_spans=2, batch_max_wait_ms=1)
    writer.start()
    try:
        assert writer.submit_spans(batch_of("a", "b", "c", "d")).result(TIMEOUT) == 4
    finally:
        writer.stop()


def test_stop_drains_everything_accepted_before_returning(store: GatedStore) -> None:
    writer = GroupCommitWriter(store, batch_max_spans=2, batch_max_wait_ms=50)
    writer.start()
    first = hold_first_commit(store, writer)
    futures = [writer.submit_spans(batch_of(f"d{i}")) for i in range(5)]
    futures.append(writer.submit_outcomes([outcome("oc")]))
    stopper = threading.Thread(target=writer.stop)
    stopper.start()
    time.sleep(0.05)
    store.gate.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    # stop() returned: every accepted job is resolved and durable.
    assert all(f.done() for f in [first, *futures])
    assert [f.result() for f in futures] == [1, 1, 1, 1, 1, 0]
    assert store.span_ids() == {"first", *(f"d{i}" for i in range(5))}
    assert store.fetch("SELECT id FROM outcomes") == [("oc",)]


def test_submit_after_stop_raises_writer_stopped(store: GatedStore) -> None:
    writer = GroupCommitWriter(store)
    with pytest.raises(WriterStopped):  # not started yet
        writer.submit_spans(batch_of("early"))
    writer.start()
    writer.start()  # idempotent
    writer.stop()
    for submit in (
        lambda: writer.submit_spans(batch_of("late")),
        lambda: writer.submit_feedback([feedback("fb")]),
        lambda: writer.submit_outcomes([outcome("oc")]),
    ):
        with pytest.raises(WriterStopped, match="shutting down"):
            submit()
    writer.stop()  # stopping twice is harmless
    assert store.count_spans() == 0


def test_on_commit_hook_sees_span_count_and_duration(store: GatedStore) -> None:
    calls: list[tuple[int, float]] = []
    writer = GroupCommitWriter(
        store, batch_max_wait_ms=1, on_commit=lambda n, s: calls.append((n, s))
    )
    writer.start()
    try:
        writer.submit_spans(batch_of("a", "b")).result(TIMEOUT)
    finally:
        writer.stop()
    ((count, seconds),) = calls
    assert count == 2
    assert seconds >= 0
    assert writer.stats.last_commit_seconds == seconds
