"""benchmarks/digest.py: finished runs digested without their samples or models, restored only
where a run is missing, and a report written from restored digests equal to one from the runs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.test_teachers_benchmark import _rl_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mods(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    digest = importlib.import_module("digest")
    rep = importlib.import_module("teachers_report")
    monkeypatch.setattr(rep, "PLOTS", tmp_path / "plots")
    yield digest, rep
    for name in ("digest", "arms", "teachers_report", "teachers"):
        sys.modules.pop(name, None)


def _runs(root: Path) -> None:
    befores = {0: [0, 4, 0, 8], 1: [0, 4, 0, 6], 2: [0, 2, 1, 8]}
    for s, b in befores.items():
        _rl_run(root / "grpo" / f"seed{s}", s, b, [0, 4, 0, 8])
        _rl_run(root / "opd" / f"seed{s}", s, b, [2 + s, 8, 1, 10], kl=True)
    d = root / "grpo" / "seed0"
    rec = json.loads((d / "eval_after.json").read_text())
    rec["samples"] = [{"completion": "x" * 10_000}]
    (d / "eval_after.json").write_text(json.dumps(rec))
    (d / "model").mkdir()
    (d / "model" / "model.safetensors").write_bytes(b"\0" * 50_000)
    (d / "config.toml").write_text("[rollout]\nbranching = ''\n")
    cut = root / "opd" / "seed3"  # a run cut before its summary: not digested
    cut.mkdir()
    (cut / "metrics.jsonl").write_text('{"step": 1}\n')
    (root / "teacher_eval.json").write_text(
        json.dumps({"models": [{"summary": {"pass@1": 0.45, "pass@16": 0.9}, "samples": ["y"]}]})
    )


def test_save_keeps_what_reports_read_and_drops_samples_and_models(mods, tmp_path):
    digest, _ = mods
    runs, dig = tmp_path / "runs", tmp_path / "digest"
    _runs(runs)
    assert digest.save(runs, dig) == 6
    d = dig / "grpo" / "seed0"
    assert sorted(p.name for p in d.iterdir()) == [
        "config.toml",
        "eval_after.json",
        "eval_before.json",
        "metrics.jsonl",
        "summary.json",
    ]
    after = json.loads((d / "eval_after.json").read_text())
    assert "samples" not in after and after["correct"] == [0, 4, 0, 8]
    assert not (dig / "opd" / "seed3").exists()
    assert "samples" not in json.loads((dig / "teacher_eval.json").read_text())["models"][0]
    size = sum(p.stat().st_size for p in dig.rglob("*") if p.is_file())
    assert size < 5_000  # the 50 kB model and the 10 kB sample stayed behind


def test_restore_fills_only_missing_runs_and_the_report_is_the_same(mods, tmp_path):
    digest, rep = mods
    runs, dig, fresh = tmp_path / "runs", tmp_path / "digest", tmp_path / "fresh"
    _runs(runs)
    digest.save(runs, dig)
    args = SimpleNamespace(steps=50, heldout=4)
    want = rep.report(runs, args)
    # a fresh clone: one run made here already (kept as it is), the others restored
    _rl_run(fresh / "opd" / "seed0", 0, [0, 4, 0, 8], [2, 8, 1, 10], kl=True)
    mine = (fresh / "opd" / "seed0" / "summary.json").read_text()
    assert digest.restore(dig, fresh) == 5
    assert (fresh / "opd" / "seed0" / "summary.json").read_text() == mine
    assert (fresh / "teacher_eval.json").exists()
    assert rep.report(fresh, args) == want
    assert digest.restore(dig, fresh) == 0  # nothing missing any more
    assert not list(fresh.rglob("*.restoring"))


def test_restore_from_no_digest_is_a_no_op(mods, tmp_path):
    digest, _ = mods
    assert digest.restore(tmp_path / "none", tmp_path / "runs") == 0
    assert not (tmp_path / "runs").exists()


def test_digests_of_other_bases_are_neither_restored_nor_mixed(mods, tmp_path, monkeypatch):
    digest, _ = mods
    arms = importlib.import_module("arms")
    old, dig = tmp_path / "old", tmp_path / "digest"
    _runs(old)
    (old / "bases.json").write_text(json.dumps({"reasoner": {"weights": "aa", "reference": "aa"}}))
    digest.save(old, dig)
    here = tmp_path / "here"
    recorded = []

    def record(out, names):  # this machine builds other weights
        recorded.append(tuple(names))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"reasoner": {"weights": "bb", "reference": "aa"}}))

    monkeypatch.setattr(arms, "record_bases", record)
    args = SimpleNamespace(no_digest=False, table_only=False, digest=dig, runs=here)
    arms.restore_digests(args, ("reasoner",))
    assert recorded == [("reasoner",)] and not list(here.glob("*/seed*"))  # nothing restored
    _rl_run(here / "grpo" / "seed0", 0, [0, 4, 0, 8], [0, 4, 0, 8])
    arms.save_digests(args)  # the old digests go, the new run's comes in
    assert sorted(p.parent.name + "/" + p.name for p in dig.glob("*/seed*")) == ["grpo/seed0"]
    assert json.loads((dig / "bases.json").read_text())["reasoner"]["weights"] == "bb"
    # the same bases: restored as before; --table-only restores without looking at the bases
    fresh = tmp_path / "fresh"
    args2 = SimpleNamespace(no_digest=False, table_only=True, digest=dig, runs=fresh)
    arms.restore_digests(args2, ("reasoner",))
    assert (fresh / "grpo" / "seed0" / "summary.json").exists()
