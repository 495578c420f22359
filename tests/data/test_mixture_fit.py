"""sampler:mixture_fit (after MoDoMoDo): the mixture history and the fitted predictor by hand, the
preference it gives, the neutral settings, and a real run over a two-task mixture that resumes
exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import micro_run

from rlvr.data.samplers import SAMPLERS, PromptStats, mixture_history
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

mixture_fit = SAMPLERS["mixture_fit"]


def _stats():
    # prompts 0-3 are category "a", 4-5 "b"
    stats = PromptStats(6, ["a"] * 4 + ["b"] * 2)
    # step 1: two groups of a (rate 1/4 overall), one of b (rate 2/4)
    stats.update(0, step=1, successes=0, attempts=4)
    stats.update(1, step=1, successes=2, attempts=4)
    stats.update(4, step=1, successes=2, attempts=4)
    # step 2: one group of a (rate 3/4), one of b (rate 2/4)
    stats.update(2, step=2, successes=3, attempts=4)
    stats.update(5, step=2, successes=2, attempts=4)
    # step 3: one group of b only (rate 4/4)
    stats.update(4, step=3, successes=4, attempts=4)
    return stats


def test_history_and_fit_by_hand():
    stats = _stats()
    cats, x, y = mixture_history(stats)
    assert cats == ["a", "b"]
    # step 1 -> 2: mixture (2/3, 1/3); gains a: 3/4 - 1/4 = 1/2, b: 2/4 - 2/4 = 0 -> y = 1/4
    # step 2 -> 3: mixture (1/2, 1/2); only b in both: 4/4 - 2/4 = 1/2
    np.testing.assert_allclose(x, [[2 / 3, 1 / 3], [0.5, 0.5]])
    np.testing.assert_allclose(y, [0.25, 0.5])
    # theta = (X'X + I)^-1 X'y, by hand: X'X = [[4/9+1/4, 2/9+1/4], [2/9+1/4, 1/9+1/4]]
    xtx = np.array([[4 / 9 + 1 / 4, 2 / 9 + 1 / 4], [2 / 9 + 1 / 4, 1 / 9 + 1 / 4]]) + np.eye(2)
    xty = np.array([2 / 3 * 0.25 + 0.5 * 0.5, 1 / 3 * 0.25 + 0.5 * 0.5])
    theta = np.linalg.solve(xtx, xty)
    # the weights: floor / C + (1 - floor) softmax(theta / T); the draws follow them
    t, floor = 0.05, 0.2
    soft = np.exp(theta / t) / np.exp(theta / t).sum()
    w = floor / 2 + (1 - floor) * soft
    rng = np.random.default_rng(0)
    picks = np.concatenate(
        [mixture_fit(stats, 1, 4, rng, temperature=t, floor=floor) for _ in range(4000)]
    )
    assert np.mean(picks >= 4) == pytest.approx(w[1], abs=0.03)
    # without the ridge the two steps fit exactly: 2/3 a + 1/3 b = 1/4 and a/2 + b/2 = 1/2 give
    # theta = (-1/4, 5/4): the mixture leans to b (softmax of (-5, 25) at T = 0.05, floor 0.1)
    picks = np.concatenate([mixture_fit(stats, 1, 4, rng, ridge=1e-9) for _ in range(500)])
    assert np.mean(picks >= 4) == pytest.approx(0.95, abs=0.03)
    both = mixture_fit(stats, 6, 4, rng)  # more picks than one category holds: every prompt once
    assert sorted(both.tolist()) == list(range(6))


def test_neutral_settings_are_uniform_over_categories():
    rng = np.random.default_rng(1)
    fresh = PromptStats(8, ["a"] * 6 + ["b"] * 2)  # no history: theta = 0
    picks = np.concatenate([mixture_fit(fresh, 1, 0, rng) for _ in range(4000)])
    assert np.mean(picks >= 6) == pytest.approx(0.5, abs=0.03)  # by category, not by prompt
    picks = np.concatenate([mixture_fit(_stats(), 1, 4, rng, floor=1.0) for _ in range(4000)])
    assert np.mean(picks >= 4) == pytest.approx(0.5, abs=0.03)
    # no step pair shares a category: nothing to fit
    apart = PromptStats(4, ["a", "a", "b", "b"])
    apart.update(0, step=1, successes=1, attempts=2)
    apart.update(2, step=2, successes=2, attempts=2)
    _, x, y = mixture_history(apart)
    assert x.shape == (0, 2) and y.shape == (0,)


def test_bad_knobs_are_refused():
    pool = ["sampling.pool_size=12", "sampling.strategy='mixture_fit'"]
    with pytest.raises(ConfigError, match="ridge"):
        load_config("grpo", [*pool, "sampling.ridge=0.0"])
    with pytest.raises(ConfigError, match="floor"):
        load_config("grpo", [*pool, "sampling.floor=1.5"])


def test_a_mixture_run_trains_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    mix = "task.mixture={chain_sum = {weight = 1.0}, basic_arithmetic = {weight = 1.0}}"
    extra = [
        mix,
        "sampling.strategy='mixture_fit'",
        "sampling.pool_size=12",
        "eval.before=false",
        "eval.after=false",
        "train.checkpoint_every=2",
        *dense_reward,
    ]
    train(
        load_config("grpo", micro_run(micro_base, "train.steps=4", *extra)),
        run_dir=tmp_path / "a",
        progress=False,
    )
    train(
        load_config("grpo", micro_run(micro_base, "train.steps=2", *extra)),
        run_dir=tmp_path / "b",
        progress=False,
    )
    cfg = load_config("grpo", micro_run(micro_base, "train.steps=4", *extra))
    train(cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    read = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = read(tmp_path / "a"), read(tmp_path / "b")
    for key in ("loss", "reward_mean"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-6, abs=1e-7)
    import torch

    st = torch.load(tmp_path / "b" / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    assert set(st["prompt_stats"]["categories"]) == {"chain_sum", "basic_arithmetic"}
