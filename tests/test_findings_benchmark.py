"""benchmarks/findings_report.py: the verdict rules, the seed pairing and the winner-take-all bins."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rep(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = importlib.import_module("findings_report")
    monkeypatch.setattr(mod, "PLOTS", tmp_path / "plots")  # plots go to the test's folder
    yield mod
    sys.modules.pop("findings_report", None)


def test_shows_needs_the_interval_to_exclude_zero(rep):
    assert rep.shows([2.0, 2.1, 1.9]) == 1
    assert rep.shows([1.0, 2.0, 3.0]) == 0  # t-interval with 2 df: 2 ± 2.48
    assert rep.shows([-3.0, -2.0, -2.5]) == -1
    assert rep.shows([-1.0, 1.0, 0.5]) == 0
    assert rep.shows([5.0]) == 0  # one seed has no interval
    assert rep.shows([2.0, math.nan, 2.1, 1.9]) == 1  # a missing value is left out


def test_paired_takes_differences_seed_by_seed(rep):
    a = [{"seed": 0, "v": 5.0}, {"seed": 2, "v": 7.0}, {"seed": 1, "v": 1.0}]
    b = [{"seed": 1, "v": 0.5}, {"seed": 0, "v": 4.0}]
    assert rep.paired(a, b, lambda r: r["v"]) == [1.0, 0.5]  # seed 2 has no partner


def _grpo(seed: int, before: list[int], after: list[int]) -> dict:
    ev = {"entropy": 0.2, "distinct_answers": 3.0}
    return {
        "seed": seed,
        "summary": {"before": ev, "after": ev},
        "before": {"n": 16, "correct": before},
        "after": {"n": 16, "correct": after},
        "metrics": [],
    }


def test_winner_bins_by_the_other_seeds_base_evaluations(rep):
    runs = [_grpo(0, [0, 8], [4, 8]), _grpo(1, [2, 8], [2, 12]), _grpo(2, [0, 16], [0, 16])]
    res = rep.f_winner(lambda arm: runs)
    # seed 0: problem 0's rate in seeds 1 and 2 is 2/32 -> (0, 0.25], change +4/16; problem 1: 24/32
    # seed 1: problem 0 is 0/32 -> bin 0, change 0; problem 1 24/32 -> (0.5, 0.75], change +4/16
    # seed 2: problem 0 2/32 -> (0, 0.25], change 0; problem 1 16/32 -> (0.25, 0.5], change 0
    assert "| 0 | [0, 1, 0] | +0.00 |" in res["table"]
    assert "| (0, 0.25] | [1, 0, 1] | +12.50 ± " in res["table"]
    assert "| (0.25, 0.5] | [0, 0, 1] | +0.00 |" in res["table"]
    assert "| (0.5, 0.75] | [1, 1, 0] | +12.50 ± " in res["table"]
    assert (rep.PLOTS / "winner_take_all.png").exists()


def test_report_says_which_runs_are_missing(rep, tmp_path):
    args = SimpleNamespace(steps=100, seeds=[0, 1, 2], heldout=128)
    text = rep.report(tmp_path / "no_runs", args)
    verdicts = [line for line in text.splitlines() if line.startswith("| ") and "](#" in line]
    assert len(verdicts) == 11 and all("Not run yet" in line for line in verdicts)
    assert "Not run yet: vps (0 of 3 seeds)" in text  # the likelihood-probe finding
    assert "Not run yet: grpo_mb4 (0 of 3 seeds)" in text
