"""Real training steps on the micro model: smoke, resume, direction of the update, accumulation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.rollout import generate, sequence_logp
from rlvr.train.checkpoint import latest_checkpoint
from rlvr.train.components import build_components
from rlvr.train.config import load_config
from rlvr.train.learner import Learner
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base,
            "eval.samples=2",
            "eval.max_new_tokens=6",
            "train.checkpoint_every=2",
            "optim.lr=1e-3",
            *extra,
        ),
    )


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_step_smoke(micro_base, tmp_path):
    cfg = _cfg(micro_base, "train.steps=2")
    summary = train(cfg, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    rows = _metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
        assert 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["zero_var_frac"] <= 1.0
    assert (run / "config.toml").exists() and (run / "samples.jsonl").exists()
    assert latest_checkpoint(run).name == "step_2"
    assert (run / "checkpoints" / "step_2" / "model.safetensors").exists()
    assert set(summary) >= {"before", "after", "pass@1_gain", "pass@1_gain_ci"}
    assert 0.0 <= summary["after"]["pass@1"] <= 1.0
    assert sum(summary["boundary"].values()) == 16  # every held-out problem in one class


def test_resume_equals_uninterrupted(micro_base, tmp_path):
    full = train(_cfg(micro_base, "train.steps=4"), run_dir=tmp_path / "a", progress=False)
    train(_cfg(micro_base, "train.steps=2"), run_dir=tmp_path / "b", progress=False)
    resumed = train(
        _cfg(micro_base, "train.steps=4"), run_dir=tmp_path / "b", resume=True, progress=False
    )
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    from safetensors.torch import load_file

    pa = load_file(tmp_path / "a" / "checkpoints" / "step_4" / "model.safetensors")
    pb = load_file(tmp_path / "b" / "checkpoints" / "step_4" / "model.safetensors")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-6, atol=1e-7)
    assert full["after"] == resumed["after"]


def _rollout(model, tok, g=4):
    ids = [
        tok("<|user|>1 + 2 =<|end|><|assistant|>", add_special_tokens=False)["input_ids"],
        tok("<|user|>7 - 3 =<|end|><|assistant|>", add_special_tokens=False)["input_ids"],
    ]
    gen = torch.Generator().manual_seed(0)
    return generate(
        model,
        ids,
        num_samples=g,
        max_new_tokens=6,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=gen,
    )


@pytest.mark.parametrize("objective", ["reinforce", "ppo_clip"])
def test_update_moves_policy_toward_positive_advantages(micro_base, micro_model, objective):
    model, tok = micro_model
    cfg = _cfg(micro_base, f"algo.objective='{objective}'")
    roll = _rollout(model, tok)
    adv = torch.tensor([1.0, -1.0] * 4)  # [N]: alternate good and bad samples
    with torch.no_grad():
        before, _ = sequence_logp(
            model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.mask
        )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = Learner(model, opt, build_components(cfg), cfg).update_policy(roll, adv, torch.Generator())
    assert math.isfinite(out["loss"])
    with torch.no_grad():
        after, _ = sequence_logp(
            model, roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.mask
        )
    delta = ((after - before) * roll.mask).sum(-1)  # [N] change of sequence log-prob
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()


def test_micro_batches_give_the_same_update(micro_base, micro_model):
    model, tok = micro_model
    roll = _rollout(model, tok)
    adv = torch.linspace(-1, 1, 8)
    params = []
    for micro in (1, 2, 4):
        cfg = _cfg(micro_base, f"algo.micro_batches={micro}", "optim.grad_clip=0")
        m = type(model).from_pretrained(micro_base)
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        Learner(m, opt, build_components(cfg), cfg).update_policy(roll, adv, torch.Generator())
        params.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    torch.testing.assert_close(params[0], params[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(params[0], params[2], rtol=1e-5, atol=1e-6)


def test_kl_penalty_loads_reference_and_logs_kl(micro_base, tmp_path):
    cfg = _cfg(micro_base, "train.steps=2", "algo.beta=0.1", "eval.before=false", "eval.after=false")
    train(cfg, run_dir=tmp_path / "kl", progress=False)
    rows = _metrics(tmp_path / "kl")
    assert all("kl" in r for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference before step 1
    assert rows[1]["kl"] >= 0.0  # k3 is non-negative


def test_the_trainer_supplies_every_declared_input():
    """Each optional input that a component may declare has a supplier in the trainer."""
    from rlvr.algos import INPUTS
    from rlvr.algos.kl import KL_ESTIMATORS
    from rlvr.rollout import Rollout
    from rlvr.train.advantage import advantage_inputs, credit_inputs, token_inputs

    b, g, t, k = 2, 3, 4, 2
    n = b * g
    roll = Rollout(
        prompt_ids=torch.ones(n, 2, dtype=torch.long),
        prompt_mask=torch.ones(n, 2),
        completion_ids=torch.arange(n * t).view(n, t),
        mask=torch.tensor([[1.0, 1.0, 0.0, 0.0]] * n),
        old_logp=torch.full((n, t), -0.5),
        lengths=torch.full((n,), 2),
        finish=["eos"] * n,
        group=torch.arange(b).repeat_interleave(g),
        rewards=torch.arange(n, dtype=torch.float),
        reward_parts=torch.ones(n, k),
        ref_logp=torch.full((n, t), -1.0),
        greedy_rewards=torch.full((n,), 0.5),  # the greedy baseline stage's (remax)
        values=torch.zeros(n, t),  # the critic's
        turn=torch.ones(n, t, dtype=torch.long),  # a multi-turn episode's fields
        turn_rewards=torch.zeros(n, 1),
        turn_states=torch.ones(n, 1, dtype=torch.long),
        process_rewards=torch.zeros(n, t),  # a step reward's
        sum_pi_sq=torch.full((n, t), 0.4),  # the policy's own forward (optimal_token_baseline)
        teacher_logp=torch.full((n, t), -2.0),  # the teacher's forward (opd)
        seq_hidden=torch.zeros(n, 5),  # the policy's pooled hidden states (rep_bonus)
        implicit_rewards=torch.zeros(n, t),  # the implicit PRM's ([prm], prime)
        self_teacher_logp=torch.full((n, t), -0.25),  # the self-teacher's forward (srpo)
        self_teacher_entropy=torch.zeros(n, t),
        self_teacher_mask=torch.ones(n),
        demo=torch.zeros(n),  # the demonstration stage's flags (hybrid, rl_plus)
        demo_group=torch.zeros(n),
    )
    adv_in = advantage_inputs(roll, INPUTS["advantage"], b, g, torch.tensor([1.0, 0.1]))
    assert set(adv_in) == INPUTS["advantage"]
    assert adv_in["reward_parts"].shape == (b, g, k)
    torch.testing.assert_close(adv_in["seq_logp"], torch.full((b, g), -1.0))  # 2 tokens x -0.5
    torch.testing.assert_close(adv_in["seq_ref_logp"], torch.full((b, g), -2.0))
    torch.testing.assert_close(adv_in["lengths"], torch.full((b, g), 2.0))
    assert adv_in["seq_hidden"].shape == (b, g, 5)
    credit_in = credit_inputs(roll, INPUTS["credit"], KL_ESTIMATORS["k1"])
    assert set(credit_in) == INPUTS["credit"]
    torch.testing.assert_close(credit_in["kl"], torch.tensor([[0.5, 0.5, 0.0, 0.0]] * n))  # k1, masked
    assert credit_in["teacher_logp"] is roll.teacher_logp and credit_in["sum_pi_sq"] is roll.sum_pi_sq
    logp, ent = torch.zeros(n, t, requires_grad=True), torch.ones(n, t, requires_grad=True)
    for kind in ("objective", "token_weights"):
        tok_in = token_inputs(roll, INPUTS[kind], logp, ent)
        assert set(tok_in) == INPUTS[kind]
        assert all(not v.requires_grad for v in tok_in.values())


def test_lr_schedules_hand_values():
    from rlvr.train.learner import lr_at

    kw = {"lr": 1.0, "total": 11, "warmup": 1, "min_ratio": 0.1}
    assert [lr_at(s, schedule="constant", **kw) for s in (1, 2, 11)] == [1.0, 1.0, 1.0]
    # after 1 warm-up step, p = (step - 1) / 10
    assert lr_at(6, schedule="linear", **kw) == pytest.approx(1 - 0.9 * 0.5)
    assert lr_at(11, schedule="linear", **kw) == pytest.approx(0.1)
    assert lr_at(6, schedule="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(11, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(1, schedule="cosine", lr=2.0, total=10, warmup=4, min_ratio=0.0) == 0.5  # warm-up
    assert lr_at(50, schedule="linear", **kw) == pytest.approx(0.1)  # past the end: stays at the floor


def test_adaptive_kl_coef_hand_values():
    from rlvr.algos.kl import adaptive_kl_coef

    # e = clip(kl / target - 1, -0.2, 0.2); coef * (1 + e * n / horizon)
    assert adaptive_kl_coef(0.1, 0.15, target=0.1, horizon=100, n=10) == pytest.approx(0.1 * 1.02)
    assert adaptive_kl_coef(0.1, 5.0, target=0.1, horizon=100, n=10) == pytest.approx(0.1 * 1.02)
    assert adaptive_kl_coef(0.1, 0.0, target=0.1, horizon=10, n=10) == pytest.approx(0.08)
    assert adaptive_kl_coef(0.1, 0.1, target=0.1, horizon=10, n=10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="target > 0"):
        adaptive_kl_coef(0.1, 0.1, target=0.0, horizon=10, n=10)


def test_kl_in_the_reward_and_adaptive_coefficient(micro_base, tmp_path):
    cfg = _cfg(
        micro_base,
        "train.steps=3",
        "algo.beta=0.1",
        "algo.kl_in='reward'",
        "algo.kl_target=1.0",
        "algo.kl_horizon=8",
        "eval.before=false",
        "eval.after=false",
    )
    train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = _metrics(tmp_path / "run")
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # sampled by the reference itself
    assert rows[0]["kl_coef"] == pytest.approx(0.1)
    # KL 0 << target 1: e = -0.2, n = 8 sequences, horizon 8 -> the coefficient shrinks by 20%
    assert rows[1]["kl_coef"] == pytest.approx(0.08)
    assert rows[2]["kl_coef"] < rows[1]["kl_coef"]


def test_reference_reset_and_resume(micro_base, tmp_path, dense_reward):
    common = [
        "algo.beta=0.1",
        "algo.ref_reset_every=2",
        "eval.before=false",
        "eval.after=false",
        *dense_reward,  # a signal, so the policy moves
    ]
    train(_cfg(micro_base, "train.steps=4", *common), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    assert rows[1]["kl"] > 1e-6  # step 2: the policy has moved away from the base
    assert rows[2]["kl"] == pytest.approx(0.0, abs=1e-5)  # step 3: reference reset to the policy
    refs = sorted(p.name for p in (tmp_path / "a" / "references").iterdir())
    assert refs == ["step_2", "step_4"]
    # interrupted after step 3 (its checkpoint points at the reference of step 2), then resumed
    train(_cfg(micro_base, "train.steps=3", *common), run_dir=tmp_path / "b", progress=False)
    train(
        _cfg(micro_base, "train.steps=4", *common), run_dir=tmp_path / "b", resume=True, progress=False
    )
    resumed = _metrics(tmp_path / "b")
    for key in ("loss", "kl", "reward_mean"):
        assert resumed[3][key] == pytest.approx(rows[3][key], rel=1e-5, abs=1e-7)


def test_value_loss_hand_values():
    from rlvr.algos.credit import value_loss

    v = torch.tensor([[1.0, 0.0], [0.5, 9.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    ret = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the 9.0 is padding
    # unclipped: 1/2 * ((1-2)^2 + (0-1)^2 + (0.5-0)^2) / 3 = 1/2 * 2.25 / 3
    assert float(value_loss(v, old, ret, mask, clip=0.0).detach()) == pytest.approx(0.375)
    # clip 0.2: V_clip = [0.2, 0, 0.2]; max((1-2)^2, (0.2-2)^2) = 3.24, 1, max(.25, .04) = .25
    loss = value_loss(v, old, ret, mask, clip=0.2)
    assert float(loss.detach()) == pytest.approx(0.5 * (3.24 + 1.0 + 0.25) / 3)
    loss.backward()
    # row 0 token 0 is clipped (the clipped branch wins and is flat in V): no gradient there
    assert v.grad[0, 0] == 0.0 and v.grad[0, 1] != 0.0 and v.grad[1, 1] == 0.0


def test_value_model_shapes_zero_start_and_gradients(micro_base):
    from rlvr.models.critic import ValueModel

    critic = ValueModel(micro_base)
    prompt = torch.tensor([[0, 5, 6], [7, 8, 9]])
    pmask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    comp = torch.tensor([[3, 4, 0], [3, 3, 3]])
    cmask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    v = critic(prompt, pmask, comp, cmask)
    assert v.shape == (2, 3) and torch.all(v == 0)  # the head starts at zero
    torch.nn.init.normal_(critic.head.weight)
    v = critic(prompt, pmask, comp, cmask)
    assert v[0, 2] == 0 and v[0, 0] != 0  # masked positions are 0
    v.sum().backward()
    assert critic.head.weight.grad is not None and critic.head.weight.grad.abs().sum() > 0
    # the value before completion token t only sees the prompt and tokens < t (causal)
    other = critic(prompt, pmask, torch.tensor([[3, 1, 0], [3, 3, 2]]), cmask)
    torch.testing.assert_close(other[:, :2], v[:, :2].detach())


def test_ppo_with_critic_trains_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    def cfg(steps):
        return load_config(
            "ppo",
            micro_run(
                micro_base,
                "train.checkpoint_every=2",
                "optim.lr=1e-3",
                f"train.steps={steps}",
                "eval.before=false",
                "eval.after=false",
                *dense_reward,
            ),
        )

    train(cfg(3), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    assert all(math.isfinite(r["value_loss"]) for r in rows)
    assert rows[0]["value_mean"] == 0.0 and rows[2]["value_mean"] != 0.0  # the critic learns
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    train(cfg(3), run_dir=tmp_path / "b", resume=True, progress=False)
    resumed = _metrics(tmp_path / "b")
    for key in ("loss", "value_loss", "value_mean", "reward_mean"):
        assert resumed[2][key] == pytest.approx(rows[2][key], rel=1e-5, abs=1e-7)
