"""Where simulated traffic goes: straight into a store (bulk) or over the wire (OTLP).

The bulk path runs the same ``normalize_spans`` as the server, then inserts with
``dedupe=False`` (simulated ids are fresh). Generating and normalizing cost about
three times what inserting does, so for big runs worker processes do them (see
``parallel``) and this process only inserts; small runs stay in-process. Inserting
runs on a writer thread either way, so it overlaps with the next chunk's generation
or reception (the DuckDB work releases the GIL).

Inserts are grouped to at least ``chunk_spans`` rows: a DuckDB insert costs ~50 ms
whatever its size (measured: 32 µs of CPU a span in inserts of 2,000 spans, 9 µs in
inserts of 20,000), and workers send smaller pieces to keep their pipeline short.
"""

from __future__ import annotations

import gzip
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from goldenloop.ingest.raw import RawSpan
from goldenloop.pricing import PriceTable
from goldenloop.sim.columnar import columnar_pieces
from goldenloop.sim.config import SimConfig
from goldenloop.sim.gcpause import paused_gc
from goldenloop.sim.generate import simulate, traffic
from goldenloop.sim.manifest import SimManifest
from goldenloop.sim.otlp import encode_otlp, feedback_body, outcome_body, trace_batches
from goldenloop.sim.parallel import auto_workers, pieces_from_workers
from goldenloop.sim.pieces import LoadPiece, load_piece
from goldenloop.store.base import Store

if TYPE_CHECKING:
    import httpx

Progress = Callable[[int], None]
_MAX_RETRIES = 8


class SimSendError(RuntimeError):
    """The server refused simulated traffic; the message says which request and why."""


