"""The columnar simulation engine: the bulk path for large volumes.

It simulates the same apps, users, scenarios, feedback and ground truth as the
per-session engine (``goldenloop.sim.generate``), but advances every session of a batch
one turn at a time with numpy and writes the spans straight as the stored Arrow table
(``blocks.build_table``), without building a ``RawSpan`` per span or normalizing it.
That makes a span cost a few microseconds instead of ~25, so a 2-core machine loads
over 100,000 spans a second (see ``docs/benchmarks.md``).

The stored rows are exactly what the server would store had the same spans arrived
over OTLP: ``render.to_raw_spans`` turns a table back into ``RawSpan`` objects, and
the tests check that normalizing those gives the table again. The OTLP sink uses the
same rendering, so both sinks carry the same traffic for a seed.

A run is cut into batches of whole hours (``plan_batches``); each batch draws from its
own generators, so a batch comes out the same whichever process makes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

import numpy as np
import pyarrow.compute as pc

from goldenloop.ingest.arrow import empty_span_table
from goldenloop.pricing import PriceTable
from goldenloop.sim.columnar.batch import Batch
from goldenloop.sim.columnar.blocks import I64, bools, build_table
from goldenloop.sim.columnar.render import to_raw_spans
from goldenloop.sim.columnar.sessions import draw_sessions
from goldenloop.sim.config import ALL_APPS, SimConfig
from goldenloop.sim.generate import SimChunk, search_deploy_us
from goldenloop.sim.manifest import ChunkTruth
from goldenloop.sim.pieces import LoadPiece
from goldenloop.sim.population import Population

#: Spans per batch the plan aims for: big enough that numpy's per-call costs vanish.
BATCH_SPANS: Final = 20_000
SPANS_PER_SESSION: Final = 9.5


def plan_batches(config: SimConfig) -> list[range]:
    """Runs of whole hours of about ``min(chunk_spans, BATCH_SPANS)`` estimated spans."""
    population = Population(config)
    target = min(config.chunk_spans, BATCH_SPANS)
    batches: list[range] = []
    start, size = 0, 0.0
    for hour in range(population.hours):
        spans = population.hour_sessions(hour)[2] * SPANS_PER_SESSION
        if hour > start and size + spans > target:
            batches.append(range(start, hour))
            start, size = hour, 0.0
        size += spans
    batches.append(range(start, population.hours))
    return batches


def generate_batch(
    config: SimConfig, hours: range, *, now_us: int, prices: PriceTable | None = None
) -> LoadPiece:
    """The sessions that start in ``hours`` as one load piece, cut after the session at
    which it reaches ``config.max_spans`` spans."""
    population = Population(config)
    sessions = draw_sessions(population, hours)
    g = np.random.default_rng([config.seed, hours.start, hours.stop, 0xB7])
    batch = Batch(
        config, sessions, g, config.resolved_scenarios(), search_deploy_us(config),
        prices or PriceTable(),
    )  # fmt: skip
    batch.run()
    if not len(batch.blocks):
        table = empty_span_table()
        return LoadPiece(table, 0, batch.feedback, batch.outcomes, batch.truth)
    turns = batch.turn_columns()
    table = build_table(batch.blocks, turns, sessions.columns(), g, now_us=now_us)
    piece = LoadPiece(table, table.num_rows, batch.feedback, batch.outcomes, batch.truth)
    if config.max_spans is not None and piece.generated_spans >= config.max_spans:
        row_turns = np.concatenate([b["turn"] for b in batch.blocks.blocks])
        piece = _cut(piece, batch, turns.session, row_turns, config.max_spans)
    return piece


def _cut(
    piece: LoadPiece, batch: Batch, turn_session: I64, row_turns: I64, budget: int
) -> LoadPiece:
    """The piece up to the session (in start order) at which it reaches ``budget``."""
    sessions = batch.sessions
    row_sessions = turn_session[row_turns]
    spans_before = np.cumsum(np.bincount(row_sessions, minlength=len(sessions)))
    last = int(np.searchsorted(spans_before, budget))  # the session reaching the budget
    kept = set(sessions.ids[: last + 1])
    table = piece.table.filter(bools(row_sessions <= last))
    truth = ChunkTruth(
        sessions=last + 1,
        turns=int((turn_session <= last).sum()),
        scenario_sessions={k: v & kept for k, v in piece.truth.scenario_sessions.items()},
        failure_sessions={k: v & kept for k, v in piece.truth.failure_sessions.items()},
    )
    for app in sessions.app[: last + 1].tolist():
        project = ALL_APPS[app]
        truth.sessions_by_project[project] = truth.sessions_by_project.get(project, 0) + 1
    return LoadPiece(
        table,
        table.num_rows,
        [f for f in piece.feedback if f.session_id in kept],
        [o for o in piece.outcomes if o.session_id in kept],
        truth,
    )


def columnar_pieces(
    config: SimConfig, *, now_us: int, prices: PriceTable | None = None
) -> Iterator[LoadPiece]:
    """The whole run, batch by batch, stopping at ``config.max_spans``."""
    total = 0
    for hours in plan_batches(config):
        budget = None if config.max_spans is None else config.max_spans - total
        batch_config = config.replace(max_spans=budget)
        piece = generate_batch(batch_config, hours, now_us=now_us, prices=prices)
        yield piece
        total += piece.generated_spans
        if config.max_spans is not None and total >= config.max_spans:
            return


def columnar_chunks(config: SimConfig) -> Iterator[SimChunk]:
    """The run as ``SimChunk`` objects of ``RawSpan`` (what the OTLP sink sends), each
    trace's spans together so a request never splits one."""
    now_us = int(time.time() * 1_000_000)
    for piece in columnar_pieces(config, now_us=now_us):
        table = piece.table.take(pc.sort_indices(piece.table, [("trace_id", "ascending")]))
        yield SimChunk(list(to_raw_spans(table)), piece.feedback, piece.outcomes, piece.truth)
