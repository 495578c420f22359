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


@pytest.mark.parametrize("strategy", ["vade", "difficulty_targeted", "curriculum", "sec", "knapsack"])
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


def test_rollout_replay_mixes_old_groups_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    extra = (
        "sampling.replay_fraction=0.5",
        "sampling.replay_max_age=2",
        "rollout.prompts_per_step=4",
        "algo.objective='ppo_clip'",
        *dense_reward,
    )
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    # step 1 has an empty buffer: all 4 groups fresh; later steps replay 2 of 4 when it holds them
    assert rows[0]["replayed_groups"] == 0 and rows[0]["rollouts"] == 16
    for row in rows[1:]:
        assert row["replayed_groups"] in (0, 1, 2)
        assert row["rollouts"] == (4 - row["replayed_groups"]) * 4
    assert sum(r["replayed_groups"] for r in rows[1:]) > 0
    assert rows[-1]["rollouts_total"] == sum(r["rollouts"] for r in rows)
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False)
    for ra, rb in zip(rows, _metrics(tmp_path / "b"), strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k


@pytest.mark.parametrize("strategy", ["hints", "prefix"])
def test_guidance_rerolls_failed_groups_and_resumes_exactly(micro_base, tmp_path, strategy):
    # the answer reward: the micro model fails most groups, so guidance runs every step; reveal the
    # answer as the last hint tier so that a rescue is possible; prefixes come from the run's own
    # successes (none at first) or a solution field (absent), so 'prefix' may rescue nothing
    knobs = ("guidance.reveal_answer=true",) if strategy == "hints" else ("guidance.max_frac=1.0",)
    extra = (f"guidance.strategy='{strategy}'", "guidance.max_tier=3", *knobs)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    for row in rows:
        assert row["guided_groups"] <= 2
        assert row["guide_rollouts"] % 4 == 0
        assert row["rollouts"] == 8 + row["guide_rollouts"]
    if strategy == "hints":  # chain_sum has partial sums: at least tier 1 and 2 exist
        assert sum(r["guide_rollouts"] for r in rows) > 0
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False)
    for ra, rb in zip(rows, _metrics(tmp_path / "b"), strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k


def test_guidance_and_replay_config_errors(micro_base):
    with pytest.raises(ConfigError, match=r"guidance\.strategy"):
        _cfg(micro_base, "guidance.strategy='nope'")
    with pytest.raises(ConfigError, match=r"guidance\.max_frac"):
        _cfg(micro_base, "guidance.strategy='hints'", "guidance.max_frac=0.5")
    with pytest.raises(ConfigError, match=r"guidance\.reveal_answer"):
        _cfg(micro_base, "guidance.reveal_answer=true")
    with pytest.raises(ConfigError, match=r"sampling\.replay_fraction"):
        _cfg(micro_base, "sampling.replay_fraction=1.0")


def test_knapsack_trains_groups_of_different_sizes(micro_base, tmp_path, dense_reward):
    # a pool of 6, 3 prompts x 4 samples = 12 rollouts a step, 2..8 per prompt
    extra = (
        "sampling.strategy='knapsack'",
        "sampling.pool_size=6",
        "sampling.max_rollouts=8",
        "rollout.prompts_per_step=3",
        "algo.minibatches=2",
        *dense_reward,
    )
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    for row in rows:
        assert row["rollouts"] == 12 and 2 <= row["group_size_min"] <= row["group_size_max"] <= 8
    # the tracker has seen every picked prompt with its own number of attempts
    st = torch.load(tmp_path / "a" / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    seen = [o for h in st["prompt_stats"]["history"] for o in h]
    assert len(seen) == 4 * 3 and sum(o[2] for o in seen) == 4 * 12
    assert any(r["group_size_min"] < r["group_size_max"] for r in rows) or len({o[2] for o in seen}) == 1
    samples = (tmp_path / "a" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 3  # step 1: the first sample of each group


def test_knapsack_config_errors(micro_base):
    base = ("sampling.strategy='knapsack'", "sampling.pool_size=8")
    with pytest.raises(ConfigError, match=re.escape("does not combine with sampling.dynamic_sampling")):
        _cfg(micro_base, *base, "sampling.dynamic_sampling=true")
    with pytest.raises(ConfigError, match=re.escape("guidance.strategy")):
        _cfg(micro_base, *base, "guidance.strategy='hints'")
    with pytest.raises(ConfigError, match="max_rollouts"):
        _cfg(micro_base, *base, "sampling.max_rollouts=2")
