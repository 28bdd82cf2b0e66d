"""The slice regression finder: statistics, a hand-made regression on both stores, an
injected single-locale regression in simulator traffic, and a clean day."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import span_batch
from metrics_sim import load_sim
from scipy import stats as sps

from goldenloop.metrics import TimeWindow
from goldenloop.metrics.dimensions import parse_dimensions
from goldenloop.metrics.regressions import RegressionQuery, find_regressions
from goldenloop.metrics.stats import (
    benjamini_hochberg,
    bin_of,
    change_point,
    mann_whitney_binned,
    proportion_test,
)
from goldenloop.model import Outcome
from goldenloop.sim import PromptRegression, SimConfig
from goldenloop.sim.config import Engine
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

START = datetime(2026, 6, 22, tzinfo=UTC)
NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


# -- statistics ---------------------------------------------------------------------------
def test_proportion_test_uses_z_for_large_counts_and_fisher_for_small() -> None:
    large = proportion_test(30, 100, 50, 100)
    z = (0.3 - 0.5) / math.sqrt(0.4 * 0.6 * (2 / 100))
    assert large.test == "z" and large.p_value == pytest.approx(2 * sps.norm.sf(abs(z)))
    small = proportion_test(3, 4, 1, 10)
    assert small.test == "fisher"
    assert small.p_value == pytest.approx(sps.fisher_exact([[3, 1], [1, 9]]).pvalue)
    assert large.effect == pytest.approx(
        2 * math.asin(math.sqrt(0.3)) - 2 * math.asin(math.sqrt(0.5))
    )


def test_binned_mann_whitney_matches_scipy_on_binned_values() -> None:
    rng = np.random.default_rng(1)
    window = rng.lognormal(7.3, 0.5, 400)
    baseline = rng.lognormal(7.0, 0.5, 900)

    def hist(values: np.ndarray) -> dict[int, float]:
        counts: dict[int, float] = {}
        for v in values:
            counts[bin_of(float(v))] = counts.get(bin_of(float(v)), 0.0) + 1
        return counts

    ours = mann_whitney_binned(hist(window), hist(baseline))
    binned_w = [bin_of(float(v)) for v in window]
    binned_b = [bin_of(float(v)) for v in baseline]
    theirs = sps.mannwhitneyu(binned_w, binned_b, alternative="two-sided", use_continuity=False,
                              method="asymptotic")  # fmt: skip
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-6)
    assert ours.effect > 0.3  # window is slower


def test_benjamini_hochberg_adjusts_in_input_order() -> None:
    # sorted: 0.01×4/1, 0.03×4/2, 0.04×4/3, 0.2×4/4, then running minimum from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.2]) == pytest.approx(
        [0.04, 0.16 / 3, 0.16 / 3, 0.2]
    )


def test_change_point_finds_where_a_rate_turned_bad() -> None:
    counts = [(1, 100), (2, 100), (1, 100), (30, 100), (28, 100)]
    assert change_point(counts, 0.015, worse_is_higher=True) == 3
    assert change_point([(1, 100)] * 4, 0.5, worse_is_higher=True) is None


# -- a hand-made regression on both stores -------------------------------------------------
def _sessions(
    store: Store, locale: str, count: int, failures: int, start: datetime, tag: str
) -> None:
    spans, outcomes = [], []
    for i in range(count):
        session = f"{tag}-{locale}-{i}"
        when = start + timedelta(seconds=17 * i)
        spans.append({"trace_id": f"t-{session}", "span_id": "r", "session_id": session,
                      "kind": "agent", "start_time": when, "locale": locale, "user_id": session,
                      "prompt_hash": "p9" if tag == "now" and locale == "de-DE" else "p1"})  # fmt: skip
        outcomes.append(Outcome(f"o-{session}", "demo", session, None, "refund_completed",
                                i >= failures, None, {}, when + timedelta(seconds=5)))  # fmt: skip
    store.insert_spans(span_batch(*spans))
    store.insert_outcomes(outcomes)


def _regression_data(store: Store) -> TimeWindow:
    window = TimeWindow(NOW - timedelta(hours=2), NOW)
    for locale in ("de-DE", "fr-FR", "en-US"):
        _sessions(store, locale, 80, 3, NOW - timedelta(days=3), "before")
    _sessions(store, "de-DE", 40, 20, window.start + timedelta(minutes=5), "now")
    _sessions(store, "fr-FR", 40, 1, window.start + timedelta(minutes=5), "now")
    _sessions(store, "en-US", 40, 2, window.start + timedelta(minutes=5), "now")
    _sessions(store, "en-US", 3, 3, window.start + timedelta(minutes=50), "tiny")  # 3 sessions
    return window


def test_a_single_locale_regression_is_the_top_finding(store: Store) -> None:
    window = _regression_data(store)
    report = find_regressions(store, RegressionQuery(
        window, window.before("7d"), ("outcome_success_rate", "task_success_rate"),
        tuple(parse_dimensions(["locale", "prompt_hash", "user_id"])),
    ))  # fmt: skip
    top = report.findings[0]
    assert top.slice in (("locale", "de-DE"), ("prompt_hash", "p9"))
    labels = {f.slice_label for f in report.findings}
    assert "locale=de-DE" in labels and "locale=fr-FR" not in labels
    de = next(f for f in report.findings if f.slice == ("locale", "de-DE"))
    assert de.window_value == pytest.approx(0.5) and de.baseline_value == pytest.approx(77 / 80)
    assert de.worse and de.q_value <= 0.05 and de.effect < -0.2
    assert ("prompt_hash", "p9", 1.0) in de.context  # all of its failures, new since baseline
    assert de.onset is not None and window.start <= de.onset < window.end
    # Three failed sessions (and single users) are too small a sample to alarm on.
    assert all(f.window_sessions >= 10 for f in report.findings)
    assert not any(f.slice and f.slice[0] == "user_id" for f in report.findings)
    data = report.to_dict()["findings"][
        labels and [f.slice for f in report.findings].index(de.slice)
    ]
    assert data["slice"] == {"dimension": "locale", "value": "de-DE"}
    assert data["test"] == "z" and data["baseline_scope"] == "slice"
    assert "de-DE" in data["summary"] and "prompt_hash=p9" in data["summary"]


# -- simulator traffic ---------------------------------------------------------------------
def _sim_store(
    path: Path, scenarios: tuple[PromptRegression, ...], engine: Engine = "sessions"
) -> DuckDBStore:
    store = DuckDBStore(path)
    store.migrate()
    load_sim(store, SimConfig(seed=3, start=START, days=1.5, sessions_per_day=2500, text="short",
                              scenarios=scenarios, engine=engine))  # fmt: skip
    return store


@pytest.fixture(scope="module", params=["sessions", "columnar"])
def regressed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DuckDBStore]:
    """A de-DE regression from day 2, 08:00, in traffic from either simulator engine."""
    regression = PromptRegression(
        name="de-refund-regression", start=START + timedelta(days=1, hours=8),
        end=START + timedelta(days=2), locales=("de-DE",), flag=None,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("sim") / "regressed.duckdb"
    store = _sim_store(path, (regression,), request.param)
    yield store
    store.close()


def test_finds_the_injected_single_locale_regression_in_simulated_traffic(
    regressed: DuckDBStore,
) -> None:
    window = TimeWindow.last("3h", end=START + timedelta(days=1, hours=11))
    report = find_regressions(regressed, RegressionQuery(window, window.before("7d")))
    assert report.findings, "the regression was not found"
    slices = [f.slice for f in report.findings]
    assert ("locale", "de-DE") in slices
    assert not any(s and s[0] == "locale" and s[1] != "de-DE" for s in slices)
    top = report.findings[0]
    named = {(d, v) for d, v, _ in top.context}
    assert top.slice == ("locale", "de-DE") or ("locale", "de-DE") in named, top.summary
    de = next(f for f in report.findings if f.slice == ("locale", "de-DE"))
    assert de.metric.name in ("task_success_rate", "outcome_success_rate", "feedback_success_rate",
                              "judge_pass_rate")  # fmt: skip
    assert de.onset is not None
    assert START + timedelta(days=1, hours=7) <= de.onset <= START + timedelta(days=1, hours=9)


def test_finds_the_default_eu_prompt_regression_named_by_the_manifest(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "default.duckdb")
    store.migrate()
    try:
        config = SimConfig(seed=3, start=START, days=1.25, sessions_per_day=2500, text="short")
        manifest = load_sim(store, config)
        truth = manifest.scenarios["eu-prompt-regression"]
        started = datetime.fromisoformat(truth.start)
        locales, prompt = set(truth.params["locales"]), truth.params["prompt_hash"]
        window = TimeWindow.last("3h", end=started + timedelta(hours=6))
        report = find_regressions(store, RegressionQuery(window, window.before("7d")))
        assert report.findings, "the regression was not found"
        for finding in report.findings[:3]:
            named = {(finding.slice or ("", ""))} | {(d, v) for d, v, _ in finding.context}
            mentions = {v for d, value in named if d == "locale" for v in value.split(" or ")}
            assert mentions & locales or ("prompt_hash", prompt) in named, finding.summary
            assert finding.onset is not None and finding.onset >= started - timedelta(hours=1)
    finally:
        store.close()


@pytest.mark.parametrize("engine", ["sessions", "columnar"])
def test_reports_nothing_on_a_clean_day(tmp_path: Path, engine: Engine) -> None:
    store = _sim_store(tmp_path / "clean.duckdb", (), engine)
    try:
        for hour in (9, 15, 21, 30):
            window = TimeWindow.last("3h", end=START + timedelta(hours=hour))
            report = find_regressions(store, RegressionQuery(window, window.before("7d")))
            assert report.findings == [], [f.summary for f in report.findings]
            assert report.tests_run > 100
    finally:
        store.close()
