"""ReMax's batch stage: one greedy rollout per prompt, scored, used as the baseline, not trained on."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import micro_run

from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train


def test_remax_run_makes_one_greedy_rollout_per_prompt(micro_base, tmp_path, dense_reward):
    cfg = load_config(
        "remax",
        micro_run(micro_base, "train.steps=2", "eval.before=false", "eval.after=false", *dense_reward),
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["greedy_rollouts"] == 2  # one per prompt
        assert r["rollouts"] == 8  # the trained samples only: 2 prompts x 4
        assert 0.0 <= r["greedy_reward_mean"] <= 1.0


def test_greedy_stage_supplies_the_estimator_and_is_off_otherwise(micro_base, tmp_path):
    from rlvr.train.advantage import advantage_inputs
    from rlvr.train.collect import Collector
    from rlvr.train.setup import setup_run

    run = setup_run(load_config("remax", micro_run(micro_base)), run_dir=tmp_path / "run")
    try:
        got = run.collector.collect(1)
        roll = got.batch.roll
        assert roll.greedy_rewards.shape == (8,)
        assert torch.equal(
            roll.greedy_rewards.view(2, 4), roll.greedy_rewards.view(2, 4)[:, :1].expand(2, 4)
        )
        inputs = advantage_inputs(roll, frozenset({"greedy_rewards"}), 2, 4, torch.ones(2))
        adv = run.comps.advantage(roll.rewards.view(2, 4), **inputs)
        torch.testing.assert_close(adv, roll.rewards.view(2, 4) - roll.greedy_rewards.view(2, 4))
        assert not Collector(run.cfg, run.collector.rounds, run.state, torch.device("cpu")).greedy
    finally:
        run.collector.rounds.close()
    with pytest.raises(ConfigError, match="greedy rollout"):
        load_config("remax", ["task.source='env'", "task.env='gridworld'"])


def test_remax_with_rollout_replay(micro_base, tmp_path, dense_reward):
    """A replayed group does not keep the greedy rewards of the step that generated it (the
    baseline stage gives every kept prompt the current weights' greedy reward)."""
    extra = ["eval.before=false", "eval.after=false", "train.steps=3", *dense_reward]
    cfg = load_config("remax", micro_run(micro_base, *extra, "sampling.replay_fraction=0.5"))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["greedy_rollouts"] for r in rows] == [2, 2, 2]
    assert sum(r["replayed_groups"] for r in rows) > 0
