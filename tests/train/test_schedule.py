"""The recipe's ``[schedule]``: curves by hand, validation, and real runs whose settings follow it."""

from __future__ import annotations

import itertools
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import micro_run

import rlvr.train.rounds as rounds_module
from rlvr.train.components import build_components
from rlvr.train.config import ConfigError, load_config
from rlvr.train.schedule import Curve, bind_schedule, parse_curve, schedule_fields
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}


def test_curves_by_hand():
    lin = Curve(((1, 10.0), (5, 2.0)))
    assert [lin(s) for s in (0, 1, 2, 3, 5, 9)] == [10.0, 10.0, 8.0, 6.0, 2.0, 2.0]
    cos = Curve(((1, 1.0), (3, 0.0)), kind="cosine")
    # p = 1/2 at step 2: 1 + (0 - 1) (1 - cos(pi/2)) / 2 = 0.5; p = 1/4 needs 5 steps
    assert cos(1) == 1.0 and cos(2) == pytest.approx(0.5) and cos(3) == 0.0
    cos5 = Curve(((1, 1.0), (5, 0.0)), kind="cosine")
    assert cos5(2) == pytest.approx(1 - (1 - math.cos(math.pi / 4)) / 2)
    stp = Curve(((1, 8.0), (3, 4.0), (6, 2.0)), kind="step")
    assert [stp(s) for s in range(1, 8)] == [8.0, 8.0, 4.0, 4.0, 4.0, 2.0, 2.0]
    # integers: interpolated values rounded to the nearest integer, halves up
    cap = Curve(((1, 96), (5, 48)), integer=True)
    assert [cap(s) for s in range(1, 6)] == [96, 84, 72, 60, 48]
    odd = Curve(((1, 5), (3, 2)), integer=True)  # 5, 3.5, 2
    assert [odd(s) for s in (1, 2, 3)] == [5, 4, 2] and isinstance(odd(2), int)
    one = parse_curve("x", [[4, 0.3]], integer=False, bound=None)  # one point: a constant
    assert one(1) == one(4) == one(100) == 0.3


def test_schedule_fields_from_a_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'extends = "grpo"\n[schedule]\n"rollout.max_new_tokens" = [[1, 12], [3, 4]]\n'
        'rewards.format.weight = {points = [[1, 0.1], [3, 0.0]], kind = "step"}\n'
    )
    cfg = load_config(str(recipe), ["schedule.algo.clip_high=[[1, 0.2], [2, 0.3]]"])
    # nested or quoted keys: stored as dotted field names
    assert sorted(cfg.schedule) == ["algo.clip_high", "rewards.format.weight", "rollout.max_new_tokens"]
    curves = schedule_fields(cfg)
    assert curves["rollout.max_new_tokens"].integer and curves["rollout.max_new_tokens"](2) == 8
    assert curves["rewards.format.weight"](2) == 0.1 and curves["rewards.format.weight"](3) == 0.0
    assert curves["algo.clip_high"](5) == pytest.approx(0.3)
    assert load_config("grpo").schedule == {}  # none by default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("schedule.rollout.temperature=[[1, 1.0]]", "unknown field 'schedule.rollout.temperature'"),
        ("schedule.optim.lr=[[1, 0.1]]", "(the learning rate: optim.schedule)"),
        ("schedule.algo.scale=[[1, 1]]", "'schedule.algo.scale': only a numeric field"),
        ("schedule.algo.nope=[[1, 1]]", "'schedule.algo.nope': 'nope' is not a schedulable field"),
        ("schedule.rollout.max_new_tokens=[[1, 12], [1, 4]]", "steps must increase; step 1 follows"),
        ("schedule.rollout.max_new_tokens=[[3, 12], [2, 4]]", "step 2 follows step 3"),
        ("schedule.rollout.max_new_tokens=[[1, 12], [3, 4.5]]", "is an integer field: value 4.5"),
        ("schedule.rollout.max_new_tokens=[[1, 12], [3, 0]]", "value 0 at step 3 is out of range"),
        ("schedule.rollout.max_new_tokens=[[0, 12]]", "a point's step must be an integer >= 1"),
        ("schedule.rollout.max_new_tokens=[]", "must be a non-empty list of [step, value] points"),
        ("schedule.rollout.max_new_tokens=[[1, 'a']]", "a point's value must be a number"),
        ("schedule.rollout.max_new_tokens=[[1, 2, 3]]", "each point must be [step, value]"),
        ("schedule.algo.beta={points=[[1, 0.1]], kind='exp'}", "kind = 'exp'; expected one of"),
        ("schedule.algo.beta={points=[[1, 0.1]], shape=1}", "unknown key(s) shape"),
        ("schedule.algo.beta=[[1, -0.1]]", "'schedule.algo.beta': value -0.1 at step 1 is out of range"),
        ("schedule.rewards.nope.weight=[[1, 1.0]]", "the recipe has no reward 'nope'"),
        ("schedule.shaping.overlong.buffer=[[1, 2]]", "the recipe has no shaping 'overlong'"),
        ("schedule.algo.clip_high=[[1, 0.2], [4, -1.0]]", "'schedule.algo.clip_high' at step 4:"),
    ],
)
def test_schedule_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("grpo", [override])


