"""Significance tests and effect sizes the regression finder uses.

* Rates: a two-proportion z-test (pooled), or Fisher's exact test when an expected
  cell count is below 5. Effect size: Cohen's h.
* Distributions (latency, cost): the Mann–Whitney U test computed from histograms on
  log-spaced bins (values in one bin count as ties, with the tie correction), so the
  store only returns counts per bin. Effect size: the common-language effect
  ``P(window > baseline)`` turned into a Cohen's-d equivalent, ``√2·Φ⁻¹(CL)``, which is
  on the same scale as h so findings of both kinds rank together.
* Many slices are tested at once: Benjamini–Hochberg keeps the false discovery rate at
  ``alpha``.

Everything here is plain Python (``math``, ``statistics``) plus numpy, not scipy: the
overview page and the alert rules call these on every load or tick, and
``scipy.stats`` alone would add ~60 MB to the server's resident memory. The tests
check each function against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Log-spaced histogram bins: ``floor(ln(x) * BINS_PER_E)``; about 5% wide.
BINS_PER_E = 20
#: Bin number for values ≤ 0 (below every real bin).
ZERO_BIN = -1_000_000


@dataclass(frozen=True)
class TestResult:
    p_value: float
    effect: float
    test: str


def proportion_test(x1: float, n1: float, x0: float, n0: float) -> TestResult:
    """Compare x1/n1 (window) with x0/n0 (baseline). Effect: Cohen's h (window − baseline)."""
    if n1 <= 0 or n0 <= 0:
        raise ValueError("both samples need at least one observation")
    p1, p0 = x1 / n1, x0 / n0
    effect = 2 * math.asin(math.sqrt(min(max(p1, 0.0), 1.0))) - 2 * math.asin(
        math.sqrt(min(max(p0, 0.0), 1.0))
    )
    pooled = (x1 + x0) / (n1 + n0)
    expected = min(n1 * pooled, n1 * (1 - pooled), n0 * pooled, n0 * (1 - pooled))
    if expected < 5:
        p_value = fisher_exact_two_sided(round(x1), round(n1 - x1), round(x0), round(n0 - x0))
        return TestResult(p_value, effect, "fisher")
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se == 0:
        return TestResult(1.0, effect, "z")
    z = (p1 - p0) / se
    return TestResult(two_sided_normal_p(z), effect, "z")


def two_sided_normal_p(z: float) -> float:
    """P(|Z| ≥ |z|) for a standard normal Z: ``2·Φ(−|z|)``, which is ``erfc(|z|/√2)``."""
    return math.erfc(abs(z) / math.sqrt(2))


#: Tables whose probability is within this relative distance of the observed one count
#: as equally extreme (mirror-image tables tie exactly; rounding must not split them).
_FISHER_TIE = 1e-7


def fisher_exact_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Fisher's exact test on the 2×2 table ``[[a, b], [c, d]]``, two-sided: the total
    probability, with all margins fixed, of the tables no more likely than the observed.

    The hypergeometric probabilities are built from the ratio of neighbouring terms in
    log space (relative to the first), so no factorials of large counts are formed."""
    row1, row2, col1 = a + b, c + d, a + c
    low, high = max(0, col1 - row2), min(col1, row1)
    if low == high:
        return 1.0
    log_weights = [0.0]
    for x in range(low, high):
        ratio = math.log((row1 - x) * (col1 - x)) - math.log((x + 1) * (row2 - col1 + x + 1))
        log_weights.append(log_weights[-1] + ratio)
    peak = max(log_weights)
    weights = [math.exp(w - peak) for w in log_weights]
    observed = weights[a - low] * (1 + _FISHER_TIE)
    as_extreme = math.fsum(w for w in weights if w <= observed)
    return min(1.0, as_extreme / math.fsum(weights))


def bin_of(value: float) -> int:
    """The histogram bin of one value (mirrors ``histogram_bin_sql``)."""
    return ZERO_BIN if value <= 0 else math.floor(math.log(value) * BINS_PER_E)


def histogram_bin_sql(expr: str) -> str:
    return f"CASE WHEN ({expr}) <= 0 THEN {ZERO_BIN} ELSE CAST(floor(ln({expr}) * {BINS_PER_E}) AS BIGINT) END"


def bin_value(bin_number: int) -> float:
    """A representative value (geometric middle) of a bin."""
    if bin_number == ZERO_BIN:
        return 0.0
    return math.exp((bin_number + 0.5) / BINS_PER_E)


def mann_whitney_binned(window: Mapping[int, float], baseline: Mapping[int, float]) -> TestResult:
    """Two-sided Mann–Whitney U (normal approximation, tie-corrected) from bin counts.

    Effect: √2·Φ⁻¹(CL) with CL = U / (n1·n0) = P(window > baseline) + ½·P(tie)."""
    bins = sorted(set(window) | set(baseline))
    a = np.array([float(window.get(b, 0)) for b in bins])
    c = np.array([float(baseline.get(b, 0)) for b in bins])
    n1, n0 = a.sum(), c.sum()
    if n1 <= 0 or n0 <= 0:
        raise ValueError("both samples need at least one observation")
    below = np.concatenate(([0.0], np.cumsum(c)[:-1]))  # baseline values in lower bins
    u = float((a * (below + 0.5 * c)).sum())
    n = n1 + n0
    ties = a + c
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n0 / 12.0 * ((n + 1) - tie_term)
    cl = u / (n1 * n0)
    effect = math.sqrt(2) * NormalDist().inv_cdf(min(max(cl, 1e-9), 1 - 1e-9))
    if variance <= 0:
        return TestResult(1.0, effect, "mann-whitney")
    z = (u - n1 * n0 / 2.0) / math.sqrt(variance)
    return TestResult(two_sided_normal_p(z), effect, "mann-whitney")


def histogram_quantile(counts: Mapping[int, float], q: float) -> float | None:
    """The ``q`` quantile of a binned sample (a bin's geometric middle)."""
    total = sum(counts.values())
    if total <= 0:
        return None
    target = q * total
    running = 0.0
    for bin_number in sorted(counts):
        running += counts[bin_number]
        if running >= target:
            return bin_value(bin_number)
    return bin_value(max(counts))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order: ``p·m/rank``, then the
    running minimum from the largest p down, capped at 1."""
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError("p-values must lie in [0, 1]")
    count = len(p_values)
    adjusted = [0.0] * count
    running = 1.0
    by_rank = sorted(range(count), key=lambda i: p_values[i])
    for rank in range(count, 0, -1):
        index = by_rank[rank - 1]
        running = min(running, p_values[index] * count / rank)
        adjusted[index] = running
    return adjusted


def change_point(
    counts: Sequence[tuple[float, float]], baseline_rate: float, worse_is_higher: bool
) -> int | None:
    """Index of the bucket from which a rate most likely moved away from
    ``baseline_rate`` in the bad direction (binomial likelihood ratio of "rate after
    the point" against the baseline); None when no suffix is worse."""
    best, best_llr = None, 0.0
    p0 = min(max(baseline_rate, 1e-9), 1 - 1e-9)
    for start in range(len(counts)):
        if counts[start][1] <= 0:
            continue  # a change starts where there is data
        x = sum(c[0] for c in counts[start:])
        n = sum(c[1] for c in counts[start:])
        if n <= 0:
            continue
        p = min(max(x / n, 1e-9), 1 - 1e-9)
        if (p > p0) != worse_is_higher:
            continue
        llr = x * math.log(p / p0) + (n - x) * math.log((1 - p) / (1 - p0))
        if llr > best_llr:
            best, best_llr = start, llr
    return best
