"""OPRL: the implicit PRM's trajectory-DPO loss (prm.loss = "dpo"), the `oprl` / `oprl_turns` credit
assigners and their steps, and the DPO-trained [prm] in the loop (single-turn and one env step)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.algos import CREDIT
from rlvr.algos.advantages import grpo
from rlvr.algos.credit import implicit_prm_dpo_loss, oprl, oprl_turns, step_ids
from rlvr.registry import KnobError
from rlvr.rollout import sequence_logp
from rlvr.train.config import ConfigError, load_config
from rlvr.train.learner import Learner
from rlvr.train.setup import setup_run
from rlvr.train.trainer import train


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **({"rtol": 1e-5, "atol": 1e-6} | kw))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- the trajectory-DPO loss


def test_dpo_loss_hand_values_and_gradient():
    # group 0: rows 0, 1, 2 with outcomes 1, 0, 1 -> pairs (0, 1), (2, 1); group 1: rows 3, 4 tied
    prm = torch.tensor(
        [[-1.0, -2.0], [-0.5, -0.5], [-1.0, 0.0], [-3.0, -3.0], [0.0, 0.0]], requires_grad=True
    )
    ref = torch.tensor([[-2.0, -1.0], [-1.5, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    outcomes = torch.tensor([1.0, 0.0, 1.0, 0.5, 0.5])
    group = torch.tensor([0, 0, 0, 1, 1])
    # s = 0.5 * (sum of counted log-ratios): s_0 = 0.5 (1 - 1) = 0, s_1 = 0.5 (1 + 0.5) = 0.75,
    # s_2 = 0.5 * 0 = 0 (its second token is masked); group 1 has no pair
    loss = implicit_prm_dpo_loss(prm, ref, mask, outcomes, group, beta=0.5)
    want = -math.log(sig(0 - 0.75))  # both pairs have the margin -0.75
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()
    # d/ds_w = -(1 - sig(m)) / P, d/ds_l = +(1 - sig(m)) / P, P = 2 pairs; d s_i / d prm = beta m
    d = (1 - sig(-0.75)) / 2
    grad = torch.tensor([[-d * 0.5] * 2, [2 * d * 0.5] * 2, [-d * 0.5, 0.0], [0.0] * 2, [0.0] * 2])
    close(prm.grad, grad)
    # a tied group adds nothing: the loss of group 0 alone is the same
    alone = implicit_prm_dpo_loss(prm[:3], ref[:3], mask[:3], outcomes[:3], group[:3], beta=0.5)
    assert float(alone.detach()) == pytest.approx(want, rel=1e-6)
    # a pair with a larger margin: (w, l) = (1, 0) after flipping the outcomes
    flipped = implicit_prm_dpo_loss(prm[:2], ref[:2], mask[:2], torch.tensor([0.0, 1.0]), group[:2])
    assert float(flipped.detach()) == pytest.approx(-math.log(sig(0.05 * 1.5)), rel=1e-6)


def test_dpo_loss_without_pairs_is_zero_with_zero_gradient():
    prm = torch.randn(4, 3, requires_grad=True)
    ref, mask = torch.randn(4, 3), torch.ones(4, 3)
    group = torch.tensor([0, 0, 1, 1])
    # ties inside each group; the unequal outcomes 1 and 0 are in different groups
    loss = implicit_prm_dpo_loss(prm, ref, mask, torch.tensor([1.0, 1.0, 0.0, 0.0]), group)
    assert float(loss) == 0.0
    loss.backward()
    assert torch.equal(prm.grad, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="outcomes must have shape"):
        implicit_prm_dpo_loss(prm, ref, mask, torch.ones(3), group)
    with pytest.raises(ValueError, match="group must have shape"):
        implicit_prm_dpo_loss(prm, ref, mask, torch.ones(4), group[:2])
    with pytest.raises(ValueError, match="beta must be > 0"):
        implicit_prm_dpo_loss(prm, ref, mask, torch.ones(4), group, beta=0.0)


# ---------------------------------------------------------------- steps and credit:oprl


def test_step_ids_by_delimiter_token_and_turn():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    ids = torch.tensor([[5, 9, 5, 9], [9, 5, 0, 0]])
    assert step_ids(mask, completion_ids=ids, step_token=9).tolist() == [[0, 0, 1, -1], [0, 1, -1, -1]]
    assert step_ids(mask).tolist() == [[0, 1, 2, -1], [0, 1, -1, -1]]
    turn = torch.tensor([[1, 0, 2, 0], [1, 1, 0, 0]])  # position 1 of row 0: an environment token
    mask_env = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert step_ids(mask_env, turn=turn).tolist() == [[0, -1, 1, -1], [0, 0, -1, -1]]
    with pytest.raises(ValueError, match="step_token needs completion_ids"):
        step_ids(mask, step_token=3)


def test_oprl_hand_values():
    rewards = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    ids = torch.tensor([[5, 9, 5, 0], [9, 5, 0, 0]])
    r = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, -0.5, 0.0, 0.0]])  # the 9 sits on a masked position
    # steps at token 9: row 0 (0.1 + 0.2, 0.3), row 1 (0.4, -0.5); over the 4 steps: mean 0.125,
    # deviations 0.175, 0.175, 0.275, -0.625, unbiased variance 0.52750 / 3
    std = math.sqrt(0.5275 / 3)
    a_s = [0.175 / std, 0.175 / std, 0.275 / std, -0.625 / std]
    g = 0.5 / (math.sqrt(0.5) + 1e-6)
    out = oprl(rewards, mask, implicit_rewards=r, completion_ids=ids, step_token=9, eps=0.0)
    want = torch.tensor([[g + a_s[0]] * 2 + [g + a_s[1], 0.0], [-g + a_s[2], -g + a_s[3], 0.0, 0.0]])
    close(out, want)
    # per token (step_token = -1), no outcome term, step_coef 2: 5 steps 0.1, 0.2, 0.3, 0.4, -0.5
    vals = torch.tensor([0.1, 0.2, 0.3, 0.4, -0.5], dtype=torch.float64)
    z = ((vals - vals.mean()) / vals.std()).float()
    tok = oprl(rewards, mask, implicit_rewards=r, outcome_coef=0.0, step_coef=2.0, eps=0.0)
    close(tok, 2 * torch.tensor([[z[0], z[1], z[2], 0.0], [z[3], z[4], 0.0, 0.0]]))
    # equal step rewards everywhere: the step term is 0
    flat = oprl(rewards, mask, implicit_rewards=torch.full((2, 4), 0.3), outcome_coef=0.0)
    assert torch.equal(flat, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="oprl needs 'implicit_rewards'"):
        oprl(rewards, mask)


def test_oprl_turns_credits_each_model_turn():
    rewards = torch.tensor([[1.0, 0.0]])
    turn = torch.tensor([[1, 0, 2, 2], [1, 1, 0, 0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    r = torch.tensor([[0.5, 7.0, 0.25, 0.25], [-0.5, 0.0, 0.0, 0.0]])  # 7: an environment token
    # turn rewards: row 0 (0.5, 0.5), row 1 (-0.5): mean 1/6, deviations 1/3, 1/3, -2/3, var 1/3
    s = math.sqrt(1 / 3)
    out = oprl_turns(rewards, mask, implicit_rewards=r, turn=turn, outcome_coef=0.0, eps=0.0)
    close(out, torch.tensor([[1 / 3 / s, 0.0, 1 / 3 / s, 1 / 3 / s], [-2 / 3 / s] * 2 + [0.0] * 2]))
    with pytest.raises(ValueError, match="oprl_turns needs 'turn'"):
        oprl_turns(rewards, mask, implicit_rewards=r)


def test_oprl_step_coef_zero_is_grpo_to_the_bit():
    gen = torch.Generator().manual_seed(5)
    rewards = torch.rand(4, 5, generator=gen)
    rewards[1] = 0.5  # a constant group
    mask = (torch.rand(20, 7, generator=gen) > 0.3).float()
    ids = torch.randint(0, 4, (20, 7), generator=gen)
    turn = torch.randint(0, 3, (20, 7), generator=gen)
    want = torch.where(mask.bool(), grpo(rewards).reshape(-1, 1), 0.0)
    for r in (torch.randn(20, 7, generator=gen), None):  # not read at step_coef = 0
        got = oprl(rewards, mask, implicit_rewards=r, completion_ids=ids, step_token=2, step_coef=0.0)
        assert torch.equal(got, want)
        assert torch.equal(oprl_turns(rewards, mask, implicit_rewards=r, step_coef=0.0), want)
        assert torch.equal(oprl_turns(rewards, mask, implicit_rewards=r, turn=turn, step_coef=0), want)


@pytest.mark.parametrize("step_token", [-1, 2])
def test_oprl_equals_a_plain_loop(step_token):
    gen = torch.Generator().manual_seed(13)
    b, g, t = 2, 3, 6
    rewards = (torch.rand(b, g, generator=gen) > 0.5).float()
    rewards[0] = torch.tensor([1.0, 0.0, 1.0])
    mask = (torch.rand(b * g, t, generator=gen) > 0.2).float()
    ids = torch.randint(0, 4, (b * g, t), generator=gen)
    r = torch.randn(b * g, t, generator=gen)
    out = oprl(
        rewards, mask, implicit_rewards=r, completion_ids=ids, step_token=step_token,
        step_coef=0.7, outcome_coef=1.3,
    )  # fmt: skip
    outcome = grpo(rewards).reshape(-1)
    steps: dict[tuple[int, int], float] = {}  # (row, step) -> summed implicit reward
    where: dict[tuple[int, int], int] = {}
    for i in range(b * g):
        k = 0
        for s in range(t):
            if not mask[i, s]:
                continue
            steps[(i, k)] = steps.get((i, k), 0.0) + float(r[i, s])
            where[(i, s)] = k
            if step_token < 0 or int(ids[i, s]) == step_token:
                k += 1
    vals = list(steps.values())
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    for i in range(b * g):
        for s in range(t):
            if not mask[i, s]:
                assert float(out[i, s]) == 0.0
                continue
            a_s = (steps[(i, where[(i, s)])] - mean) / (std + 1e-6)
            assert float(out[i, s]) == pytest.approx(1.3 * float(outcome[i]) + 0.7 * a_s, abs=1e-5)


def test_oprl_registry_and_knob_bounds():
    assert CREDIT["oprl"] is oprl and CREDIT.needs("oprl") == {"implicit_rewards", "completion_ids"}
    assert CREDIT.needs("oprl_turns") == {"implicit_rewards", "turn"}
    for knobs in ({"step_coef": -1.0}, {"outcome_coef": -0.1}, {"step_token": -2}, {"eps": -1.0}):
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("oprl", knobs)


# ---------------------------------------------------------------- config and the loop


def test_config_refuses_bad_prm_loss_and_missing_prm():
    assert load_config("oprl").prm.loss == "dpo" and load_config("prime").prm.loss == "ce"
    with pytest.raises(ConfigError, match=r"'prm\.loss' = 'kto'; expected 'ce' or 'dpo'"):
        load_config("oprl", ["prm.loss='kto'"])
    with pytest.raises(ConfigError, match=r"needs implicit_rewards from an implicit PRM"):
        load_config("grpo", ["algo.credit='oprl'"])
    with pytest.raises(ConfigError, match=r"needs task\.source = 'env'"):
        load_config("oprl", ["algo.credit='oprl_turns'"])


def test_the_dpo_prm_learns_the_group_order(micro_base, tmp_path):
    """One DPO update on a real micro rollout with set rewards: the PRM starts as the reference (loss
    log 2 on every pair), the update lowers the loss and orders the pairs; only pairs inside a group
    with different rewards count, and whole groups stay in one mini-batch."""
    cfg = load_config("oprl", micro_run(micro_base, "eval.before=false", "prm.lr=1e-2"))
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        state = run.state
        roll = run.collector.collect(1).batch.roll
        roll.ref_logp = sequence_logp(
            run.ref, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention
        )[0].detach()
        roll.rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.2, 0.2, 0.2, 0.2])  # group 1 tied
        learner = Learner(
            run.model, run.optimizer, run.comps, cfg, prm=state.prm, prm_optimizer=state.prm_optimizer
        )
        rows_in = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention)

        def loss_now() -> float:
            with torch.no_grad():
                logp = sequence_logp(state.prm, *rows_in)[0]
            return float(implicit_prm_dpo_loss(logp, roll.ref_logp, roll.mask, roll.rewards, roll.group))

        before = loss_now()
        assert before == pytest.approx(math.log(2), rel=1e-5)
        out = learner.update_prm(roll, torch.zeros(8))  # the verifier's labels are not read
        # pairs: (0, 1), (0, 2), (0, 3), (3, 1), (3, 2) in group 0, none in group 1
        assert out["prm_pairs"] == 5.0
        assert out["prm_acc"] == 0.5  # the PRM is the reference: every pair a tie, half right
        assert out["prm_loss"] == pytest.approx(before, rel=1e-6)
        assert loss_now() < before
    finally:
        run.collector.rounds.close()


def test_one_training_step_single_turn_and_env(micro_base, tmp_path, dense_reward):
    """recipe/oprl trains on single-turn tasks (the golden case holds its numbers) and with
    credit = 'oprl_turns' on the gridworld environment: finite losses, a PRM update with metrics."""
    cfg = load_config(
        "oprl", micro_run(micro_base, *dense_reward, "eval.before=false", "eval.after=false",
                          "train.steps=1")
    )  # fmt: skip
    train(cfg, run_dir=tmp_path / "a", progress=False)
    env = [
        "task.source='env'",
        "task.env='gridworld'",
        "task.verifier='env_success'",
        "rewards={answer = {weight = 0.0}, format = {weight = 0.0}, env = {weight = 1.0}}",
        "task.heldout_size=4",
        "rollout.max_new_tokens=8",
        "rollout.max_turns=3",
        "algo.credit='oprl_turns'",
    ]
    cfg_env = load_config(
        "oprl",
        micro_run(micro_base, *env, "eval.before=false", "eval.after=false", "train.steps=1"),
    )
    train(cfg_env, run_dir=tmp_path / "b", progress=False)
    for d in ("a", "b"):
        (m,) = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        assert math.isfinite(m["loss"]) and math.isfinite(m["prm_loss"]) and "prm_pairs" in m


def test_step_coef_zero_trains_as_grpo(micro_base, tmp_path, dense_reward):
    """The neutral setting in the loop: oprl with step_coef = 0 updates the policy exactly as grpo
    (the PRM's forwards and DPO update draw no random numbers and leave the policy alone); adv_std
    is not compared: it is taken over tokens for a credit assigner, over completions for grpo."""
    extra = ["eval.before=false", "eval.after=false", "train.steps=2", "optim.lr=1e-2"]
    runs = {
        "grpo": load_config("grpo", micro_run(micro_base, *dense_reward, *extra)),
        "oprl": load_config("oprl", micro_run(micro_base, *dense_reward, *extra, "algo.step_coef=0.0")),
    }
    out = {}
    for name, cfg in runs.items():
        train(cfg, run_dir=tmp_path / name, progress=False)
        out[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(out["grpo"], out["oprl"], strict=True):
        for k in ("loss", "grad_norm", "reward_mean", "entropy", "response_length"):
            assert a[k] == b[k], k
    assert "prm_loss" in out["oprl"][0] and "prm_loss" not in out["grpo"][0]
