"""benchmarks/teachers_report.py: the base-unsolved count against its re-sampling null, the curves,
the verdicts, and a report written from hand-made runs (RL and SFT)."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rep(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = importlib.import_module("teachers_report")
    monkeypatch.setattr(mod, "PLOTS", tmp_path / "plots")
    yield mod
    for name in ("teachers_report", "teachers"):
        sys.modules.pop(name, None)


def test_learned_picks_problems_by_the_other_seeds_and_counts_the_null(rep):
    before = {0: [0, 3, 0, 0], 1: [0, 0, 0, 2], 2: [1, 0, 0, 0]}
    run = {"seed": 0, "after": {"correct": [2, 0, 1, 5]}}
    # never solved by seeds 1 and 2: problems 1 and 2 (0 and 3 were solved there)
    # the trained model solves problem 2 (not 1); the base at seed 0 solved problem 1
    assert rep.learned(run, before) == (1.0, 1.0)
    assert all(math.isnan(x) for x in rep.learned(run, {0: [0, 0, 0, 0]}))  # no other seed


def test_points_start_at_the_base_and_add_up_step_time(rep):
    before = {0: [8, 0]}  # base pass@1 = (8/16 + 0) / 2
    run = {
        "seed": 0,
        "metrics": [
            {"step": 1, "step_time": 2.0},
            {"step": 2, "step_time": 3.0, "heldout_pass@1": 0.4},
            {"step": 3, "step_time": 1.0},
            {"step": 4, "step_time": 1.5, "heldout_pass@1": 0.5},
        ],
    }
    assert rep.points(run, before) == [(0, 0.0, 0.25), (2, 5.0, 0.4), (4, 7.5, 0.5)]
    sft = {"seed": 0, "curve": {50: 0.3, 100: 0.35}, "wall": 40.0, "steps": 100}
    assert rep.points(sft, before) == [(0, 0.0, 0.25), (50, 20.0, 0.3), (100, 40.0, 0.35)]
    assert rep.wall_s(run) == 7.5 and rep.wall_s(sft) == 40.0


def test_verdict_needs_three_seeds_and_an_interval_off_zero(rep):
    assert rep.verdict([2.0, 2.1, 1.9]) == "**shows**"
    assert rep.verdict([-2.0, -2.1, -1.9]) == "**contradicted**"
    assert rep.verdict([1.0, -1.0, 0.5]) == "inconclusive"
    assert rep.verdict([2.0, 2.1]).startswith("not run yet (2 of 3")


def _rl_run(d: Path, seed: int, before: list[int], after: list[int], kl: bool = False) -> None:
    d.mkdir(parents=True)
    p = lambda c: sum(x / 16 for x in c) / len(c)  # noqa: E731
    (d / "summary.json").write_text(
        json.dumps({"after": {"pass@1": p(after), "pass@16": 0.5}, "before": {"pass@1": p(before)}})
    )
    (d / "eval_before.json").write_text(json.dumps({"correct": before, "n": 16}))
    (d / "eval_after.json").write_text(json.dumps({"correct": after, "n": 16}))
    rows = [{"step": 1, "step_time": 1.0, **({"teacher_kl": 0.6} if kl else {})}]
    rows.append({"step": 2, "step_time": 1.0, "heldout_pass@1": p(after)})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_from_hand_made_runs(rep, tmp_path):
    runs = tmp_path / "runs"
    befores = {0: [0, 4, 0, 8], 1: [0, 4, 0, 6], 2: [0, 2, 1, 8]}
    for s, b in befores.items():
        _rl_run(runs / "grpo" / f"seed{s}", s, b, [0, 4, 0, 8])
        _rl_run(runs / "opd" / f"seed{s}", s, b, [2 + s, 8, 1, 10], kl=True)
    d = runs / "sft" / "seed0"  # one SFT seed: its row has no interval, its claim is not run yet
    d.mkdir(parents=True)
    summ = {"pass@1": 0.3, "pass@16": 0.6}
    (d / "summary.json").write_text(
        json.dumps({"steps": 50, "after": summ, "curve": {"25": summ, "50": summ}, "sft_wall_s": 9.0})
    )
    (d / "eval_step50.json").write_text(
        json.dumps({"models": [{"summary": summ, "correct": [1, 1, 1, 1]}]})
    )
    (runs / "teacher_eval.json").write_text(
        json.dumps({"models": [{"summary": {"pass@1": 0.45, "pass@16": 0.9}}]})
    )
    text = rep.report(runs, SimpleNamespace(steps=50, heldout=4))
    assert "| teacher (`reasoner_teacher`, ceiling) | — | 45.0 | | | 90.0 |" in text
    opd = next(ln for ln in text.splitlines() if ln.startswith("| on-policy distillation"))
    assert "| 3 |" in opd
    # never solved by the other seeds' bases: {0} for seeds 0 and 1, {0, 2} for seed 2 (seed 2's own
    # base solved problem 2 once): opd solves 1, 1, 2 of them, the re-sampled base 0, 0, 1
    assert "| 1.3 ± 1.4 (0.3 ± 1.4) |" in opd
    assert "| SFT alone (`rlvr sft`) | 1 | 30.0 |" in text
    assert "| HPT (`recipe:hpt`) | 0 | not run yet |" in text
    claim = next(ln for ln in text.splitlines() if "(opd − grpo, pass@1)" in ln)
    assert claim.endswith("| **shows** |")
    assert "(hpt − sft, pass@1)" in text and "not run yet (0 of 3" in text
    assert "- opd: 0.60" in text
    assert (tmp_path / "plots" / "pass1.png").exists()


def test_report_says_when_the_bases_are_not_the_reference_builds(rep, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    args = SimpleNamespace(steps=50, heldout=4)
    assert "reference" not in rep.report(runs, args)  # no bases.json: nothing said
    same = {"reasoner": {"weights": "aa", "reference": "aa"}}
    (runs / "bases.json").write_text(json.dumps(same))
    assert "The bases are the reference builds" in rep.report(runs, args)
    off = {**same, "reasoner_teacher": {"weights": "bb", "reference": "cc"}}
    (runs / "bases.json").write_text(json.dumps(off))
    text = rep.report(runs, args)
    assert "other builds of the bases" in text and "`reasoner_teacher` weights bb (reference cc)" in text
    assert "`reasoner` weights" not in text
