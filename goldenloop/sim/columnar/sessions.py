"""The sessions of a run of hours, drawn as arrays: when, which app, who, which build.

Each hour draws from its own generators (its volume from ``Population.hour_sessions``,
the rest from a numpy generator seeded by (seed, hour)), so an hour's sessions do not
depend on which other hours are generated with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from goldenloop.sim import knowledge as kb
from goldenloop.sim.columnar.blocks import SessionColumns, hex_ids, json_text, strings
from goldenloop.sim.config import (
    ALL_APPS,
    BILLING_APP,
    LOCALES,
    REFUND_APP,
    SEARCH_APP,
    TIERS,
)
from goldenloop.sim.generate import CURRENCY
from goldenloop.sim.population import Population, resource
from goldenloop.sim.text import COUNTRIES, PLANS, PRODUCTS

REFUND: Final = ALL_APPS.index(REFUND_APP)
SEARCH: Final = ALL_APPS.index(SEARCH_APP)
BILLING: Final = ALL_APPS.index(BILLING_APP)
#: Feature-flag variants a session can have, by app: (app, flags).
FLAG_SETS: Final[tuple[tuple[int, dict[str, str]], ...]] = (
    (REFUND, {"eu_banner": "off", "new_retriever": "on"}),
    (REFUND, {"eu_banner": "on", "new_retriever": "on"}),
    (SEARCH, {"new_retriever": "off"}),
    (SEARCH, {"new_retriever": "on"}),
    (BILLING, {"annual_discount": "off"}),
    (BILLING, {"annual_discount": "on"}),
)
#: The flags as apps send them (``goldenloop.feature_flags``) and as stored.
FLAGS_SENT: Final = tuple(
    "{" + ", ".join(f'"{k}": "{v}"' for k, v in flags.items()) + "}" for _, flags in FLAG_SETS
)
FLAGS_STORED: Final = tuple(json_text(flags) for _, flags in FLAG_SETS)
#: The sent flags as a JSON string value (as they appear inside span attributes).
FLAGS_SENT_JSON: Final = tuple(json_text(flags) for flags in FLAGS_SENT)
INDEXES: Final = (kb.OLD_INDEX, kb.CURRENT_INDEX)
_EU: Final = np.array([loc.eu for loc in LOCALES])
_USER_MIX_A: Final = np.uint64(0x9E3779B97F4A7C15)
_DAY_US: Final = 86_400_000_000
_CURRENCIES: Final = tuple(CURRENCY.get(loc.code, "EUR") for loc in LOCALES)


@dataclass
class Sessions:
    """Arrays over the sessions of a run of hours, in start order."""

    t0: np.ndarray[Any, np.dtype[np.int64]]
    app: np.ndarray[Any, np.dtype[np.int64]]
    locale: np.ndarray[Any, np.dtype[np.int64]]
    tier: np.ndarray[Any, np.dtype[np.int64]]
    flag_set: np.ndarray[Any, np.dtype[np.int64]]
    openinference: np.ndarray[Any, np.dtype[np.bool_]]
    index: np.ndarray[Any, np.dtype[np.int64]]
    ids: list[str]
    user_ids: list[str]
    slots: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.t0)

    def columns(self) -> SessionColumns:
        """What every span of a session carries, for ``build_table``."""
        resources = [
            json_text(resource(app, instrumentation))
            for app in ALL_APPS
            for instrumentation in ("otel-genai", "openinference")
        ]
        return SessionColumns(
            project=strings(ALL_APPS).take(pa.array(self.app)),
            session_id=pa.array(self.ids, pa.string()),
            user_id=pa.array(self.user_ids, pa.string()),
            customer_tier=strings([t for t, _ in TIERS]).take(pa.array(self.tier)),
            locale=strings([loc.code for loc in LOCALES]).take(pa.array(self.locale)),
            feature_flags=strings(FLAGS_STORED).take(pa.array(self.flag_set)),
            index_version=strings(INDEXES).take(pa.array(self.index)),
            resource=strings(resources).take(
                pa.array(self.app * 2 + self.openinference.astype(np.int64))
            ),
        )


def draw_sessions(population: Population, hours: range) -> Sessions:
    """The sessions that start in ``hours``, in start order."""
    parts = [_hour(population, hour) for hour in hours]
    parts = [p for p in parts if len(p)]
    if not parts:
        return _hour(population, hours.start, empty=True)
    arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAY_FIELDS}
    return Sessions(
        **arrays,
        ids=[i for p in parts for i in p.ids],
        user_ids=[u for p in parts for u in p.user_ids],
        slots=[s for p in parts for s in p.slots],
    )


_ARRAY_FIELDS: Final = ("t0", "app", "locale", "tier", "flag_set", "openinference", "index")


def _hour(population: Population, hour: int, *, empty: bool = False) -> Sessions:
    config = population.config
    _, when, count = population.hour_sessions(hour)
    if empty:
        count = 0
    g = np.random.default_rng([config.seed, hour, 0xC0])
    start = population.hour_start(hour)
    t0 = np.sort(start + (g.random(count) * population.hour_length(hour)).astype(np.int64))
    app_ids = np.array([ALL_APPS.index(a) for a in population.apps])
    app = app_ids[np.searchsorted(population.app_cum, g.random(count))]
    locale = np.minimum(
        np.searchsorted(population.locale_cum[when.hour], g.random(count)), len(LOCALES) - 1
    )
    pool = np.array(population.pool)[locale]
    key = (locale * 10_000_000 + (pool * g.random(count) ** 1.7).astype(np.int64)).astype(np.uint64)
    mixed = key * _USER_MIX_A + np.uint64(population.user_mix(0))
    tier = np.minimum(
        np.searchsorted(population.tier_cut, (mixed >> np.uint64(8)) % np.uint64(1000), "right"),
        len(TIERS) - 1,
    )
    flag_draw = g.random(count)
    flag_set = np.select(
        [app == REFUND, app == SEARCH],
        [_EU[locale] & (flag_draw < 0.5), 2 + (flag_draw < 0.3)],
        4 + (flag_draw < 0.5),
    ).astype(np.int64)
    openinference = (app == SEARCH) & (g.random(count) < config.openinference_share)
    index = np.where(flag_set == 2, 0, 1)
    ids = hex_ids(g, count, 8, "sess_").to_pylist()
    user_ids = [f"u_{m:010x}" for m in (mixed >> np.uint64(24)).tolist()]
    return Sessions(
        t0=t0,
        app=app.astype(np.int64),
        locale=locale.astype(np.int64),
        tier=tier.astype(np.int64),
        flag_set=flag_set,
        openinference=openinference,
        index=index.astype(np.int64),
        ids=ids,
        user_ids=user_ids,
        slots=_slots(g, t0, locale),
    )


def _slots(
    g: np.random.Generator,
    t0: np.ndarray[Any, np.dtype[np.int64]],
    locale: np.ndarray[Any, np.dtype[np.int64]],
) -> list[dict[str, str]]:
    """What the users' messages and the apps' answers fill in: order, product, amount…"""
    n = len(t0)
    orders = g.integers(0, 1_000_000, n).tolist()
    products = g.integers(0, len(PRODUCTS), n).tolist()
    countries = g.integers(0, len(COUNTRIES), n).tolist()
    plans = g.integers(0, len(PLANS), n).tolist()
    amounts = (9 + g.random(n) * 390).tolist()
    days = t0 // _DAY_US - (1 + g.integers(0, 20, n))
    delivered = days.astype("datetime64[D]").astype(str).tolist()
    currencies = [_CURRENCIES[i] for i in locale.tolist()]
    out = []
    for order, product, country, plan, value, currency, day in zip(
        orders, products, countries, plans, amounts, currencies, delivered, strict=True
    ):
        amount = f"{value:.2f}"
        out.append(
            {
                "order": f"ORD-{order:06d}",
                "product": PRODUCTS[product],
                "country": COUNTRIES[country],
                "plan": PLANS[plan],
                "amount_value": amount,
                "amount": amount + " " + currency,
                "currency": currency,
                "delivered": day,
            }
        )
    return out
