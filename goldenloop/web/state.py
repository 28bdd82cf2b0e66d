"""Everything a request handler needs, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from goldenloop.config import Settings
from goldenloop.ingest.normalize import IngestLimits
from goldenloop.ingest.pool import DecodePool
from goldenloop.ingest.request import DecodeOptions
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
    decoder: DecodePool = field(init=False)

    def __post_init__(self) -> None:
        options = DecodeOptions(
            default_project=self.settings.default_project,
            prices=self.prices,
            limits=self.limits,
            max_request_bytes=self.settings.max_request_bytes,
        )
        self.decoder = DecodePool(options, self.settings.decode_workers)

    @property
    def limits(self) -> IngestLimits:
        s = self.settings
        return IngestLimits(
            max_attribute_bytes=s.max_attribute_bytes,
            max_clock_skew_hours=s.max_clock_skew_hours,
            oldest_span_days=s.oldest_span_days,
        )