class _GroupedWriter:
    """Inserts pieces on one writer thread, grouped to at least ``min_rows`` spans, with
    at most ``MAX_IN_FLIGHT`` groups submitted (so memory holds about three groups).

    Two, not one: an insert that runs into a DuckDB checkpoint takes several times its
    usual ~0.2 s, and with only one group in flight the generating thread stopped for
    all of it; with a second one queued it keeps generating through the spike."""

    MAX_IN_FLIGHT = 2

    def __init__(
        self,
        store: Store,
        pool: ThreadPoolExecutor,
        *,
        min_rows: int,
        include_feedback: bool,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.min_rows = min_rows
        self.include_feedback = include_feedback
        self.progress = progress
        self.group: list[LoadPiece] = []
        self.rows = 0
        self.pending: deque[Future[int]] = deque()

    def add(self, piece: LoadPiece) -> None:
        self.group.append(piece)
        self.rows += piece.table.num_rows
        if self.rows >= self.min_rows:
            self._submit()

    def finish(self) -> None:
        if self.group:
            self._submit()
        while self.pending:
            self._wait_oldest()

    def _submit(self) -> None:
        while len(self.pending) >= self.MAX_IN_FLIGHT:
            self._wait_oldest()
        self.pending.append(self.pool.submit(self._insert, self.group))
        self.group, self.rows = [], 0

    def _wait_oldest(self) -> None:
        done = self.pending.popleft().result()
        if self.progress:
            self.progress(done)

    def _insert(self, group: list[LoadPiece]) -> int:
        tables = pa.concat_tables([piece.table for piece in group])
        inserted = self.store.insert_span_table(tables, dedupe=False)
        if self.include_feedback:
            if feedback := [item for piece in group for item in piece.feedback]:
                self.store.insert_feedback(feedback)
            if outcomes := [item for piece in group for item in piece.outcomes]:
                self.store.insert_outcomes(outcomes)
        return inserted


def _pieces_in_process(
    config: SimConfig, *, prices: PriceTable, now_us: int, default_project: str
) -> Generator[LoadPiece, None, None]:
    if config.engine == "columnar":
        yield from columnar_pieces(config, now_us=now_us, prices=prices)
        return
    for chunk in simulate(config):
        yield load_piece(chunk, prices=prices, now_us=now_us, default_project=default_project)


def write_to_store(
    store: Store,
    config: SimConfig,
    progress: Progress | None = None,
    *,
    prices: PriceTable | None = None,
    now_us: int | None = None,
    default_project: str = "default",
    include_feedback: bool = True,
    workers: int | None = None,
) -> SimManifest:
    """Generate the run and bulk-load it into ``store``; return the ground truth.

    ``include_feedback=False`` loads spans only (feedback and outcomes are still
    generated and counted in the manifest, just not stored).

    ``workers`` is how many processes generate, normalize and convert to Arrow while
    this one inserts; ``0`` does everything in this process. ``None`` picks
    ``parallel.auto_workers(config)``: in-process for runs estimated under 50,000 spans
    (starting workers costs more than they save) or on one core, else one worker per
    core. Stored rows and manifest are the same for every value. Workers are plain
    subprocesses (``python -m goldenloop.sim.worker_main``), so the calling script needs
    no ``if __name__ == "__main__":`` guard and is not re-imported by them."""
    if workers is not None and workers < 0:
        raise ValueError("workers must be 0 (in-process) or more")
    prices = prices or PriceTable()
    now_us = now_us if now_us is not None else int(time.time() * 1_000_000)
    workers = auto_workers(config) if workers is None else workers
    manifest = SimManifest.for_config(config)
    if workers:
        pieces = pieces_from_workers(
            config, workers, prices=prices, now_us=now_us, default_project=default_project
        )
    else:
        pieces = _pieces_in_process(
            config, prices=prices, now_us=now_us, default_project=default_project
        )
    with (
        paused_gc(),
        closing(pieces),
        ThreadPoolExecutor(1, thread_name_prefix="goldenloop-sim-writer") as pool,
    ):
        writer = _GroupedWriter(
            store,
            pool,
            min_rows=config.chunk_spans,
            include_feedback=include_feedback,
            progress=progress,
        )
        for piece in pieces:
            manifest.add(piece.truth, spans=piece.generated_spans, feedback=len(piece.feedback),
                         outcomes=len(piece.outcomes))  # fmt: skip
            writer.add(piece)
        writer.finish()
    return manifest


def _post(
    client: httpx.Client,
    path: str,
    *,
    what: str,
    content: bytes | None = None,
    json: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    for attempt in range(_MAX_RETRIES):
        response = client.post(path, content=content, json=json, headers=headers)
        if response.status_code in (429, 503) and attempt < _MAX_RETRIES - 1:
            try:
                delay = float(response.headers.get("retry-after", "1"))
            except ValueError:
                delay = 1.0
            time.sleep(min(max(delay, 0.05), 5.0))
            continue
        if response.status_code >= 400:
            raise SimSendError(
                f"POST {path} ({what}) failed with HTTP {response.status_code}: "
                f"{response.text[:500]}"
            )
        return


def send_over_otlp(
    url: str,
    config: SimConfig,
    api_key: str | None = None,
    progress: Progress | None = None,
    *,
    batch_spans: int = 2000,
    concurrency: int = 8,
    compress: bool = False,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> SimManifest:
    """Send the run to a goldenloop server as instrumented apps would: spans as
    OTLP/HTTP protobuf to ``{url}/v1/traces`` (batches never split a trace), feedback
    and outcomes as JSON to ``/api/v1/feedback`` and ``/api/v1/outcomes``.

    Up to ``concurrency`` requests are in flight, so the server's group commit can
    merge them; a chunk's spans are acknowledged before its feedback is sent."""
    import httpx  # here, not at the top: bulk workers import this module and never send

    headers = {"User-Agent": "goldenloop-sim"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    manifest = SimManifest.for_config(config)
    with (
        paused_gc(),
        httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        ) as client,
        ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="goldenloop-sim-send") as pool,
    ):

        def send_spans(spans: Sequence[RawSpan]) -> int:
            body = encode_otlp(spans)
            span_headers = {"Content-Type": "application/x-protobuf"}
            if compress:
                body = gzip.compress(body, compresslevel=1)
                span_headers["Content-Encoding"] = "gzip"
            _post(client, "/v1/traces", what=f"{len(spans)} spans", content=body,
                  headers=span_headers)  # fmt: skip
            return len(spans)

        for chunk in traffic(config):
            futures = [pool.submit(send_spans, b) for b in trace_batches(chunk.spans, batch_spans)]
            for future in futures:
                sent = future.result()
                if progress:
                    progress(sent)
            events = [
                pool.submit(_post, client, "/api/v1/feedback", what=f"feedback {item.id}",
                            json=feedback_body(item))
                for item in chunk.feedback
            ] + [
                pool.submit(_post, client, "/api/v1/outcomes", what=f"outcome {item.id}",
                            json=outcome_body(item))
                for item in chunk.outcomes
            ]  # fmt: skip
            for event in events:
                event.result()
            manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                         outcomes=len(chunk.outcomes))  # fmt: skip
    return manifest