def test_schedule_errors_with_the_rest_of_the_recipe():
    with pytest.raises(ConfigError, match=re.escape("adapts with algo.kl_target > 0")):
        load_config("grpo", ["algo.beta=0.1", "algo.kl_target=1.0", "schedule.algo.beta=[[1, 0.1]]"])
    with pytest.raises(ConfigError, match=re.escape("is an integer field: value 0.5 at step 2")):
        load_config(
            "grpo", ["shaping.overlong.buffer=2", "schedule.shaping.overlong.buffer=[[1, 2], [2, 0.5]]"]
        )
    with pytest.raises(ConfigError, match=re.escape("'buffer' of reward shaping 'overlong' = 0")):
        load_config("grpo", ["shaping.overlong.buffer=2", "schedule.shaping.overlong.buffer=[[1, 0]]"])
    # a buffer above the step's cap: the shaping's own check, at the step where they conflict
    with pytest.raises(ConfigError, match=re.escape("'shaping.overlong' at step 5 of [schedule]")):
        load_config(
            "grpo",
            [
                "shaping.overlong.buffer=4",
                "schedule.rollout.max_new_tokens=[[1, 12], [5, 3]]",
            ],
        )
    with pytest.raises(ConfigError, match=re.escape("'nope' is not a knob of shaping 'overlong'")):
        load_config("grpo", ["shaping.overlong.buffer=2", "schedule.shaping.overlong.nope=[[1, 2]]"])


