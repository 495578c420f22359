"""Branching rollouts in the loop (rollout.branching): a real run, the tree the credit assigner sees,
CURE's second stage (branch_steps), exact resume, and the settings it cannot combine with."""

from __future__ import annotations

import functools
import json

import pytest
from tests.conftest import micro_run

from rlvr.algos import CREDIT
from rlvr.cli import main
from rlvr.models.critic import ProbeValue
from rlvr.models.hf import load_model
from rlvr.rollout.branch_points import boundary_ids
from rlvr.train import rounds
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}
TREE = ["rollout.branching='entropy'", "rollout.branch_roots=2", "rollout.branch_width=2"]
QUIET = ["eval.before=false", "eval.after=false", "eval.every=0", "train.checkpoint_every=2"]


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_rlvr_train_two_steps_with_tree_td_sees_the_tree(micro_base, tmp_path, monkeypatch, capsys):
    seen = []
    real = CREDIT["tree_td"]

    @functools.wraps(real)  # keeps its needs, bounds and signature
    def spy(rewards, mask, **kw):
        seen.append((kw["completion_ids"].clone(), mask.clone()))
        return real(rewards, mask, **kw)

    monkeypatch.setitem(CREDIT._items, "tree_td", spy)
    overrides = micro_run(micro_base, *QUIET, *TREE, "algo.credit='tree_td'", "optim.lr=1e-2")
    args = ["train", "--steps", "2", "--run-dir", str(tmp_path / "run"), "--quiet", *overrides]
    assert main(args) == 0
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and all(r["rollouts"] == 8 for r in rows)
    assert len(seen) == 2
    for ids, mask in seen:  # 2 groups of 4: 2 roots, then 2 branches from one critical token
        assert ids.shape[0] == 8
        lens = mask.sum(1).long().tolist()
        rows_ = [ids[k, : lens[k]].tolist() for k in range(8)]
        for g in (0, 4):
            for k in (g + 2, g + 3):
                assert max(_shared(rows_[k], rows_[j]) for j in (g, g + 1)) >= 1
            assert _shared(rows_[g + 2], rows_[g + 3]) >= 1  # the two branches of one point


