"""Bulk loading with worker processes: they generate, normalize and convert to Arrow
(``workers``); the loading process only inserts.

Why the stored result is the same for any number of workers: every hour of a run has
its own RNG and nothing else crosses hours (see ``generate``), so the run is cut into
*parts*, runs of whole consecutive hours of similar estimated size, and part ``i`` goes
to worker ``i % workers``. The parent reads the pieces back part by part, in order, so
it stores the very sessions, ids and text the in-process path stores, in the same time
order, and merges the same ground truth.

``max_spans``: the in-process run stops after the session at which the running total
reaches ``max_spans``. Workers generate without the limit; when a piece would reach
it, the workers are stopped and the parent regenerates that part with the remaining
budget, which cuts at that same session (a part is a few thousand spans, so this costs
a fraction of a second).

Memory stays bounded whatever the size of the run: each worker has at most
``_LOOKAHEAD`` pieces waiting in this process, one in its pipe and one being made, and
the writer holds at most three groups of about ``chunk_spans`` spans (one filling, one
queued, one being inserted). Pieces are parts of about ``_PART_SPANS`` spans; an hour with more
spans than that is a part of its own, cut into pieces of up to ``chunk_spans``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Final

from goldenloop.pricing import PriceTable
from goldenloop.sim.config import SimConfig
from goldenloop.sim.generate import hourly_sessions
from goldenloop.sim.pieces import LoadPiece, part_pieces
from goldenloop.sim.workers import WorkerJob, Workers

#: Measured average spans per session with the default apps; sizes parts and runs.
SPANS_PER_SESSION: Final = 9.5
#: With ``workers=None``, runs estimated below this many spans stay in-process. Starting
#: a worker (a fresh interpreter importing goldenloop) costs ~0.4 s of CPU and the
#: first piece arrives ~0.8 s after the start; measured on 2 cores, two workers lost to
#: in-process at 25,000 spans, won by ~25% at 50,000 when both cores were free (and
#: lost when other work held one), won by ~25% at 100,000 and ~45% at 1M.
IN_PROCESS_MAX_SPANS: Final = 50_000
_MAX_AUTO_WORKERS: Final = 4
#: Parts are about this many spans (or ``chunk_spans`` if smaller): small enough that
#: the pipeline fills and drains quickly, the regeneration at ``max_spans`` is short and
#: pieces waiting in the lookahead take little memory (~20 MB with full text); big
#: enough that a part's fixed costs (a generator, a message) stay under 1%. The writer
#: groups parts into inserts of ``chunk_spans`` (see ``sinks``).
_PART_SPANS: Final = 5_000
#: Pieces each worker may have ready beyond the one the writer is waiting for, so a
#: worker the OS deschedules for a moment does not stall the others.
_LOOKAHEAD: Final = 3


# -- planning ----------------------------------------------------------------------------
def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def estimated_spans(config: SimConfig) -> int:
    estimate = int(sum(hourly_sessions(config)) * SPANS_PER_SESSION)
    return estimate if config.max_spans is None else min(estimate, config.max_spans)


def auto_workers(config: SimConfig) -> int:
    """Worker processes for ``write_to_store(workers=None)``: none (in-process) for a
    run estimated under ``IN_PROCESS_MAX_SPANS`` spans or on a single core, otherwise
    one per usable core, at most four.

    The columnar engine always runs in-process: it makes a span in ~8 µs, about what
    DuckDB takes to store it on the writer thread, so the two threads already keep two
    cores busy; shipping pieces from worker processes only adds the pipe (measured at
    300k spans on 2 cores: ~90k spans/s in-process, 57k with one worker, 70-80k with
    two)."""
    if config.engine == "columnar":
        return 0
    cores = _usable_cores()
    if cores < 2 or estimated_spans(config) < IN_PROCESS_MAX_SPANS:
        return 0
    return min(cores, _MAX_AUTO_WORKERS)


def plan_parts(config: SimConfig) -> list[range]:
    """Cut the window into runs of whole hours of about ``_PART_SPANS`` estimated spans
    (the columnar engine's batches: it needs big ones to be cheap per span)."""
    if config.engine == "columnar":
        from goldenloop.sim.columnar import plan_batches

        return plan_batches(config)
    target = min(config.chunk_spans, _PART_SPANS)
    hourly = hourly_sessions(config)
    parts: list[range] = []
    start, size = 0, 0.0
    for hour, sessions in enumerate(hourly):
        spans = sessions * SPANS_PER_SESSION
        if hour > start and size + spans > target:
            parts.append(range(start, hour))
            start, size = hour, 0.0
        size += spans
    parts.append(range(start, len(hourly)))
    return parts


# -- the parent side ---------------------------------------------------------------------
def pieces_from_workers(
    config: SimConfig, workers: int, *, prices: PriceTable, now_us: int, default_project: str
) -> Generator[LoadPiece, None, None]:
    """The run's pieces in time order, made by ``workers`` processes. Close the
    iterator (or exhaust it) to end the workers."""
    if workers < 1:
        raise ValueError("pieces_from_workers needs at least one worker")
    parts = plan_parts(config)
    workers = min(workers, len(parts))
    unlimited = config.replace(max_spans=None)
    pool = Workers(
        [
            WorkerJob(unlimited, parts[i::workers], prices, now_us, default_project)
            for i in range(workers)
        ],
        lookahead=_LOOKAHEAD,
    )
    finished = False
    try:
        total = 0
        for index, part in enumerate(parts):
            before_part, piece_index = total, 0
            while (piece := pool.receive(index % workers)) is not None:
                if (
                    config.max_spans is not None
                    and total + piece.generated_spans >= config.max_spans
                ):
                    pool.stop()
                    yield _cut_piece(
                        config.replace(max_spans=config.max_spans - before_part),
                        part,
                        piece_index,
                        prices=prices,
                        now_us=now_us,
                        default_project=default_project,
                    )
                    return
                total += piece.generated_spans
                piece_index += 1
                yield piece
        finished = True
    finally:
        if finished:
            pool.join()
        else:
            pool.stop()


def _cut_piece(
    budget: SimConfig,
    part: range,
    piece_index: int,
    *,
    prices: PriceTable,
    now_us: int,
    default_project: str,
) -> LoadPiece:
    """Piece ``piece_index`` of ``part`` generated with the part's remaining span budget:
    the earlier pieces come out the same (the budget is not reached in them) and this
    one ends at the session where the whole run reaches ``max_spans``."""
    pieces = part_pieces(
        budget, part, prices=prices, now_us=now_us, default_project=default_project
    )
    for index, piece in enumerate(pieces):
        if index == piece_index:
            return piece
    raise AssertionError(f"part {part} regenerated with fewer than {piece_index + 1} pieces")
