"""Decode workers: big OTLP requests decoded in other processes, same result as inline.

Real worker processes (``python -m goldenloop.ingest.worker``) behind a real app; the
only thing that differs from production is the test client transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import io
import os
import pickle
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_ingest_http import JSON, body_of, json_span, otlp_json, stored_span_ids, trace_id

from goldenloop.config import Settings
from goldenloop.ingest.arrow import from_ipc
from goldenloop.ingest.normalize import IngestLimits, InvalidSpans
from goldenloop.ingest.otlp import OtlpDecodeError
from goldenloop.ingest.pool import INLINE_MAX_BYTES, DecodePool, DecodeWorkerCrashed
from goldenloop.ingest.request import DecodeOptions, TraceRequest, decode_trace_request
from goldenloop.ingest.worker import (
    ERROR,
    FRAME_HEADER,
    INTERNAL_ERROR,
    TABLE,
    read_frame,
    serve,
)
from goldenloop.pricing import PriceTable
from goldenloop.sim import SimConfig, encode_otlp, simulate
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

PROTOBUF = {"Content-Type": "application/x-protobuf"}
OPTIONS = DecodeOptions(
    default_project="default",
    prices=PriceTable(),
    limits=IngestLimits(),
    max_request_bytes=16 * 1024 * 1024,
)


def big_protobuf_body(spans: int = 400, seed: int = 3) -> bytes:
    raw = []
    for chunk in simulate(SimConfig(seed=seed, days=1, sessions_per_day=2000, max_spans=spans)):
        raw.extend(chunk.spans)
    body = encode_otlp(raw)
    assert len(body) > INLINE_MAX_BYTES
    return body


def request_of(body: bytes, *, as_json: bool = False, encoding: str | None = None) -> TraceRequest:
    return TraceRequest(
        body=body,
        as_json=as_json,
        content_encoding=encoding,
        project_override=None,
        now_us=int(time.time() * 1_000_000),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DuckDBStore]:
    store = DuckDBStore(tmp_path / "pool.duckdb")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def client_for(store: DuckDBStore, **settings: Any) -> TestClient:
    settings.setdefault("batch_max_wait_ms", 1)
    settings.setdefault("flag_interval_s", 0)
    return TestClient(create_app(Settings(**settings), store))


def all_rows(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return sorted(store.fetch("SELECT * EXCLUDE (ingested_at) FROM spans"))


# -- the worker protocol -------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload)) + payload


def request_frames(request: TraceRequest) -> bytes:
    """What the pool writes for one request: the request without its body, the body."""
    return frame(pickle.dumps(dataclasses.replace(request, body=b""))) + frame(request.body)


def test_worker_answers_each_request_frame_with_a_table_or_a_named_error() -> None:
    good = big_protobuf_body(60)
    stdin = io.BytesIO(
        frame(pickle.dumps(OPTIONS))
        + request_frames(request_of(good))
        + request_frames(request_of(b"\xff\xff not protobuf"))
        + request_frames(request_of(body_of(otlp_json(json_span(span="zz"))), as_json=True))
    )
    stdout = io.BytesIO()
    serve(stdin, stdout)
    stdout.seek(0)
    answers = [read_frame(stdout) for _ in range(3)]
    assert read_frame(stdout) is None
    table_answer, bad_protobuf, bad_span = answers
    assert table_answer is not None and table_answer[:1] == TABLE
    expected = decode_trace_request(request_of(good), OPTIONS)
    assert from_ipc(table_answer[1:]).drop(["ingested_at"]).equals(expected.drop(["ingested_at"]))
    assert bad_protobuf is not None and bad_protobuf[:1] == ERROR
    name, message, _ = pickle.loads(bad_protobuf[1:])
    assert name == "OtlpDecodeError" and "protobuf" in message
    assert bad_span is not None and bad_span[:1] == ERROR
    name, _, problems = pickle.loads(bad_span[1:])
    assert name == "InvalidSpans" and any("spanId" in p for p in problems)


def test_a_bug_in_the_worker_is_reported_as_an_internal_error_and_the_worker_lives_on() -> None:
    broken = DecodeOptions(
        default_project="default",
        prices=None,  # type: ignore[arg-type]  # pricing an LLM span will fail
        limits=IngestLimits(),
        max_request_bytes=1 << 24,
    )
    good = big_protobuf_body(60)
    stdin = io.BytesIO(
        frame(pickle.dumps(broken))
        + request_frames(request_of(good))
        + request_frames(request_of(body_of(otlp_json()), as_json=True))
    )
    stdout = io.BytesIO()
    serve(stdin, stdout)
    stdout.seek(0)
    first, second = read_frame(stdout), read_frame(stdout)
    assert first is not None and first[:1] == ERROR
    assert pickle.loads(first[1:])[0] == INTERNAL_ERROR
    assert second is not None and second[:1] == TABLE  # the next request still works


# -- the pool ---------------------------------------------------------------------------------


def test_pool_decodes_big_requests_in_workers_exactly_as_inline() -> None:
    body = big_protobuf_body()
    request = request_of(body)

    async def scenario() -> tuple[Any, Any, list[int]]:
        pool = DecodePool(OPTIONS, workers=2)
        try:
            results = await asyncio.gather(*(pool.decode(request) for _ in range(4)))
            return results[0], results[3], pool.worker_pids()
        finally:
            await pool.stop()

    first, last, pids = asyncio.run(scenario())
    inline = decode_trace_request(request, OPTIONS)
    assert len(pids) == 2 and os.getpid() not in pids
    assert first.equals(inline) and last.equals(inline)


def test_pool_raises_the_decoders_errors_with_their_problems() -> None:
    spans = [json_span(attributes={"pad": "x" * 2000}) for _ in range(60)]
    spans[7]["spanId"] = "not-hex-at-all!!"
    bad_json = request_of(body_of(otlp_json(*spans)), as_json=True)
    bad_protobuf = request_of(b"\x0a\xff\xff\xff" + b"\x00" * (INLINE_MAX_BYTES + 10))

    async def scenario() -> tuple[BaseException, BaseException]:
        pool = DecodePool(OPTIONS, workers=1)
        try:
            errors = await asyncio.gather(
                pool.decode(bad_json), pool.decode(bad_protobuf), return_exceptions=True
            )
            return errors[0], errors[1]
        finally:
            await pool.stop()

    invalid, undecodable = asyncio.run(scenario())
    assert isinstance(invalid, InvalidSpans)
    assert any("span #7" in p and "spanId is not hexadecimal" in p for p in invalid.problems)
    assert isinstance(undecodable, OtlpDecodeError)


def test_small_requests_never_start_workers_and_compressed_ones_count_inflated() -> None:
    small = body_of(otlp_json(json_span()))
    squeezed = gzip.compress(body_of(otlp_json(*[json_span() for _ in range(300)])))
    assert len(squeezed) < INLINE_MAX_BYTES

    async def scenario() -> tuple[int, int]:
        pool = DecodePool(OPTIONS, workers=1)
        try:
            await pool.decode(request_of(small, as_json=True))
            before = pool.running_workers
            await pool.decode(request_of(squeezed, as_json=True, encoding="gzip"))
            return before, pool.running_workers
        finally:
            await pool.stop()

    assert asyncio.run(scenario()) == (0, 1)


def test_a_dead_worker_fails_only_its_request_and_is_replaced() -> None:
    request = request_of(big_protobuf_body())

    async def scenario() -> tuple[BaseException | None, int, list[int], list[int]]:
        pool = DecodePool(OPTIONS, workers=1)
        try:
            await pool.decode(request)
            [victim] = pool.worker_pids()
            os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(0.2)
            crashed: BaseException | None = None
            try:
                await pool.decode(request)
            except DecodeWorkerCrashed as exc:
                crashed = exc
            table = await pool.decode(request)
            return crashed, table.num_rows, [victim], pool.worker_pids()
        finally:
            await pool.stop()

    crashed, rows, before, after = asyncio.run(scenario())
    assert isinstance(crashed, DecodeWorkerCrashed)
    assert rows > 0
    assert len(after) == 1 and after != before


def test_requests_sharing_a_worker_each_get_their_own_answer() -> None:
    """One worker holds two requests at a time; answers must not cross."""
    requests = [request_of(big_protobuf_body(spans=150 + 40 * i, seed=i)) for i in range(5)]

    async def scenario() -> list[Any]:
        pool = DecodePool(OPTIONS, workers=1)
        try:
            return list(await asyncio.gather(*(pool.decode(r) for r in requests)))
        finally:
            await pool.stop()

    tables = asyncio.run(scenario())
    for request, table in zip(requests, tables, strict=True):
        assert table.equals(decode_trace_request(request, OPTIONS))


def test_a_worker_dying_with_two_requests_in_flight_is_replaced_once() -> None:
    request = request_of(big_protobuf_body(spans=3_000))

    async def scenario() -> tuple[list[Any], list[int], list[int], int]:
        pool = DecodePool(OPTIONS, workers=1)
        try:
            await pool.decode(request)
            [victim] = pool.worker_pids()
            calls = [asyncio.ensure_future(pool.decode(request)) for _ in range(2)]
            await asyncio.sleep(0.02)  # both sent, the first one decoding
            os.kill(victim, signal.SIGKILL)
            outcomes = list(await asyncio.gather(*calls, return_exceptions=True))
            after = pool.worker_pids()
            table = await pool.decode(request)
            return outcomes, [victim], after, table.num_rows
        finally:
            await pool.stop()

    outcomes, before, after, rows = asyncio.run(scenario())
    assert all(isinstance(o, DecodeWorkerCrashed) or o.num_rows == rows for o in outcomes)
    assert any(isinstance(o, DecodeWorkerCrashed) for o in outcomes)
    assert len(after) == 1 and after != before
    assert rows > 0


def test_stop_ends_every_worker_process() -> None:
    async def scenario() -> list[int]:
        pool = DecodePool(OPTIONS, workers=2)
        await pool.decode(request_of(big_protobuf_body()))
        pids = pool.worker_pids()
        await pool.stop()
        return pids

    for pid in asyncio.run(scenario()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- through the server -----------------------------------------------------------------------


def test_server_stores_the_same_rows_with_and_without_workers(tmp_path: Path) -> None:
    body = big_protobuf_body()
    stores = {}
    for workers in (0, 2):
        store = DuckDBStore(tmp_path / f"w{workers}.duckdb")
        store.migrate()
        with client_for(store, ingest_workers=workers) as client:
            response = client.post("/v1/traces", content=body, headers=PROTOBUF)
            assert response.status_code == 200, response.text
            decoder = client.app.state.goldenloop.decoder  # type: ignore[attr-defined]
            assert decoder.running_workers == workers
        stores[workers] = all_rows(store)
        store.close()
    assert len(stores[0]) > 100
    assert stores[0] == stores[2]


def test_server_answers_bad_big_requests_with_400_and_keeps_serving(db: DuckDBStore) -> None:
    spans = [json_span(attributes={"pad": "y" * 2000}) for _ in range(50)]
    spans[3]["endTimeUnixNano"] = "1"
    with client_for(db, ingest_workers=1) as client:
        bad = client.post("/v1/traces", content=body_of(otlp_json(*spans)), headers=JSON)
        assert bad.status_code == 400
        assert "span #3" in " ".join(bad.json()["problems"])
        garbage = client.post("/v1/traces", content=b"\xff" * 100_000, headers=PROTOBUF)
        assert garbage.status_code == 400
        assert "protobuf" in garbage.json()["error"]
        assert stored_span_ids(db) == set()
        good = client.post("/v1/traces", content=big_protobuf_body(), headers=PROTOBUF)
        assert good.status_code == 200
    assert len(stored_span_ids(db)) > 100


def test_server_answers_503_when_a_worker_dies_and_a_retry_succeeds(db: DuckDBStore) -> None:
    body = big_protobuf_body()
    trace = trace_id()
    with client_for(db, ingest_workers=1) as client:
        seed = client.post(
            "/v1/traces", content=body_of(otlp_json(json_span(trace=trace))), headers=JSON
        )
        assert seed.status_code == 200
        assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
        decoder = client.app.state.goldenloop.decoder  # type: ignore[attr-defined]
        for pid in decoder.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        crashed = client.post("/v1/traces", content=body, headers=PROTOBUF)
        assert crashed.status_code == 503
        assert crashed.headers["Retry-After"] == "1"
        retried = client.post("/v1/traces", content=body, headers=PROTOBUF)
        assert retried.status_code == 200
        assert client.get(f"/api/v1/traces/{trace}").status_code == 200