def test_bind_writes_each_value_where_the_step_reads_it():
    cfg = load_config(
        "grpo",
        [
            "shaping.overlong.buffer=4",
            "schedule.rollout.max_new_tokens=[[1, 12], [3, 4]]",
            "schedule.rewards.format.weight=[[1, 0.1], [3, 0.3]]",
            "schedule.shaping.overlong.buffer=[[1, 4], [3, 2]]",
            "schedule.algo.clip_high=[[1, 0.2], [3, 0.4]]",  # not set in [algo]: routed anyway
            "schedule.algo.beta=[[1, 0.0], [3, 0.2]]",
            "schedule.algo.entropy_coef=[[2, 0.01]]",
        ],
    )
    comps = build_components(cfg)
    scorer = SimpleNamespace(
        weights=torch.tensor([1.0, 0.1]), shapers=[(None, {"buffer": 4})], max_len=12
    )
    rounds = SimpleNamespace(scorer=scorer, max_new_tokens=12)
    adv = SimpleNamespace(reward_weights=torch.tensor([1.0, 0.1]))
    learner, state = SimpleNamespace(entropy_coef=0.0), SimpleNamespace(kl_coef=0.0)
    sched = bind_schedule(cfg, rounds=rounds, advantages=adv, learner=learner, comps=comps, state=state)
    m = sched(2)
    assert m == {
        "schedule/rollout.max_new_tokens": 8.0,
        "schedule/rewards.format.weight": pytest.approx(0.2),
        "schedule/shaping.overlong.buffer": 3.0,
        "schedule/algo.clip_high": pytest.approx(0.3),
        "schedule/algo.beta": pytest.approx(0.1),
        "schedule/algo.entropy_coef": 0.01,
    }
    assert rounds.max_new_tokens == scorer.max_len == 8 and isinstance(rounds.max_new_tokens, int)
    assert scorer.weights.tolist() == pytest.approx([1.0, 0.2])
    assert adv.reward_weights.tolist() == pytest.approx([1.0, 0.2])
    assert scorer.shapers[0][1] == {"buffer": 3}
    assert comps.kwargs["objective"]["clip_high"] == pytest.approx(0.3)
    assert "clip_high" not in comps.kwargs["advantage"]
    assert state.kl_coef == pytest.approx(0.1) and learner.entropy_coef == 0.01
    assert not bind_schedule(
        load_config("grpo"), rounds=rounds, advantages=adv, learner=learner, comps=comps, state=state
    )


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base,
            "eval.samples=2",
            "eval.max_new_tokens=6",
            "eval.before=false",
            "train.checkpoint_every=2",
            "optim.lr=1e-3",
            *extra,
        ),
    )


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


SCHEDULE = (
    "schedule.rollout.max_new_tokens=[[1, 6], [3, 2]]",
    "schedule.rewards.format.weight={points=[[1, 0.1], [3, 0.5]], kind='cosine'}",
    "schedule.algo.beta=[[1, 0.0], [3, 0.1]]",  # rises from 0: the reference is loaded
)


def test_a_run_follows_its_schedule(micro_base, tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []  # (max_new_tokens asked, longest completion) per generate call
    real = rounds_module.generate

    def spy(*args, **kw):
        roll = real(*args, **kw)
        seen.append((kw["max_new_tokens"], int(roll.lengths.max())))
        return roll

    monkeypatch.setattr(rounds_module, "generate", spy)
    cfg = _cfg(micro_base, "train.steps=3", "train.samples_every=1", *SCHEDULE)
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    assert [r["schedule/rollout.max_new_tokens"] for r in rows] == [6.0, 4.0, 2.0]
    assert [c for c, _ in seen] == [6, 4, 2]
    assert all(longest <= cap for cap, longest in seen)
    assert seen[-1][1] == 2  # the micro model runs on: the 2-token cap cuts it
    assert [r["schedule/rewards.format.weight"] for r in rows] == pytest.approx([0.1, 0.3, 0.5])
    assert [r["kl_coef"] for r in rows] == pytest.approx([0.0, 0.05, 0.1])
    assert "kl" in rows[-1]  # the reference exists although algo.beta = 0
    # the format reward's weight of each step is the one in the combined reward
    samples = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples
    for s in samples:
        w = rows[s["step"] - 1]["schedule/rewards.format.weight"]
        parts = s["reward_parts"]
        assert s["reward"] == pytest.approx(parts["answer"] + w * parts["format"], abs=1e-6)


def test_resume_mid_schedule_equals_an_uninterrupted_run(micro_base, tmp_path):
    extra = (
        "schedule.rollout.max_new_tokens=[[1, 6], [4, 3]]",
        "schedule.algo.entropy_coef=[[1, 0.0], [4, 0.03]]",
    )
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["schedule/rollout.max_new_tokens"] for r in a] == [6.0, 5.0, 4.0, 3.0]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k


