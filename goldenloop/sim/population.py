"""Who uses the simulated apps and when: volume per hour, app and locale mix, user pool,
tiers. Both engines (the per-session ``generate`` and the ``columnar`` bulk engine)
draw sessions from this one description, so their traffic has the same shape.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any, Final

from goldenloop.sim.config import APP_SHARE, DIURNAL, LOCALES, TIERS, WEEKLY, SimConfig
from goldenloop.sim.scenarios import to_us
from goldenloop.sim.spans import normal

HOUR_US: Final = 3_600_000_000
SERVICE_VERSIONS: Final = {"refund-assistant": "3.14.2", "support-search": "1.9.0"}


def resource(app: str, instrumentation: str) -> dict[str, Any]:
    """The OTel resource of an app's spans (``instrumentation``: otel-genai or
    openinference)."""
    return {
        "service.name": app,
        "service.version": SERVICE_VERSIONS.get(app, "0.8.1"),
        "deployment.environment.name": "production",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "goldenloop.instrumentation": instrumentation,
    }


class Population:
    """The per-config tables: ``app_cum`` (cumulative app shares), ``locale_cum[utc_hour]``
    (cumulative locale shares by UTC hour: each locale follows its own local day),
    ``pool`` (users per locale), ``tier_cut`` (tier thresholds per mille)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.start_us = to_us(config.start)
        self.end_us = to_us(config.end)
        self.hours = math.ceil((self.end_us - self.start_us) / HOUR_US)
        self.apps = config.apps
        shares = [APP_SHARE[a] for a in config.apps]
        self.app_cum = [sum(shares[: i + 1]) / sum(shares) for i in range(len(shares))]
        self.locale_cum: list[list[float]] = []
        totals = []
        for hour in range(24):
            weights = [loc.share * DIURNAL[(hour + loc.utc_offset) % 24] for loc in LOCALES]
            total = sum(weights)
            totals.append(total)
            self.locale_cum.append([sum(weights[: i + 1]) / total for i in range(len(weights))])
        mean_total = sum(totals) / 24
        mean_week = sum(WEEKLY) / 7
        self.hour_rate = [
            [config.sessions_per_day / 24 * t / mean_total * w / mean_week for t in totals]
            for w in WEEKLY
        ]
        expected = config.sessions_per_day * config.days
        self.pool = [max(5, int(expected * loc.share / 2.5)) for loc in LOCALES]
        tier_cum = [sum(s for _, s in TIERS[: i + 1]) for i in range(len(TIERS))]
        self.tier_cut = [int(c * 1000) for c in tier_cum]

    def hour_start(self, hour: int) -> int:
        return self.start_us + hour * HOUR_US

    def hour_length(self, hour: int) -> int:
        return min(HOUR_US, self.end_us - self.hour_start(hour))

    def hour_sessions(self, hour: int) -> tuple[random.Random, datetime, int]:
        """The hour's RNG (after the draws that set its volume), its UTC start and how
        many sessions start in it."""
        rng = random.Random(self.config.seed * 1_000_003 + hour)
        hour_start = self.hour_start(hour)
        when = datetime.fromtimestamp(hour_start / 1e6, UTC)
        expected = self.hour_rate[when.weekday()][when.hour] * self.hour_length(hour) / HOUR_US
        expected *= math.exp(0.08 * normal(rng))
        return rng, when, int(expected) + (rng.random() < expected - int(expected))

    def user_mix(self, key: int) -> int:
        """A user's stable 64-bit identity from their pool key (locale and rank)."""
        return (key * 0x9E3779B97F4A7C15 + self.config.seed * 0x632BE59BD9B4E019) & (
            0xFFFFFFFFFFFFFFFF
        )
