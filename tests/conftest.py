"""Shared fixtures: both stores, a real PostgreSQL server, and span builders.

Fixtures
--------
``store``
    A migrated store, parametrized over ``"duckdb"`` (a file under ``tmp_path``) and
    ``"postgres"`` (a fresh database on the test server, marked ``postgres``). Every
    test that takes it runs on both backends; it is closed afterwards.
``pg_server``
    Session-scoped :class:`pg_server.PostgresServer` (started once; or the server in
    ``GOLDENLOOP_TEST_DATABASE_URL``).
``pg_url``
    URL of a fresh, empty database on that server, dropped after the test.
``make_span_batch``
    The :func:`span_batch` helper below, for tests that prefer a fixture.

Span helpers (module level, also importable with ``from conftest import span_row``)
--------------------------------------------------------------------------------
``span_row(**overrides)``
    One complete spans row (a dict over ``SPAN_COLUMN_NAMES``) with sensible values: an
    ``llm`` span of 1.5 s in project ``demo``, session ``sess-1``, trace ``trace-1``.
    Overrides may use friendly types: ``datetime`` for timestamp columns (converted to
    epoch microseconds) and dicts/lists for JSON columns (converted to JSON text).
    ``end_time`` follows ``start_time + latency_ms`` unless given.
``span_batch(*rows)``
    A ``SpanBatch`` from dicts; each dict is passed through ``span_row`` so it only needs
    the fields that matter to the test, e.g.
    ``span_batch({"span_id": "a"}, {"span_id": "b", "parent_id": "a", "kind": "tool"})``.
``micros(dt)`` / ``BASE_TIME``
    Epoch microseconds of an aware datetime; the default start time of spans.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from pg_server import PostgresServer, PostgresServerError

from goldenloop.model import SPAN_COLUMN_NAMES, SPAN_COLUMNS, SpanBatch
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

BASE_TIME = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP_COLUMNS = {name for name, kind in SPAN_COLUMNS if kind == "timestamp"}
_JSON_COLUMNS = {name for name, kind in SPAN_COLUMNS if kind == "json"}


def micros(value: datetime) -> int:
    """Epoch microseconds (UTC) of an aware datetime, as SpanBatch timestamps hold them."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def span_row(**overrides: Any) -> dict[str, Any]:
    """One complete spans row; see the module docstring for the conventions."""
    unknown = set(overrides) - set(SPAN_COLUMN_NAMES)
    if unknown:
        raise TypeError(f"unknown span columns: {sorted(unknown)}")
    row: dict[str, Any] = {
        "project": "demo",
        "trace_id": "trace-1",
        "span_id": "span-1",
        "parent_id": None,
        "session_id": "sess-1",
        "message_id": "msg-1",
        "name": "chat",
        "kind": "llm",
        "start_time": BASE_TIME,
        "end_time": None,
        "latency_ms": 1500.0,
        "status": "ok",
        "error_type": None,
        "status_message": None,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.00027,
        "stop_reason": "stop",
        "prompt_hash": "p-abc123",
        "model_version": "gpt-4o-mini-2024-07-18",
        "feature_flags": {},
        "customer_tier": "free",
        "locale": "en-US",
        "index_version": "idx-1",
        "user_id": "user-1",
        "tool_name": None,
        "tool_args": None,
        "score": None,
        "input_text": "What is the refund policy?",
        "output_text": "You can get a refund within 30 days.",
        "attributes": {},
        "resource": {"service.name": "demo-app"},
        "events": [],
        "ingested_at": BASE_TIME + timedelta(seconds=5),
    }
    row.update(overrides)
    start = row["start_time"]
    if row["end_time"] is None and start is not None:
        start_dt = start if isinstance(start, datetime) else _EPOCH + timedelta(microseconds=start)
        row["end_time"] = start_dt + timedelta(milliseconds=row["latency_ms"] or 0.0)
    for name in _TIMESTAMP_COLUMNS:
        if isinstance(row[name], datetime):
            row[name] = micros(row[name])
    for name in _JSON_COLUMNS:
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name])
    return row


def span_batch(*rows: Mapping[str, Any]) -> SpanBatch:
    """A SpanBatch of ``span_row(**r)`` for each dict ``r``."""
    batch = SpanBatch()
    for row in rows:
        batch.append_row(span_row(**row))
    return batch


# -- PostgreSQL ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except PostgresServerError as exc:
        pytest.fail(f"cannot start the PostgreSQL test server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


_db_counter = itertools.count(1)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh empty database; dropped (forcefully) after the test."""
    import psycopg

    name = f"goldenloop_test_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        strategy = " STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else ""
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template1{strategy}")
    try:
        yield _with_database(pg_server.url, name)
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            force = " WITH (FORCE)" if admin.info.server_version >= 130000 else ""
            admin.execute(f"DROP DATABASE IF EXISTS {name}{force}")


# -- stores ----------------------------------------------------------------------------
@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on each backend (closed after the test)."""
    opened: Store
    if request.param == "duckdb":
        opened = DuckDBStore(tmp_path / "goldenloop.duckdb")
    else:
        from goldenloop.store.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("pg_url"))
    try:
        opened.migrate()
        yield opened
    finally:
        opened.close()


@pytest.fixture
def make_span_batch() -> Callable[..., SpanBatch]:
    """The ``span_batch(*rows)`` helper as a fixture."""
    return span_batch