def test_branch_steps_stops_branching_after_stage_one(micro_base, tmp_path, monkeypatch):
    calls = []
    real = rounds.generate_branched

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(rounds, "generate_branched", spy)
    cfg = load_config(
        "grpo", micro_run(micro_base, *QUIET, *TREE, "train.steps=3", "rollout.branch_steps=2")
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    assert len(calls) == 2  # steps 1 and 2 branch, step 3 samples i.i.d.
    assert calls[0]["roots"] == 2 and calls[0]["width"] == 2 and calls[0]["depth"] == 1


@pytest.mark.parametrize("rule", ["uniform", "step", "low_prob"])
def test_each_branch_point_rule_runs_in_the_loop(micro_base, tmp_path, monkeypatch, rule):
    calls = []
    real = rounds.generate_branched

    def spy(*args, **kw):
        roll = real(*args, **kw)
        calls.append((kw, roll))
        return roll

    monkeypatch.setattr(rounds, "generate_branched", spy)
    tree = [f"rollout.branching='{rule}'", "rollout.branch_roots=2", "rollout.branch_width=2"]
    cfg = load_config("grpo", micro_run(micro_base, *QUIET, *tree, "train.steps=1"))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    ((kw, roll),) = calls
    assert kw["points"] == rule and kw["max_prob"] == 0.9 and len(roll) == 8
    # the step boundaries, computed once per run, only for the rule that needs them
    want = boundary_ids(load_model(micro_base)[1]) if rule == "step" else []
    assert kw["step_ids"] == want and (rule != "step" or want)
    assert roll.parent.shape == (8,) and roll.parent.tolist()[:2] == [-1, -1]  # the 2 roots


@pytest.mark.parametrize("rule", ["value", "entropy"])
def test_the_critic_guides_the_value_rule_only(micro_base, tmp_path, monkeypatch, rule):
    calls = []
    real = rounds.generate_branched

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(rounds, "generate_branched", spy)
    tree = [f"rollout.branching='{rule}'", "rollout.branch_roots=2", "critic.enabled=true"]
    tree += ["critic.kind='probe'", "algo.credit='tree_td'"]
    if rule == "value":
        tree.append("rollout.branch_explore=0.5")
    cfg = load_config("grpo", micro_run(micro_base, *QUIET, *tree, "train.steps=1"))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    (kw,) = calls
    if rule == "value":  # the run's critic, called on the layer's completions
        assert isinstance(kw["value_fn"], ProbeValue) and kw["explore"] == 0.5
    else:  # a rule that reads no values: no critic forward at rollout time
        assert kw["value_fn"] is None and kw["explore"] == 0.0


def test_branching_trains_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    extra = [*QUIET, *TREE, *dense_reward, "rollout.branch_top_k=2", "rollout.branch_depth=2"]

    def cfg(steps):
        return load_config("grpo", micro_run(micro_base, *extra, f"train.steps={steps}"))

    train(cfg(4), run_dir=tmp_path / "a", progress=False)
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    train(cfg(4), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k


def test_branching_with_a_knapsack_allocation_keeps_each_group_size(micro_base, tmp_path, dense_reward):
    seen = []
    real = rounds.generate_branched

    def spy(model, prompts, sizes, **kw):
        roll = real(model, prompts, sizes, **kw)
        seen.append((list(sizes), roll.group.tolist()))
        return roll

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rounds, "generate_branched", spy)
        extra = ["sampling.strategy='knapsack'", "sampling.pool_size=12", "train.steps=2"]
        cfg = load_config("grpo", micro_run(micro_base, *QUIET, *TREE, *dense_reward, *extra))
        train(cfg, run_dir=tmp_path / "run", progress=False)
    assert seen
    for sizes, group in seen:
        assert group == [i for i, s in enumerate(sizes) for _ in range(s)]


def test_branching_config_errors(micro_base):
    def load(*extra):
        return load_config("grpo", micro_run(micro_base, *extra))

    rules = r"'entropy', 'low_prob', 'step', 'uniform', 'value'"
    with pytest.raises(
        ConfigError, match=rf"'rollout.branching' = 'mcts'; expected '' .* branch-point rule: {rules}$"
    ):
        load("rollout.branching='mcts'")
    with pytest.raises(ConfigError, match=r"'rollout.branch_max_prob' = 0.5 is a knob of .*'low_prob'"):
        load(*TREE, "rollout.branch_max_prob=0.5")  # a knob of another rule than the chosen one
    with pytest.raises(ConfigError, match=r"'rollout.branch_threshold' = 0.5 is a knob of .*'entropy'"):
        load("rollout.branching='uniform'", "rollout.branch_threshold=0.5")
    with pytest.raises(ConfigError, match=r"'rollout.branch_max_prob' = 0.0 is out of range"):
        load("rollout.branching='low_prob'", "rollout.branch_max_prob=0")
    with pytest.raises(ConfigError, match=r"'rollout.branching' = 'value' needs values from a critic"):
        load("rollout.branching='value'")
    with pytest.raises(ConfigError, match=r"'rollout.branch_explore' = 0.5 is a knob of .*'value'"):
        load(*TREE, "rollout.branch_explore=0.5")
    with pytest.raises(ConfigError, match=r"'rollout.branch_explore' = -1.0 is out of range"):
        load("rollout.branching='value'", "critic.enabled=true", "rollout.branch_explore=-1.0")
    with pytest.raises(ConfigError, match=r"'rollout.branch_delimiter' = ''; expected a non-empty"):
        load("rollout.branching='step'", "rollout.branch_delimiter=''")
    assert load("rollout.branching='low_prob'", "rollout.branch_max_prob=0.5").rollout.branching == (
        "low_prob"
    )
    from rlvr.rollout.branch_points import BRANCH_POINTS

    @BRANCH_POINTS.register("needs_rewards", needs={"rewards"})
    def needs_rewards(lengths, first, *, rewards=None, top_k: int = 1):
        return [[] for _ in lengths]

    try:
        with pytest.raises(ConfigError, match=r"'needs_rewards' needs rewards, which a branching"):
            load("rollout.branching='needs_rewards'")
    finally:
        BRANCH_POINTS._items.pop("needs_rewards")
    with pytest.raises(ConfigError, match=r"branch_roots' = 0 is out of range"):
        load(*TREE, "rollout.branch_roots=0")
    for bad, named in (
        ("scale.workers=1", "scale.workers = 1"),
        ("scale.learners=2", "scale.learners = 2"),
    ):
        with pytest.raises(
            ConfigError, match=rf"'rollout.branching' = 'entropy' does not combine with {named}"
        ):
            load(*TREE, bad)
    env = [
        "task.source='env'",
        "task.env='gridworld'",
        "task.verifier='env_success'",
        "rewards={answer = {weight = 0.0}, format = {weight = 0.0}, env = {weight = 1.0}}",
    ]
    with pytest.raises(ConfigError, match=r"does not combine with task.source = 'env'"):
        load(*TREE, *env)
    assert load(*TREE).rollout.branching == "entropy"
    assert load().rollout.branching == ""  # the default: i.i.d. groups
    assert rounds.branch_knobs(load(), 1) is None
    assert rounds.branch_knobs(load(*TREE, "rollout.branch_steps=3"), 4) is None
    assert rounds.branch_knobs(load(*TREE), 10**6) == {
        "points": "entropy",
        "roots": 2,
        "width": 2,
        "top_k": 1,
        "threshold": 0.0,
        "max_prob": 0.9,
        "explore": 0.0,
        "depth": 1,
    }
