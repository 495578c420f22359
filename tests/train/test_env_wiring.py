"""Multi-turn episodes in the trainer: rewards from the environment, episode metrics, turn-level
credit, exact resume, evaluation by episodes, and configuration errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tests.conftest import micro_run

from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}
ENV_REWARDS = "rewards={answer = {weight = 0.0}, format = {weight = 0.0}, env = {weight = 1.0}}"


def _cfg(micro_base, env, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base,
            "task.source='env'",
            f"task.env='{env}'",
            "task.verifier='env_success'",
            ENV_REWARDS,
            "task.heldout_size=4",
            "eval.samples=2",
            "eval.before=false",
            "train.checkpoint_every=2",
            "optim.lr=1e-3",
            "rollout.max_new_tokens=8",
            "rollout.max_turns=3",
            *extra,
        ),
    )


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("env", "credit"),
    [
        ("calculator", ""),
        ("gridworld", "gigpo_turns"),
        ("gridworld", "turn_grpo"),
        ("gridworld", "gated_turns"),
        ("gridworld", "hiper"),
    ],
)
def test_episodes_train_evaluate_and_resume_exactly(micro_base, tmp_path, env, credit):
    extra = (f"algo.credit='{credit}'",) if credit else ()
    summary = train(
        _cfg(micro_base, env, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False
    )
    rows = _metrics(tmp_path / "a")
    for row in rows:
        assert 1 <= row["turns_per_episode"] <= 3
        assert row["rollouts"] == 8 and row["reward/env"] == pytest.approx(row["env_return"])
        assert row["accuracy"] == pytest.approx(row["success_rate"])
        assert row["model_tokens"] <= row["episode_tokens"]
        assert row["finish_eos"] + row["finish_length"] + row["finish_turns"] == pytest.approx(1.0)
        for k in ("tool_calls_per_episode", "tool_turn_rate", "loss", "entropy"):
            assert k in row
    assert 0.0 <= summary["after"]["pass@1"] <= 1.0  # evaluated by episodes on the held-out seeds
    ck = torch.load(tmp_path / "a" / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    assert ck["task"]["position"] > 0
    train(_cfg(micro_base, env, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(
        _cfg(micro_base, env, "train.steps=4", *extra),
        run_dir=tmp_path / "b",
        resume=True,
        progress=False,
    )
    for ra, rb in zip(rows, _metrics(tmp_path / "b"), strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k


def test_env_knobs_go_to_the_environment_and_its_problems(micro_base, tmp_path):
    # gridworld's own knob and an unknown one: the unknown one reaches the problem stream and fails
    with pytest.raises(ConfigError, match=re.escape("'task.env_kwargs' of environment 'gridworld'")):
        train(
            _cfg(micro_base, "gridworld", "train.steps=1", "task.env_kwargs={nonsense = 3}"),
            run_dir=tmp_path / "x",
            progress=False,
        )


def test_env_config_errors(micro_base):
    with pytest.raises(ConfigError, match=re.escape("'task.env' = 'nope'")):
        _cfg(micro_base, "nope")
    with pytest.raises(ConfigError, match=re.escape("does not combine with guidance.strategy")):
        _cfg(micro_base, "calculator", "guidance.strategy='hints'")
    with pytest.raises(ConfigError, match=re.escape("needs task.source = 'env'")):
        load_config("grpo", micro_run(micro_base, "algo.credit='gigpo_turns'"))
    with pytest.raises(ConfigError, match=re.escape("'rollout.max_turns'")):
        _cfg(micro_base, "calculator", "rollout.max_turns=0")
    with pytest.raises(ConfigError, match=re.escape("'model.embedded' = 'nope'")):
        _cfg(micro_base, "calculator", "model.embedded='nope'")


def test_rlvr_eval_plays_episodes(micro_base, tmp_path):
    from rlvr.cli import main

    out = tmp_path / "eval.json"
    args = [
        "eval",
        "--model",
        str(micro_base),
        "-n",
        "2",
        "--json",
        str(out),
        "--quiet",
        "model.device='cpu'",
        "task.source='env'",
        "task.env='gridworld'",
        "task.verifier='env_success'",
        "task.heldout_size=3",
        "eval.max_new_tokens=4",
        "rollout.max_turns=2",
    ]
    assert main(args) == 0
    text = out.read_text()
    assert "pass@1" in text and "pass@2" in text


def test_plugin_environment_example_trains(micro_base, tmp_path):
    from pathlib import Path

    from rlvr.cli import load_plugins
    from rlvr.envs import ENV_TASKS, ENVS

    root = Path(__file__).resolve().parents[2] / "examples"
    load_plugins([str(root / "guess_env.py")])
    try:
        from rlvr.data.tasks import Problem

        game = ENVS["guess"](Problem("guess #3", "", meta={"env": "guess", "seed": 3}), high=9)
        game.reset(0)
        obs, r, done, info = game.step(str(game.secret))
        assert (obs, r, done, info["success"]) == ("Correct!", 1.0, True, True)
        cfg = load_config(
            str(root / "guess.toml"),
            micro_run(micro_base, "train.steps=2", "eval.before=false", "task.heldout_size=3"),
        )
        train(cfg, run_dir=tmp_path / "run", progress=False)
        rows = _metrics(tmp_path / "run")
        assert len(rows) == 2 and all(1 <= r["turns_per_episode"] <= 4 for r in rows)
    finally:
        ENVS._items.pop("guess", None)
        ENV_TASKS._items.pop("guess", None)
