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


def test_boundary_status_and_rows(tmp_path):
    import csv

    from rlvr.eval import boundary_rows, boundary_status, write_boundary_csv

    assert [boundary_status(b, t) for b, t in [(0, 2), (3, 0), (1, 8), (0, 0)]] == [
        "gained",
        "lost",
        "kept",
        "neither",
    ]
    rows = boundary_rows(["q0", "q1", "q2"], ["a0", "a1", "a2"], [0, 3, 1], {"rl": [2, 0, 1]}, n=8)
    assert rows[1] == {
        "problem": 1,
        "question": "q1",
        "answer": "a1",
        "n": 8,
        "base_correct": 3,
        "rl_correct": 0,
        "rl_status": "lost",
    }
    assert [r["rl_status"] for r in rows] == ["gained", "lost", "kept"]
    path = write_boundary_csv(tmp_path / "sub" / "b.csv", rows)
    back = list(csv.DictReader(path.open()))
    assert back == [{k: str(v) for k, v in r.items()} for r in rows]
    with pytest.raises(ValueError, match="model 'rl' was evaluated on 2 problems"):
        boundary_rows(["q"] * 3, ["a"] * 3, [0, 1, 2], {"rl": [1, 2]}, n=4)


def test_crossover_hand_cases():
    # trained behind from the start: never "crosses" (it was never ahead)
    assert crossover_k({1: 0.5, 2: 0.7}, {1: 0.4, 2: 0.6}) is None
    # ahead, level (a tie counts as the base catching up), ahead again: the first catch-up
    assert crossover_k({1: 0.1, 2: 0.5, 4: 0.6}, {1: 0.3, 2: 0.5, 4: 0.9}) == 2
    # only the k measured for both count
    assert crossover_k({1: 0.1, 4: 0.9}, {1: 0.3, 2: 0.4, 4: 0.5}) == 4
