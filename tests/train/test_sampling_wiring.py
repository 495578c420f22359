"""Samplers and dynamic sampling in the trainer: metrics, the tracker, exact resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tests.conftest import micro_run

from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base,
            "eval.before=false",
            "eval.after=false",
            "train.checkpoint_every=2",
            "optim.lr=1e-3",
            *extra,
        ),
    )


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_dynamic_sampling_keeps_only_informative_groups(micro_base, tmp_path, dense_reward):
    # the answer reward alone: the micro model rarely solves a problem, so most groups are all-zero
    cfg = _cfg(micro_base, "train.steps=3", "sampling.dynamic_sampling=true", "sampling.max_rounds=3")
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    total = 0
    for row in rows:
        assert 1 <= row["sampling_rounds"] <= 3
        assert row["rollouts"] == row["sampling_rounds"] * 2 * 4
        total += row["rollouts"]
        assert row["rollouts_total"] == total
        # the batch that trained: dropped groups only when the rounds ran out
        kept_informative = 2 - row["sampling_filled"]
        assert row["zero_var_frac"] <= 1 - kept_informative / 2 + 1e-9


def test_dynamic_sampling_fills_when_rounds_run_out(micro_base, tmp_path):
    # a constant reward: every group is uninformative, so each step fills the batch with dropped groups
    cfg = _cfg(
        micro_base,
        "train.steps=1",
        "sampling.dynamic_sampling=true",
        "sampling.max_rounds=2",
        "rewards={format = {weight = 0.0}}",
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    (row,) = _metrics(tmp_path / "run")
    assert row["sampling_rounds"] == 2 and row["sampling_filled"] == 2 and row["groups_dropped"] == 2
    assert row["rollouts"] == 16 and row["zero_var_frac"] == 1.0


@pytest.mark.parametrize("strategy", ["vade", "difficulty_targeted", "curriculum", "sec"])
def test_samplers_train_and_resume_exactly(micro_base, tmp_path, dense_reward, strategy):
    extra = (f"sampling.strategy='{strategy}'", "sampling.pool_size=12", *dense_reward)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    st = torch.load(tmp_path / "b" / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    history = st["prompt_stats"]["history"]
    assert len(history) == 12 and sum(len(h) for h in history) == 4 * 2  # 4 steps x 2 groups


def test_sampling_config_errors():
    with pytest.raises(ConfigError, match=re.escape("'sampling.strategy': unknown sampler 'nope'")):
        load_config("grpo", ["sampling.strategy='nope'"])
    with pytest.raises(ConfigError, match=re.escape("set sampling.pool_size")):
        load_config("grpo", ["sampling.strategy='vade'"])
    with pytest.raises(ConfigError, match=re.escape("'sampling.pool_size' = 4 is smaller")):
        load_config("grpo", ["sampling.pool_size=4"])
    with pytest.raises(ConfigError, match=re.escape("'sampling.decay'")):
        load_config("grpo", ["sampling.strategy='vade'", "sampling.pool_size=64", "sampling.decay=2.0"])
    with pytest.raises(ConfigError, match=re.escape("'sampling.temperature' is not a field")):
        load_config(
            "grpo", ["sampling.strategy='vade'", "sampling.pool_size=64", "sampling.temperature=2.0"]
        )
