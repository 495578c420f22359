"""Statistics over seeds: Student-t intervals, Welch's t-test, Holm's adjustment (formulas in the
package docstring, :mod:`rlvr.compare`). Student's t distribution comes from ``scipy.stats``."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["WelchResult", "holm", "mean_ci", "t_cdf", "t_ppf", "t_sf2", "welch_test"]


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail P(|T| >= |t|) of Student's t with ``df`` degrees of freedom (scipy.stats.t)."""
    if df <= 0 or math.isnan(df) or math.isnan(t):
        return math.nan
    return float(2.0 * _t().sf(abs(t), df))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df > 0, need not be an integer)."""
    return float(_t().cdf(t, df))


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf needs 0 < q < 1, got {q}")
    return float(_t().ppf(q, df))


def _t() -> Any:
    """scipy's Student t distribution (imported on first use: scipy is slow to import)."""
    from scipy.stats import t

    return t


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``xs`` and its two-sided t-interval,
    m +- t_{(1+level)/2, n-1} s / sqrt(n). The interval is (nan, nan) for fewer than 2 values."""
    vals = [float(x) for x in xs if x is not None and not math.isnan(x)]
    if not vals:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, math.nan, math.nan
    half = t_ppf(0.5 + level / 2, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half


@dataclass
class WelchResult:
    """Welch's t-test of mean(a) - mean(b): the difference with its CI, t, df and the two-sided p."""

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> WelchResult:
    """Welch's unequal-variance t-test (formulas in the module docstring).

    Needs at least 2 values per side (else every field but ``diff`` is nan). When both sides have zero
    spread the test degenerates: p = 1 for equal means, p = 0 otherwise (t = +-inf).
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return WelchResult(diff, math.nan, math.nan, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return WelchResult(diff, diff, diff, t, math.nan, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    half = t_ppf(0.5 + level / 2, df) * se
    return WelchResult(diff, diff - half, diff + half, t, df, t_sf2(t, df))


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [math.nan] * len(ps)
    m, run = len(idx), 0.0
    for rank, i in enumerate(idx):
        run = max(run, min(1.0, (m - rank) * ps[i]))
        out[i] = run
    return out