# ---------------------------------------------------------------- [reward_weights]: a controller


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["reward_weights.controller='nope'"], "unknown reward-weight controller 'nope'"),
        (["reward_weights.lr=0.1"], "[reward_weights] has knobs (lr) but no controller"),
        (
            ["reward_weights.controller='lagrange'", "reward_weights.rate=0.1"],
            "'reward_weights.rate' is not a knob of 'lagrange'",
        ),
        (
            ["reward_weights.controller='lagrange'", "reward_weights.lr=-1.0"],
            "'reward_weights.lr'",
        ),
        (
            ["reward_weights.controller='lagrange'", "reward_weights.at_most={nope = 0.5}"],
            "'reward_weights': lagrange at_most: 'nope' is not a reward component",
        ),
        (
            [
                "reward_weights.controller='lagrange'",
                "reward_weights.at_most={format = 0.5}",
                "schedule.rewards.format.weight=[[1, 0.1]]",
            ],
            "they cannot also follow [schedule] (rewards.format.weight)",
        ),
    ],
)
def test_reward_weights_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("grpo", overrides)


LAGRANGE = (
    "reward_weights.controller='lagrange'",
    "reward_weights.at_most={length = 0.2}",  # the dense length reward: kept below 0.2
    "reward_weights.lr=2.0",
)


def test_lagrange_weights_follow_the_component_means(micro_base, tmp_path, dense_reward):
    from rlvr.algos.reward_weights import lagrange

    train(
        _cfg(micro_base, "train.steps=3", *dense_reward, *LAGRANGE),
        run_dir=tmp_path / "run",
        progress=False,
    )
    rows = _metrics(tmp_path / "run")
    names = ("answer", "format", "length")
    base = torch.tensor([0.0, 0.1, 0.9])
    assert [rows[0][f"reward_weight/{n}"] for n in names] == pytest.approx(base.tolist())
    state = {"weights": base}
    for prev, row in itertools.pairwise(rows):  # each step's weights from the last's means
        means = torch.tensor([prev[f"reward/{n}"] for n in names])
        state = lagrange(state, means, base=base, names=names, at_most={"length": 0.2}, lr=2.0)
        assert [row[f"reward_weight/{n}"] for n in names] == pytest.approx(state["weights"].tolist())
    assert rows[1]["reward_weight/length"] < 0.9  # the micro model's completions exceed 0.2
    st = torch.load(tmp_path / "run" / "checkpoints" / "step_3" / "trainer_state.pt", weights_only=False)
    assert st["reward_weights"]["weights"].shape == (3,)


READINESS = (
    "reward_weights.controller='readiness'",
    "reward_weights.stages=[{length = 0.3, answer = 0.6}]",
    "reward_weights.track='length'",
    "reward_weights.threshold=0.1",
    "reward_weights.window=2",
)


def test_readiness_moves_to_the_next_stage_when_ready(micro_base, tmp_path, dense_reward):
    train(
        _cfg(micro_base, "train.steps=4", *dense_reward, *READINESS),
        run_dir=tmp_path / "run",
        progress=False,
    )
    rows = _metrics(tmp_path / "run")
    assert all(r["reward/length"] >= 0.1 for r in rows[:2])  # the micro model is ready at once
    # steps 1, 2 fill the window; the stage changes after step 2, so step 3 uses its weights
    weights = [r[f"reward_weight/{n}"] for r in rows for n in ("answer", "format", "length")]
    assert weights == pytest.approx([0.0, 0.1, 0.9] * 2 + [0.6, 0.1, 0.3] * 2)
    assert [r.get("reward_weights/stage") for r in rows] == [None, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("controller", [LAGRANGE, READINESS], ids=["lagrange", "readiness"])
def test_reward_weights_resume_exactly(micro_base, tmp_path, dense_reward, controller):
    extra = (*dense_reward, *controller)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert len({r["reward_weight/length"] for r in a}) > 1  # the weights did move
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
