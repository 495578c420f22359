"""Metrics over n samples per problem: unbiased pass@k, majority vote (maj@k), distinct final answers,
and bootstrap confidence intervals over problems."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "bootstrap_ci",
    "distinct_answers",
    "encode_answers",
    "majority_at_k",
    "mean_pass_at_k",
    "pass_at_k",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c are correct (Chen et al., 2021).

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

    The product form is exact and stable for n in the thousands (no huge binomials).
    """
    if not (0 <= c <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(correct: Sequence[int], n: int, k: int) -> list[float]:
    """pass@k per problem, given the number of correct samples out of n for each problem."""
    return [pass_at_k(n, int(c), k) for c in correct]


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over problems.

    With rng = default_rng(seed): draw ``resamples`` index vectors of len(values) with replacement
    (one call, shape [R, P]), take each resample's mean, and return the (1 - level) / 2 and
    1 - (1 - level) / 2 quantiles of those R means (linear interpolation). Empty input: (nan, nan).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def encode_answers(answers: Sequence[Sequence[str | None]]) -> np.ndarray:
    """Final answers of P problems x n samples -> integer ids [P, n].

    Within a problem, id j is the j-th distinct answer in order of first occurrence (so id 0 is the
    first sample's answer when it has one); a sample with no answer (None) gets -1. Answers are
    compared as strings: normalise them (e.g. collapse whitespace) before.
    """
    if not answers:
        return np.zeros((0, 0), dtype=np.int64)
    n = len(answers[0])
    ids = np.full((len(answers), n), -1, dtype=np.int64)  # [P, n]
    for p, row in enumerate(answers):
        if len(row) != n:
            raise ValueError(f"encode_answers: problem {p} has {len(row)} answers, problem 0 has {n}")
        seen: dict[str, int] = {}
        for j, a in enumerate(row):
            if a is not None:
                ids[p, j] = seen.setdefault(a, len(seen))
    return ids


def distinct_answers(ids: np.ndarray) -> np.ndarray:
    """Number of distinct final answers per problem, from answer ids [P, n] (-1 = no answer, not
    counted) -> [P]."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.zeros(ids.shape[0], dtype=np.int64)
    s = np.sort(ids, axis=1)  # [P, n]
    new = np.ones_like(s, dtype=bool)  # [P, n] True where a sorted row starts a new value
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s >= 0)).sum(axis=1)


def majority_at_k(ids: np.ndarray, correct: np.ndarray, k: int) -> np.ndarray:
    """maj@k per problem: majority vote over the final answers of the first k of n samples.

    For problem p, let count(a) be how many of samples 0..k-1 give answer a (samples with no answer,
    id -1, do not vote). The voted answer is argmax_a count(a), ties broken by first occurrence (the
    answer whose first sample comes earliest). The problem is solved by maj@k when the first sample
    carrying the voted answer is correct by the verifier (``correct[p, first(a*)]``); a problem
    where no sample among the first k has an answer is unsolved.

    ids: [P, n] answer ids (:func:`encode_answers`; any ids work, not only first-occurrence order),
    correct: [P, n] bool. Returns [P] bool.
    """
    ids, correct = np.asarray(ids), np.asarray(correct, dtype=bool)
    if ids.shape != correct.shape or ids.ndim != 2:
        raise ValueError(
            f"majority_at_k: ids {ids.shape} and correct {correct.shape} must be the same [P, n]"
        )
    p, n = ids.shape
    if not (1 <= k <= n):
        raise ValueError(f"majority_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if p == 0:
        return np.zeros(0, dtype=bool)
    width = int(ids.max()) + 1 if ids.max() >= 0 else 1  # number of answer ids
    sub = ids[:, :k]  # [P, k]
    rows = np.broadcast_to(np.arange(p)[:, None], sub.shape)  # [P, k]
    pos = np.broadcast_to(np.arange(k)[None, :], sub.shape)  # [P, k]
    has = sub >= 0  # [P, k]
    counts = np.zeros((p, width), dtype=np.int64)  # [P, A] votes per answer
    np.add.at(counts, (rows[has], sub[has]), 1)
    first = np.full((p, width), k, dtype=np.int64)  # [P, A] first sample with answer a (k = none)
    np.minimum.at(first, (rows[has], sub[has]), pos[has])
    # most votes first, then the earliest first occurrence: score = count * (k + 1) - first
    winner = (counts * (k + 1) - first).argmax(axis=1)  # [P]
    voted_pos = first[np.arange(p), winner]  # [P]
    voted = counts.max(axis=1) > 0  # [P] some sample had an answer
    return voted & correct[np.arange(p), np.minimum(voted_pos, n - 1)]
