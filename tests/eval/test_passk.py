"""pass@k against direct combinatorial counts and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from rlvr.eval import bootstrap_ci, mean_pass_at_k, pass_at_k


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


# ---------------------------------------------------------------- more exhaustive checks


def test_matches_exact_fraction_for_all_small_cases():
    # every 0 <= c <= n <= 12 and 1 <= k <= n, against exact rational arithmetic
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert abs(pass_at_k(n, c, k) - float(exact)) < 1e-12, (n, c, k)


def test_matches_enumeration_for_every_small_case():
    # fraction of the k-subsets of n samples that contain a correct one; correct samples are placed
    # at scattered positions (pass@k depends only on how many there are)
    for n in range(1, 8):
        for c in range(n + 1):
            correct = set(random.Random(31 * n + c).sample(range(n), c))
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(any(i in correct for i in s) for s in subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit / len(subsets), abs=1e-12)


def test_hand_values():
    # n = 4, c = 1, k = 2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = .5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n = 5, c = 2, k = 2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = .7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n = 10, c = 3, k = 5: 1 - C(7,5)/C(10,5) = 1 - 21/252 = .916667
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12)


def test_stable_for_n_512_many_cases():
    n = 512
    for c in (0, 1, 2, 5, 17, 100, 255, 400, 511, 512):
        for k in (1, 2, 10, 64, 100, 256, 400, 511, 512):
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            got = pass_at_k(n, c, k)
            assert 0.0 <= got <= 1.0
            assert abs(got - float(exact)) < 1e-12, (c, k)


@pytest.mark.parametrize("n", [1, 5, 16, 512])
def test_pass_at_1_is_fraction_correct(n):
    for c in range(n + 1):
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_edges_and_monotonicity():
    n = 20
    for k in range(1, n + 1):
        assert pass_at_k(n, 0, k) == 0.0
        assert pass_at_k(n, n, k) == 1.0
        # more correct samples never lowers pass@k
        vals = [pass_at_k(n, c, k) for c in range(n + 1)]
        assert all(a <= b for a, b in itertools.pairwise(vals))
    for c in range(n + 1):
        # larger k never lowers pass@k
        vals = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(a <= b + 1e-15 for a, b in itertools.pairwise(vals))
    # n - c < k: every k-subset holds a correct sample
    assert pass_at_k(10, 8, 3) == 1.0


@pytest.mark.parametrize(
    ("n", "c", "k"), [(4, -1, 1), (4, 5, 1), (4, 1, 0), (4, 1, 5), (0, 0, 1), (4, 1, -2)]
)
def test_more_bad_inputs(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_is_per_problem():
    assert mean_pass_at_k([0, 1, 4], 4, 2) == [0.0, pytest.approx(0.5), 1.0]
    assert mean_pass_at_k([], 4, 1) == []


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_for_various_data():
    rng = np.random.default_rng(0)
    for size in (5, 30, 200):
        for vals in (
            rng.random(size),
            rng.integers(0, 2, size).astype(float),
            rng.normal(size=size),
        ):
            lo, hi = bootstrap_ci(vals, seed=1)
            assert lo <= float(np.mean(vals)) <= hi
            assert lo < hi or np.ptp(vals) == 0


def test_bootstrap_ci_narrows_with_more_data_and_widens_with_level():
    rng = np.random.default_rng(1)
    small, big = rng.random(50), rng.random(2000)
    w_small = np.subtract(*bootstrap_ci(small, seed=0)[::-1])
    w_big = np.subtract(*bootstrap_ci(big, seed=0)[::-1])
    assert w_big < w_small / 3  # roughly sqrt(40) narrower
    lo90, hi90 = bootstrap_ci(small, level=0.9, seed=0)
    lo99, hi99 = bootstrap_ci(small, level=0.99, seed=0)
    assert lo99 < lo90 and hi90 < hi99


def test_bootstrap_ci_deterministic_per_seed():
    vals = np.random.default_rng(2).random(40).tolist()
    assert bootstrap_ci(vals, seed=7) == bootstrap_ci(vals, seed=7)
    assert bootstrap_ci(vals, seed=7) != bootstrap_ci(vals, seed=8)


def test_bootstrap_ci_degenerate_inputs():
    assert bootstrap_ci([0.25] * 10) == (0.25, 0.25)
    lo, hi = bootstrap_ci([])
    assert math.isnan(lo) and math.isnan(hi)


# ---------------------------------------------------------------- against direct enumeration (n <= 8)


def test_pass_at_k_is_the_fraction_of_k_subsets_with_a_correct_sample_up_to_n_8():
    # every 0/1 sample vector of length n <= 8 (not only the count): pass@k is the fraction of the
    # C(n, k) subsets of k samples that hold at least one correct sample
    for n in range(1, 9):
        for bits in itertools.product([0, 1], repeat=n):
            c = sum(bits)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(bits, k))
                want = Fraction(sum(any(s) for s in subsets), len(subsets))
                assert pass_at_k(n, c, k) == pytest.approx(float(want), abs=1e-12)


def test_mean_pass_at_k_over_problems_equals_enumeration():
    problems = [[1, 0, 0, 1, 0, 0, 0, 0], [0] * 8, [1] * 8, [0, 0, 0, 0, 0, 0, 0, 1]]
    for k in (1, 2, 4, 8):
        want = np.mean(
            [np.mean([any(s) for s in itertools.combinations(samples, k)]) for samples in problems]
        )
        got = np.mean(mean_pass_at_k([sum(p) for p in problems], 8, k))
        assert got == pytest.approx(want, abs=1e-12)
    # hand value, k = 2: (1 - C(6,2)/C(8,2)) = 13/28; + 0 + 1 + (1 - C(7,2)/C(8,2)) = 1/4
    assert np.mean(mean_pass_at_k([2, 0, 8, 1], 8, 2)) == pytest.approx((13 / 28 + 1 + 1 / 4) / 4)


def test_bootstrap_ci_equals_a_hand_loop_with_the_same_seed():
    values = [0.0, 0.25, 1.0, 0.5, 0.0, 1.0, 0.75]
    resamples, level, seed = 300, 0.9, 11
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))  # the same single draw
    means = sorted(sum(values[j] for j in row) / len(values) for row in idx)

    def quantile(q: float) -> float:  # linear interpolation between order statistics
        pos = q * (len(means) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (pos - lo) * (means[hi] - means[lo])

    lo, hi = bootstrap_ci(values, level=level, resamples=resamples, seed=seed)
    assert lo == pytest.approx(quantile(0.05), abs=1e-12)
    assert hi == pytest.approx(quantile(0.95), abs=1e-12)
