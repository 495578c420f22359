"""benchmarks/recipes.py: the table from finished runs, with each row's commits and thread settings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("recipes_bench", ROOT / "benchmarks" / "recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(d: Path, p1: float, gain: float, wall: float, info: dict | None) -> None:
    d.mkdir(parents=True)
    summary = {"after": {"pass@1": p1, "pass@16": 0.5}, "pass@1_gain": gain}
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": s, "entropy": 0.25, "response_length": 4.0} for s in range(1, 4)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "wall_s.txt").write_text(f"{wall}\n")
    if info is not None:
        (d / "bench.json").write_text(json.dumps(info))


def test_table_rows_with_settings(bench, tmp_path):
    _run(tmp_path / "grpo" / "seed0", 0.30, 0.10, 120, {"commits": ["abc1234"], "threads": 1, "jobs": 2})
    _run(tmp_path / "grpo" / "seed1", 0.40, 0.20, 240, {"commits": ["abc1234"], "threads": 1, "jobs": 2})
    _run(tmp_path / "grpo" / "seed2", 0.50, 0.30, 360, None)  # from before bench.json
    _run(
        tmp_path / "dapo" / "seed0",
        0.20,
        0.05,
        60,
        {"commits": ["a", "b"], "threads": 2, "jobs": 1, "starts": 2},
    )
    info = {"commits": ["c"], "threads": 1, "jobs": 2, "starts": 1, "paused_s": 240}
    _run(tmp_path / "rloo" / "seed0", 0.3, 0.1, 600, info)  # stopped a while: no wall time
    (tmp_path / "ppo" / "seed0").mkdir(parents=True)  # unfinished: no row
    lines = bench.table(tmp_path).splitlines()
    assert len(lines) == 5 and "commit, threads x jobs" in lines[0]
    assert "| n/a (resumed or paused) |" in lines[4]  # rloo
    dapo, grpo = lines[2], lines[3]
    assert (
        dapo.startswith("| dapo | 1 | 20.0 (1 seed) | 20.0 (1 seed) | +5.0 (1 seed) |")
        and "| a+b, 2 x 1 |" in dapo
    )
    assert "| n/a (resumed or paused) |" in dapo  # its wall_s.txt holds only the part after the resume
    # mean 40.0, t-interval half-width 4.303 * 10 / sqrt(3) = 24.8
    assert grpo.startswith(
        "| grpo | 3 | 40.0 ± 24.8 | 40.0 ± 24.8 | +20.0 ± 24.8 | 50.0 | 0.250 | 4.00 | 4.0 min |"
    )  # (no mid-run evaluations: the last 3 evaluations are the final one)
    assert grpo.endswith("| abc1234, 1 x 2; unrecorded |")


def test_a_failed_run_is_listed_and_the_others_go_on(bench, tmp_path, monkeypatch):
    def fake_train(cfg, run_dir, resume, progress):
        if cfg.name == "bnpo":
            raise ValueError("boom")
        (run_dir / "summary.json").write_text(json.dumps({"after": {"pass@1": 0.3}, "pass@1_gain": 0.1}))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "entropy": 0.2}) + "\n")

    monkeypatch.setattr(bench, "train", fake_train)
    argv = ["recipes.py", "--recipes", "bnpo", "grpo", "--seeds", "0", "--runs", str(tmp_path)]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path / "t.md")])
    with pytest.raises(SystemExit, match=r"1 run\(s\) failed: bnpo seed 0"):
        bench.main()  # bnpo (first) failed, grpo still ran
    text = (tmp_path / "t.md").read_text()
    assert "| grpo | 1 | 30.0 (1 seed) | 30.0 (1 seed) |" in text
    assert "- bnpo seed0: `ValueError: boom` (bnpo/seed0/error.txt)" in text
    assert "Traceback" in (tmp_path / "bnpo" / "seed0" / "error.txt").read_text()


def test_last_evaluations_average_the_final_and_the_latest_mid_run_ones(bench, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    rows = [{"step": 1}, {"step": 2, "heldout_pass@1": 0.2}, {"step": 3, "heldout_pass@1": 0.4}]
    rows += [{"step": 4, "heldout_pass@1": 0.6}, {"step": 5}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = {"after": {"pass@1": 0.3}}
    assert bench._late_pass1(d, final) == pytest.approx((0.4 + 0.6 + 0.3) / 3)
    assert bench._late_pass1(d, final, k=1) == pytest.approx(0.3)


def test_a_rewrite_keeps_the_rows_of_recipes_not_run_here(bench, tmp_path):
    _run(tmp_path / "runs" / "sapo" / "seed0", 0.30, 0.10, 120, None)
    out = tmp_path / "recipes.md"
    old = "| grpo | 3 | 37.7 ± 3.2 | 39.7 ± 4.4 | +15.9 ± 2.6 | 81.8 | 0.216 | 4.59 | 1 min | c, 1 x 2 |"
    stale = "| sapo | 3 | 1.0 ± 0.1 | 1.0 ± 0.1 | +0.1 ± 0.1 | 1.0 | 0.1 | 4.0 | 1.0 min | x, 1 x 2 |"
    out.write_text(f"# header\n\n| recipe | seeds | a | b | c | d | e | f | g | h |\n{old}\n{stale}\n")
    lines = bench.table(tmp_path / "runs", out).splitlines()
    assert lines[2] == old  # kept, before sapo in name order
    assert lines[3].startswith("| sapo | 1 | 30.0 (1 seed) |")  # the finished run replaces its old row
    assert len(lines) == 4
