"""benchmarks/branching.py and branching_report.py: the arms' overrides load, the sampled-token
count (copied prefixes left out), tokens to a target, and a report written from hand-made runs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rep(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    mod = importlib.import_module("branching_report")
    monkeypatch.setattr(mod, "PLOTS", tmp_path / "plots")
    yield mod
    for name in ("branching_report", "branching"):
        sys.modules.pop(name, None)


def test_every_arm_loads_with_its_credit_and_rollout(rep):
    from branching import ARMS, RECIPE

    from rlvr.train.config import load_config

    assert len(ARMS) == 10 and list(ARMS)[:5] == [
        "grpo_iid",
        "tree_td_iid",
        "gigpo_iid",
        "rover_iid",
        "spo_tree_iid",
    ]
    for arm, overrides in ARMS.items():
        cfg = load_config(RECIPE, list(overrides))
        credit, mode = arm.rsplit("_", 1)
        assert cfg.rollout.branching == ("entropy" if mode == "tree" else "")
        want = {"grpo": "", "spo_tree": "spo_segment"}.get(credit, credit)
        assert cfg.algo.credit == want
    assert load_config(RECIPE, list(ARMS["spo_tree_tree"])).algo.knobs == {"estimator": "tree"}


def _run(d: Path, *, before: float, evals: dict[int, float], length: float, copied: float = 0.0):
    d.mkdir(parents=True)
    (d / "config.toml").write_text("[rollout]\nprompts_per_step = 2\nsamples_per_prompt = 4\n")
    last = evals[max(evals)]
    (d / "summary.json").write_text(
        json.dumps({"before": {"pass@1": before}, "after": {"pass@1": last, "pass@16": 0.5}})
    )
    (d / "eval_before.json").write_text("{}")
    (d / "eval_after.json").write_text("{}")
    rows = []
    for step in range(1, max(evals) + 1):
        row = {"step": step, "step_time": 1.0, "response_length": length}
        if copied:
            row["copied_tokens"] = copied
        if step in evals:
            row["heldout_pass@1"] = evals[step]
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sampled_tokens_leave_out_the_copied_prefixes(rep, tmp_path):
    d = tmp_path / "a" / "seed0"
    # 8 rows of mean length 10 = 80 tokens a step, 30 of them copied: 50 sampled
    _run(d, before=0.2, evals={2: 0.25, 4: 0.3}, length=10.0, copied=30.0)
    (run,) = rep.load(tmp_path, "a")
    assert rep.rows_per_step(run) == 8
    assert rep.points(run) == [(0, 0.0, 0.2), (2, 100.0, 0.25), (4, 200.0, 0.3)]
    assert rep.per_step(run) == 50.0 and rep.copied_share(run) == pytest.approx(30 / 80)
    assert rep.tokens_to(run, 0.25) == 100.0 and rep.tokens_to(run, 0.3) == 200.0
    assert rep.tokens_to(run, 0.31) is None
    assert rep.gain(run) == pytest.approx(0.1) and rep.wall_s(run) == 4.0


def test_report_from_hand_made_runs(rep, tmp_path):
    runs = tmp_path / "runs"
    for s in range(3):
        _run(runs / "grpo_iid" / f"seed{s}", before=0.2, evals={2: 0.2, 4: 0.21}, length=10.0)
        _run(
            runs / "grpo_tree" / f"seed{s}",
            before=0.2,
            evals={2: 0.22, 4: 0.25 + 0.01 * s},
            length=10.0,
            copied=20.0,
        )
    _run(runs / "tree_td_tree" / "seed0", before=0.2, evals={2: 0.2, 4: 0.2}, length=12.0, copied=8.0)
    text = rep.report(runs, SimpleNamespace(steps=4, heldout=16))
    assert "# Branching rollouts" in text and (tmp_path / "plots" / "pass1.png").exists()
    # target = max(base 20%, grpo_iid's final 21%); the tree reaches it at its first eval (step 2)
    assert "held-out pass@1 ≥ 21.0%" in text
    lines = {
        ln.split("|")[1].strip() + " " + ln.split("|")[2].strip(): ln
        for ln in text.splitlines()
        if ln.startswith("| `")
    }
    tree = lines["`grpo` tree"]
    assert "| 3 | 26.0 ± " in tree and "+5.0 ± " in tree  # tree − iid: 4, 5, 6 points
    assert "| 60 ± 0 |" in tree  # 8 x 10 - 20 sampled tokens a step
    assert "3 of 3, 0.1 k" in tree  # 2 steps x 60 tokens, in thousands
    assert "| `grpo`: tree − iid | +5.0 ± " in text and "**shows**" in text
    assert "not run yet (1 of 3 paired seeds)" in text  # tree_td has one seed, no iid arm
    assert "| `rover` | iid | 0 | not run yet |" in text
