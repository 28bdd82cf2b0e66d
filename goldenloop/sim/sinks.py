"""Where simulated traffic goes: straight into a store (bulk) or over the wire (OTLP).

The bulk path runs the same ``normalize_spans`` as the server, then inserts with
``dedupe=False`` (simulated ids are fresh). Inserting runs on a writer thread while
the next chunk is generated and normalized, so the DuckDB work (which releases the
GIL) overlaps with the Python work. The cyclic garbage collector is paused during a
run: the simulator allocates millions of small acyclic objects and the collector's
passes over them cost about a quarter of the generation time.
"""

from __future__ import annotations

import gc
import gzip
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx

from goldenloop.ingest.normalize import normalize_spans
from goldenloop.ingest.raw import RawSpan
from goldenloop.model import Feedback, Outcome, SpanBatch
from goldenloop.pricing import PriceTable
from goldenloop.sim.config import SimConfig
from goldenloop.sim.generate import simulate
from goldenloop.sim.manifest import SimManifest
from goldenloop.sim.otlp import encode_otlp, feedback_body, outcome_body, trace_batches
from goldenloop.store.base import Store

Progress = Callable[[int], None]
_MAX_RETRIES = 8


class SimSendError(RuntimeError):
    """The server refused simulated traffic; the message says which request and why."""


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert(
    store: Store, batch: SpanBatch, feedback: list[Feedback], outcomes: list[Outcome]
) -> int:
    store.insert_spans(batch, dedupe=False)
    if feedback:
        store.insert_feedback(feedback)
    if outcomes:
        store.insert_outcomes(outcomes)
    return len(batch)


def write_to_store(
    store: Store,
    config: SimConfig,
    progress: Progress | None = None,
    *,
    prices: PriceTable | None = None,
    now_us: int | None = None,
    default_project: str = "default",
    include_feedback: bool = True,
) -> SimManifest:
    """Generate the run and bulk-load it into ``store``; return the ground truth.

    ``include_feedback=False`` loads spans only (feedback and outcomes are still
    generated and counted in the manifest, just not stored)."""
    prices = prices or PriceTable()
    now_us = now_us if now_us is not None else int(time.time() * 1_000_000)
    manifest = SimManifest.for_config(config)
    pending: deque[Future[int]] = deque()
    with paused_gc(), ThreadPoolExecutor(1, thread_name_prefix="goldenloop-sim-writer") as pool:
        for chunk in simulate(config):
            batch = normalize_spans(
                chunk.spans, default_project=default_project, prices=prices, now_us=now_us
            )
            manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                         outcomes=len(chunk.outcomes))  # fmt: skip
            del chunk.spans[:]
            # At most one insert in flight: memory stays at about two chunks.
            while pending:
                done = pending.popleft().result()
                if progress:
                    progress(done)
            feedback, outcomes = (chunk.feedback, chunk.outcomes) if include_feedback else ([], [])
            pending.append(pool.submit(_insert, store, batch, feedback, outcomes))
        while pending:
            done = pending.popleft().result()
            if progress:
                progress(done)
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

        for chunk in simulate(config):
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
