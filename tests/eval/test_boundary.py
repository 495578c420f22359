"""Reasoning boundary and crossover: hand-computed cases."""

from __future__ import annotations

import pytest

from rlvr.eval import crossover_k, reasoning_boundary


def test_boundary_counts():
    base = [0, 3, 0, 1, 0]
    trained = [2, 0, 0, 8, 1]
    assert reasoning_boundary(base, trained) == {"gained": 2, "lost": 1, "kept": 1, "neither": 1}
    assert sum(reasoning_boundary(base, trained).values()) == len(base)
    with pytest.raises(ValueError, match="different problem sets"):
        reasoning_boundary([1], [1, 2])


def test_crossover():
    # trained ahead at small k, base catches up at k = 8 (the RLVR finding at large k)
    base = {1: 0.2, 2: 0.35, 4: 0.55, 8: 0.8, 16: 0.9}
    trained = {1: 0.4, 2: 0.5, 4: 0.6, 8: 0.7, 16: 0.75}
    assert crossover_k(base, trained) == 8
    assert crossover_k(base, {k: v + 0.5 for k, v in base.items()}) is None  # always ahead
    assert crossover_k(trained, base) is None  # the second model only pulls ahead at the last k
    assert crossover_k({1: 0.5, 2: 0.5}, {1: 0.5, 2: 0.6}) is None  # equal, then ahead: no crossing
