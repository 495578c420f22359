"""Every shipped recipe: loads, describes itself, and trains 2 real steps on the micro model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import UNPORTABLE_CASES, micro_run, skip_where_unportable
from tests.train import golden

from rlvr.cli import main
from rlvr.train.checkpoint import latest_checkpoint
from rlvr.train.config import ConfigError, load_config, recipe_names
from rlvr.train.trainer import train

MICRO_RUN = golden.RECIPE_RUN  # 2 steps, a checkpoint at step 2 (the golden records' runs)


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_describes_itself(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.description and cfg.paper, f"recipe {name} needs a description and a paper"


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_trains_two_real_steps(name, micro_base, micro_teacher, tmp_path, dense_reward):
    # mini-batch counts that do not divide the micro batch of 2 x 4 = 8 sequences become 1; a
    # pass@k advantage gets k = 1 (with G = 4 a k > 1 advantage is mostly zero; the estimator itself
    # is tested against enumeration)
    if f"recipe/{name}" in UNPORTABLE_CASES:
        skip_where_unportable(f"recipe/{name}'s golden record")
    extra = golden.recipe_extra(name, micro_teacher)
    cfg = load_config(name, micro_run(micro_base, *MICRO_RUN, *dense_reward, *extra))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    before = load_file(micro_base / "model.safetensors")
    after = load_file(latest_checkpoint(tmp_path / "run") / "model.safetensors")
    moved = sum(not torch.equal(before[k], after[k]) for k in before)
    assert moved > 0, f"recipe {name}: no parameter changed in 2 steps"
    golden.check(f"recipe/{name}", tmp_path / "run")  # as the loop trained before its redesign


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_trains_with_lora(name, micro_base, micro_teacher, tmp_path, dense_reward):
    """The same 2 steps with rank-4 adapters (model.lora): only the adapted projections move, and
    a recipe that resets its reference (ProRL's resets, ReMix's reincarnation) is refused (the
    reference of a LoRA run is the base)."""
    extra = [*MICRO_RUN, *dense_reward, *golden.recipe_extra(name, micro_teacher), "model.lora.rank=4"]
    a = load_config(name).algo
    if a.ref_reset_every or a.reincarnate_at:
        with pytest.raises(ConfigError, match=r"ref_reset_every|reincarnate_at"):
            load_config(name, micro_run(micro_base, *extra))
        return
    cfg = load_config(name, micro_run(micro_base, *extra, "optim.lr=1e-2"))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    before = load_file(micro_base / "model.safetensors")
    after = load_file(latest_checkpoint(tmp_path / "run") / "model.safetensors")  # merged
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("proj" in k for k in moved), (name, moved)


def test_extends_merges_sections_and_keeps_its_own_identity(tmp_path):
    (tmp_path / "mine.toml").write_text(
        'extends = "grpo"\n[algo]\nclip_high = 0.28\n[optim]\nlr = 5e-5\n'
    )
    cfg = load_config(str(tmp_path / "mine.toml"))
    grpo = load_config("grpo")
    assert cfg.name == "mine" and cfg.description == "" and cfg.paper == ""
    assert cfg.algo.knobs == {"clip_high": 0.28} and cfg.optim.lr == 5e-5
    assert cfg.rollout == grpo.rollout and cfg.train == grpo.train  # untouched sections inherited
    assert cfg.optim.beta2 == grpo.optim.beta2  # a section merges key by key
    (tmp_path / "child.toml").write_text('extends = "mine.toml"\nname = "kid"\n[train]\nsteps = 7\n')
    kid = load_config(str(tmp_path / "child.toml"))
    assert (kid.name, kid.train.steps, kid.algo.knobs) == ("kid", 7, {"clip_high": 0.28})


def test_extends_errors(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(str(tmp_path / "a.toml"))
    (tmp_path / "c.toml").write_text("extends = 3\n")
    with pytest.raises(ConfigError, match="'extends' must be a recipe name or path, got 3"):
        load_config(str(tmp_path / "c.toml"))
    (tmp_path / "d.toml").write_text('extends = "no_such_recipe"\n')
    with pytest.raises(ConfigError, match="unknown recipe 'no_such_recipe'"):
        load_config(str(tmp_path / "d.toml"))


def test_a_directory_named_like_a_recipe_does_not_hide_it(tmp_path, monkeypatch):
    """`rlvr train --recipe opd --run-dir opd`, then `--recipe opd_grpo` (which extends opd) in the
    same folder: the run directory is not read as the recipe."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opd").mkdir()
    (tmp_path / "grpo").mkdir()
    assert load_config("opd_grpo").algo.credit == "opd"
    assert load_config("grpo").name == "grpo"


def test_cli_recipes_lists_every_recipe_and_shows_one(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in recipe_names():
        assert name in out
    assert main(["recipes", "show", "dr_grpo", "optim.lr=3e-5"]) == 0
    shown = capsys.readouterr().out
    assert 'name = "dr_grpo"' in shown and "lr = 3e-05" in shown
    assert 'aggregation = "constant"' in shown
    assert main(["recipes", "show"]) == 2
    assert main(["recipes", "show", "nope"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().out
