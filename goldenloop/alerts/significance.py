"""Is a bad streak real or bad luck? One-sided tests the symptom rules use so a few
failures in a quiet hour do not page.

``binomial_tail(k, n, p)`` is P(X ≥ k) for X ~ Binomial(n, p): the chance of seeing at
least ``k`` failures in ``n`` events if the true failure rate were ``p`` (e.g. exactly
the SLO's error budget). ``rise_p_value`` compares a window's rate with a baseline's
through ``metrics.stats.proportion_test``, one-sided (rises only).
"""

from __future__ import annotations

import math

from goldenloop.metrics.stats import proportion_test

#: Beyond this many standard deviations above the mean the tail is treated as 0.
_FAR = 40.0


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k), X ~ Binomial(n, p), exactly (summing the shorter side in log space)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    if k > mean + _FAR * sd + _FAR:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def term(i: int) -> float:
        return math.exp(
            log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )

    if k <= mean:
        return max(0.0, min(1.0, 1.0 - math.fsum(term(i) for i in range(k))))
    # Above the mean the terms shrink with every step: stop once they no longer count.
    terms: list[float] = []
    for i in range(k, n + 1):
        value = term(i)
        terms.append(value)
        if value < 1e-17 * terms[0]:
            break
    return max(0.0, min(1.0, math.fsum(terms)))


def below_objective_p_value(good: float, valid: float, objective: float) -> float:
    """How likely this many failures are if the success rate really met the objective."""
    n, bad = int(round(valid)), int(round(valid - good))
    return binomial_tail(bad, n, 1.0 - objective)


def rise_p_value(bad: float, events: float, base_bad: float, base_events: float) -> float:
    """One-sided p-value that the window's rate is above the baseline's."""
    if events <= 0 or base_events <= 0:
        return 1.0
    result = proportion_test(bad, events, base_bad, base_events)
    return result.p_value / 2 if result.effect > 0 else 1.0 - result.p_value / 2
