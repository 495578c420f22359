"""pass@k against direct combinatorial counts and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from rlvr.eval import bootstrap_ci, pass_at_k


def test_matches_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_matches_enumeration_of_subsets():
    n, c = 7, 3
    samples = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        hit = sum(any(samples[i] for i in s) for s in subsets)
        assert pass_at_k(n, c, k) == pytest.approx(hit / len(subsets), abs=1e-12)


def test_stable_for_large_n():
    n = 512
    for c, k in [(1, 1), (3, 64), (40, 256), (200, 500)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert abs(pass_at_k(n, c, k) - float(exact)) < 1e-12
    assert pass_at_k(256, 13, 1) == pytest.approx(13 / 256)


def test_bad_inputs():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)


def test_bootstrap_ci():
    vals = [0.0, 1.0] * 50
    lo, hi = bootstrap_ci(vals, seed=0)
    assert lo < 0.5 < hi
    lo2, hi2 = bootstrap_ci(vals * 10, seed=0)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(vals, seed=3) == bootstrap_ci(vals, seed=3)
