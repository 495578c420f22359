"""reward:random, the no-signal control of spurious-reward studies."""

from __future__ import annotations

import pytest

from rlvr.rewards import REWARDS
from rlvr.rewards.runner import RewardComponent, RewardRunner


def _score(fn, prompts, completions, answers=None):
    answers = answers or ["1"] * len(prompts)
    return fn(prompts, completions, answers, [{} for _ in prompts], group_size=len(prompts))


def test_random_reward_is_bernoulli_p_and_ignores_correctness():
    prompts = [f"q{i // 8}" for i in range(4000)]
    completions = [f"c{i % 3}" for i in range(4000)]
    for p in (0.0, 1.0):
        assert set(_score(REWARDS["random"](p=p), prompts, completions)) == {p}
    scores = _score(REWARDS["random"](p=0.3), prompts, completions)
    assert set(scores) == {0.0, 1.0}
    assert abs(sum(scores) / len(scores) - 0.3) < 0.03  # 4000 draws: sd of the mean 0.007
    # the reference answer does not enter: the same texts with other answers score the same
    assert _score(REWARDS["random"](p=0.3), prompts, completions, ["9"] * 4000) == scores
    # equal completions of one prompt still draw independently
    same = _score(REWARDS["random"](p=0.5), ["q"] * 64, ["c"] * 64)
    assert 0 < sum(same) < 64


def test_random_reward_is_reproducible_and_differs_across_steps_and_seeds():
    prompts, completions = ["a", "a", "b", "b"] * 16, ["x", "y"] * 32
    first = _score(REWARDS["random"](p=0.5, seed=1), prompts, completions)
    assert _score(REWARDS["random"](p=0.5, seed=1), prompts, completions) == first  # a resume
    assert _score(REWARDS["random"](p=0.5, seed=2), prompts, completions) != first
    other_step = _score(REWARDS["random"](p=0.5, seed=1), prompts, ["x", "z"] * 32)
    assert other_step != first


def test_random_reward_runs_in_the_runner_and_checks_p():
    runner = RewardRunner([RewardComponent("random", 2.0, {"p": 1.0})])
    res = runner.score(["q"] * 4, ["a", "b", "c", "d"], ["1"] * 4, [{}] * 4, group_size=4)
    assert res.rewards == [2.0] * 4 and res.failures.get("random", 0) == 0
    with pytest.raises(ValueError, match="p"):
        REWARDS.check_knobs("random", {"p": 1.5})
