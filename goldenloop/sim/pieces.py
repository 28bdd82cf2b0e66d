"""A chunk of simulated traffic ready to load: spans as stored, in an Arrow table.

Both bulk paths (in-process and worker processes) get their pieces from
``part_pieces``, so the writer sees the same rows whichever made them. The
per-session engine's spans are normalized as the server would; the columnar engine
writes the stored rows directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.ingest.normalize import normalize_spans
from goldenloop.model import Feedback, Outcome
from goldenloop.pricing import PriceTable
from goldenloop.sim.config import SimConfig
from goldenloop.sim.generate import SimChunk, simulate
from goldenloop.sim.manifest import ChunkTruth


@dataclass
class LoadPiece:
    """A chunk's spans as stored (``table``) and the rest of the chunk."""

    table: pa.Table
    #: RawSpans generated, which the manifest counts.
    generated_spans: int
    feedback: list[Feedback]
    outcomes: list[Outcome]
    truth: ChunkTruth


def load_piece(
    chunk: SimChunk, *, prices: PriceTable, now_us: int, default_project: str
) -> LoadPiece:
    """Normalize a chunk's spans as the server would; the raw spans are dropped."""
    batch = normalize_spans(
        chunk.spans, default_project=default_project, prices=prices, now_us=now_us
    )
    generated = len(chunk.spans)
    del chunk.spans[:]
    return LoadPiece(
        span_batch_to_arrow(batch), generated, chunk.feedback, chunk.outcomes, chunk.truth
    )


def part_pieces(
    config: SimConfig, hours: range, *, prices: PriceTable, now_us: int, default_project: str
) -> Iterator[LoadPiece]:
    """The pieces of the sessions that start in ``hours``; ``config.max_spans`` counts
    from the first of them."""
    if config.engine == "columnar":
        from goldenloop.sim.columnar import generate_batch

        yield generate_batch(config, hours, now_us=now_us, prices=prices)
        return
    for chunk in simulate(config, hours):
        yield load_piece(chunk, prices=prices, now_us=now_us, default_project=default_project)
