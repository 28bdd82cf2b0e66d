"""Everything a request handler needs, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from goldenloop.config import Settings
from goldenloop.ingest.normalize import IngestLimits
from goldenloop.ingest.writer import GroupCommitWriter
from goldenloop.pricing import PriceTable
from goldenloop.store.base import Store


@dataclass
class AppState:
    settings: Settings
    store: Store
    writer: GroupCommitWriter
    prices: PriceTable
    api_keys: dict[str, str] = field(default_factory=dict)

    @property
    def limits(self) -> IngestLimits:
        s = self.settings
        return IngestLimits(
            max_attribute_bytes=s.max_attribute_bytes,
            max_clock_skew_hours=s.max_clock_skew_hours,
            oldest_span_days=s.oldest_span_days,
        )
