"""``goldenloop.metrics.stats`` computes its tests without scipy (to keep scipy out of the
server's memory); these check each one against scipy, which stays a test dependency."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from goldenloop.metrics.stats import (
    benjamini_hochberg,
    fisher_exact_two_sided,
    mann_whitney_binned,
    two_sided_normal_p,
)

SMALL_TABLES = [
    (a, b, c, d) for a, b, c, d in itertools.product(range(6), range(6), range(4), (0, 3, 9))
]
LARGE_TABLES = [
    (3, 99_997, 12, 899_988),  # rare failures in a big baseline
    (0, 5_000, 7, 20_000),
    (40, 60, 2_000, 8_000),
    (5, 5, 5, 5),  # mirror-image tables tie exactly
    (250, 250, 250, 250),
    (1, 10_000, 0, 10_000),
]


@pytest.mark.parametrize("table", SMALL_TABLES + LARGE_TABLES)
def test_fisher_exact_matches_scipy(table: tuple[int, int, int, int]) -> None:
    a, b, c, d = table
    expected = sps.fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue
    assert fisher_exact_two_sided(a, b, c, d) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("z", [0.0, 0.3, -1.0, 1.959963984540054, -3.7, 8.5, 38.0])
def test_two_sided_normal_p_matches_scipy(z: float) -> None:
    assert two_sided_normal_p(z) == pytest.approx(2 * sps.norm.sf(abs(z)), rel=1e-12)


def test_mann_whitney_effect_uses_the_normal_quantile() -> None:
    # CL = P(window > baseline) + ½·P(tie) = (2·2 + ½·(1·1)) / (3·2) = 0.75
    result = mann_whitney_binned({1: 1.0, 5: 2.0}, {1: 1.0, 3: 1.0})
    assert result.effect == pytest.approx(np.sqrt(2) * sps.norm.ppf(0.75), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_benjamini_hochberg_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p_values = [float(p) for p in rng.beta(0.3, 2.0, 200)] + [0.5, 0.5, 1.0, 0.0]
    expected = sps.false_discovery_control(np.asarray(p_values), method="bh")
    assert benjamini_hochberg(p_values) == pytest.approx(list(expected), rel=1e-12)


def test_benjamini_hochberg_rejects_values_that_are_not_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.2, 1.5])
