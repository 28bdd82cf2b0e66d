"""The single writer: group commit with a bounded queue.

Request handlers ``submit`` work and await its future. One thread takes everything
queued (up to ``batch_max_spans``), writes it in one transaction and only then resolves
the futures, so a request is acknowledged exactly when its spans are durable, while
many concurrent requests share one commit. When more than ``max_queue_spans`` wait,
``submit`` raises ``QueueFull`` and the handler answers 429 with Retry-After.
If a merged commit fails, each request is retried alone so one bad request cannot
take the others down with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import pyarrow as pa

from goldenloop.model import Feedback, Outcome
from goldenloop.store.base import Store

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too much work is waiting for the writer; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("ingest queue is full; retry later")
        self.retry_after = retry_after


class WriterStopped(RuntimeError):
    pass


@dataclass
class _Job:
    spans: pa.Table | None = None
    feedback: Sequence[Feedback] = ()
    outcomes: Sequence[Outcome] = ()
    future: Future[int] = field(default_factory=Future)

    @property
    def span_count(self) -> int:
        return self.spans.num_rows if self.spans is not None else 0


@dataclass
class WriterStats:
    queued_spans: int = 0
    committed_spans: int = 0
    new_spans: int = 0
    commits: int = 0
    failed_jobs: int = 0
    last_commit_seconds: float = 0.0


class GroupCommitWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_queue_spans: int = 200_000,
        batch_max_spans: int = 20_000,
        batch_max_wait_ms: int = 20,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._store = store
        self._max_queue_spans = max_queue_spans
        self._batch_max_spans = batch_max_spans
        self._batch_max_wait = batch_max_wait_ms / 1000
        self._on_commit = on_commit
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.stats = WriterStats()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, name="goldenloop-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work, commit everything already accepted, then return."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- submitting ------------------------------------------------------------------
    def _submit(self, job: _Job) -> Future[int]:
        with self._cond:
            if not self._running:
                raise WriterStopped("the writer is shutting down")
            queued = self.stats.queued_spans
            if queued and queued + job.span_count > self._max_queue_spans:
                raise QueueFull(retry_after=max(1, min(30, queued // 50_000 + 1)))
            self._jobs.append(job)
            self.stats.queued_spans += job.span_count
            self._cond.notify()
        return job.future

    def submit_spans(self, table: pa.Table) -> Future[int]:
        """Queue a span table (``goldenloop.ingest.arrow.SPAN_SCHEMA``) for commit."""
        return self._submit(_Job(spans=table))

    def submit_feedback(self, items: Sequence[Feedback]) -> Future[int]:
        return self._submit(_Job(feedback=items))

    def submit_outcomes(self, items: Sequence[Outcome]) -> Future[int]:
        return self._submit(_Job(outcomes=items))

    # -- the writer thread -----------------------------------------------------------
    def _take(self) -> list[_Job]:
        with self._cond:
            while self._running and not self._jobs:
                self._cond.wait()
            if not self._jobs:
                return []
            deadline = time.monotonic() + self._batch_max_wait
            while self._running and self.stats.queued_spans < self._batch_max_spans:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken: list[_Job] = []
            spans = 0
            while self._jobs and (
                not taken or spans + self._jobs[0].span_count <= self._batch_max_spans
            ):
                job = self._jobs.popleft()
                spans += job.span_count
                taken.append(job)
            return taken

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if not jobs:
                return  # stopped and drained
            self._commit(jobs)

    def _write(self, jobs: Sequence[_Job]) -> int:
        tables = [job.spans for job in jobs if job.spans is not None and job.spans.num_rows]
        feedback: list[Feedback] = []
        outcomes: list[Outcome] = []
        for job in jobs:
            feedback.extend(job.feedback)
            outcomes.extend(job.outcomes)
        new = self._store.insert_span_table(pa.concat_tables(tables)) if tables else 0
        if feedback:
            self._store.insert_feedback(feedback)
        if outcomes:
            self._store.insert_outcomes(outcomes)
        return new

    def _commit(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        span_count = sum(job.span_count for job in jobs)
        try:
            new = self._write(jobs)
            results: list[tuple[_Job, int | BaseException]] = [(j, j.span_count) for j in jobs]
        except Exception:
            log.exception("group commit of %d jobs failed; retrying them one by one", len(jobs))
            new = 0
            results = []
            for job in jobs:
                try:
                    new += self._write([job])
                    results.append((job, job.span_count))
                except Exception as exc:  # noqa: BLE001 - reported to that request only
                    results.append((job, exc))
        elapsed = time.perf_counter() - started
        with self._cond:
            self.stats.queued_spans -= span_count
            self.stats.committed_spans += span_count
            self.stats.new_spans += new
            self.stats.commits += 1
            self.stats.last_commit_seconds = elapsed
        for job, result in results:
            if isinstance(result, BaseException):
                self.stats.failed_jobs += 1
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        if self._on_commit is not None:
            self._on_commit(span_count, elapsed)
