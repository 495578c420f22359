"""T-REG (``objective:treg``): online DPO plus a token-level regulariser that makes each token's
implicit reward follow the self-teacher's contrastive token rewards. Hand values, the neutral
setting, a plain loop, the wiring of ``self_teacher_logp`` into the objective and a short run."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import AGGREGATIONS, INPUTS, OBJECTIVES
from rlvr.registry import KnobError

close = torch.testing.assert_close
seq_mean = AGGREGATIONS["seq_mean_token_mean"]


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _pair_example():
    # one group of 3: rewards 0.2, 1.0, 0.0 -> chosen row 1, rejected row 2; log ratios to the
    # reference 0.5 and -1.5 -> h = 0.1 * 2 = 0.2. Token rewards u only on row 2 (the hinted,
    # failed row): [1, -2]
    logp = torch.tensor([[-1.0, -1.0], [-0.5, -1.0], [-2.0, -1.5]], requires_grad=True)
    old = logp.detach().clone()
    u = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, -2.0]])
    kw = dict(
        ref_logp=torch.full((3, 2), -1.0),
        rewards=torch.tensor([0.2, 1.0, 0.0]),
        group=torch.zeros(3, dtype=torch.long),
        self_teacher_logp=old + u,
    )
    return logp, old, torch.ones(3, 2), kw


def test_treg_hand_values_and_gradient():
    logp, old, mask, kw = _pair_example()
    stats: dict = {}
    loss = OBJECTIVES["treg"](logp, old, torch.zeros(3), mask, treg_coef=0.5, stats=stats, **kw)
    # z on row 2 = 0.1 * ([-2, -1.5] - -1) = [-0.1, -0.05]; u = [1, -2]:
    # R_l = ([softplus(0.1) - log 2] + [softplus(-0.1) - log 2]) / 2; R_w = 0 (u = 0 on row 1)
    r_l = (_softplus(0.1) + _softplus(-0.1) - 2 * math.log(2)) / 2
    half = (_softplus(-0.2) + 0.5 * r_l) / 2
    close(loss, torch.tensor([[0.0, 0.0], [half, half], [half, half]]))
    assert stats["treg_reg_mean"] == pytest.approx(r_l, abs=1e-6)
    assert stats["dpo_pairs"] == 1.0
    # at pi = pi_ref: DPO's -beta/2 (chosen) and +beta/2 (rejected) per token, plus the
    # regulariser's -coef * u * beta / (2 n) on the rejected tokens: -0.5 * [1, -2] * 0.1 / 4
    kw["ref_logp"] = logp.detach().clone()
    total = seq_mean(OBJECTIVES["treg"](logp, old, torch.zeros(3), mask, treg_coef=0.5, **kw), mask)
    close(_grad(total * 3, logp), torch.tensor([[0.0, 0.0], [-0.05, -0.05], [0.0375, 0.075]]))
    # no pair (equal rewards): no regulariser either
    kw["rewards"] = torch.ones(3)
    out = OBJECTIVES["treg"](logp, old, torch.zeros(3), mask, treg_coef=0.5, **kw)
    assert torch.equal(out, torch.zeros(3, 2))


def _random(n: int = 6, t: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 3 - 0.05  # [N, T]
    logp = (old + 0.5 * torch.randn(n, t, generator=gen)).clamp(max=-1e-3).requires_grad_(True)
    ref = -torch.rand(n, t, generator=gen) * 3  # [N, T]
    st = old + torch.randn(n, t, generator=gen)  # [N, T] the self-teacher's log-probs
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [N, T]
    rewards = torch.randperm(n, generator=gen).float()  # distinct: one pair per group
    return logp, old, ref, st, mask, rewards


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_treg_coef_zero_is_online_dpo_bit_for_bit(seed):
    logp, old, ref, st, mask, rewards = _random(seed=seed)
    kw = dict(ref_logp=ref, rewards=rewards, group=torch.arange(2).repeat_interleave(3))
    adv = torch.zeros(6)
    base = OBJECTIVES["online_dpo"](logp, old, adv, mask, dpo_beta=0.3, **kw)
    ours = OBJECTIVES["treg"](
        logp, old, adv, mask, dpo_beta=0.3, treg_coef=0.0, self_teacher_logp=st, **kw
    )
    assert torch.equal(ours, base)
    assert torch.equal(_grad(seq_mean(ours, mask), logp), _grad(seq_mean(base, mask), logp))
    # token rewards all 0 (no row got a hint: self_teacher_logp = old_logp): the term is 0
    flat = OBJECTIVES["treg"](logp, old, adv, mask, dpo_beta=0.3, self_teacher_logp=old, **kw)
    close(flat, base)
    close(_grad(seq_mean(flat, mask), logp), _grad(seq_mean(base, mask), logp))


@pytest.mark.parametrize("seed", [0, 1])
def test_treg_equals_a_plain_loop(seed):
    logp, old, ref, st, mask, rewards = _random(n=6, seed=seed + 10)
    kw = dict(ref_logp=ref, rewards=rewards, group=torch.arange(2).repeat_interleave(3))
    loss = OBJECTIVES["treg"](
        logp, old, torch.zeros(6), mask, dpo_beta=0.2, treg_coef=0.7, self_teacher_logp=st, **kw
    )
    ours = seq_mean(loss, mask) * 6  # sum_g L_g
    theirs = torch.zeros(())
    for g in range(2):
        rows = range(3 * g, 3 * g + 3)
        w = max(rows, key=lambda i: float(rewards[i]))
        lo = min(rows, key=lambda i: float(rewards[i]))
        h = 0.2 * (((logp[w] - ref[w]) * mask[w]).sum() - ((logp[lo] - ref[lo]) * mask[lo]).sum())
        reg = torch.zeros(())
        for i in (w, lo):
            terms = []
            for t in range(logp.shape[1]):
                if mask[i, t] > 0:
                    u = float(st[i, t] - old[i, t])
                    z = 0.2 * (logp[i, t] - ref[i, t])
                    terms.append(torch.nn.functional.softplus(-u * z) - math.log(2))
            reg = reg + torch.stack(terms).mean()
        theirs = theirs + torch.nn.functional.softplus(-h) + 0.7 * reg
    close(ours, theirs)
    close(_grad(ours, logp), _grad(theirs, logp))


def test_treg_pushes_implicit_rewards_toward_the_token_rewards():
    # one step of gradient descent on the regulariser alone (DPO's term has equal log ratios: the
    # pair's h = 0 and its gradient is the same on both rows' sums): z_t moves with sign(u_t)
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    old = logp.detach().clone()
    u = torch.tensor([[0.0, 0.0, 0.0], [2.0, -1.0, 0.0]])
    kw = dict(
        ref_logp=old.clone(),
        rewards=torch.tensor([1.0, 0.0]),
        group=torch.zeros(2, dtype=torch.long),
        self_teacher_logp=old + u,
    )
    base_kw = {k: kw[k] for k in ("ref_logp", "rewards", "group")}
    mask = torch.ones(2, 3)
    treg = OBJECTIVES["treg"](logp, old, torch.zeros(2), mask, **kw)
    reg_only = treg - OBJECTIVES["online_dpo"](logp, old, torch.zeros(2), mask, **base_kw)
    g = _grad(seq_mean(reg_only, torch.ones(2, 3)), logp)
    assert float(g[1, 0]) < 0 < float(g[1, 1])  # descent raises token 0 (u > 0), lowers token 1
    assert float(g[1, 2]) == 0.0 and torch.equal(g[0], torch.zeros(3))


def test_treg_registration_wiring_and_errors():
    assert OBJECTIVES.needs("treg") == {"ref_logp", "rewards", "group", "self_teacher_logp"}
    assert OBJECTIVES.needs("treg") <= INPUTS["objective"]
    assert set(OBJECTIVES.knobs("treg")) == {"dpo_beta", "treg_coef"}
    with pytest.raises(KnobError, match="treg_coef"):
        OBJECTIVES.check_knobs("treg", {"treg_coef": -0.1})
    with pytest.raises(KnobError, match="dpo_beta"):
        OBJECTIVES.check_knobs("treg", {"dpo_beta": 0.0})
    logp, old, mask, kw = _pair_example()
    kw["self_teacher_logp"] = None
    with pytest.raises(ValueError, match="treg needs `self_teacher_logp`"):
        OBJECTIVES["treg"](logp, old, torch.zeros(3), mask, **kw)
    kw["ref_logp"] = None
    with pytest.raises(ValueError, match="treg needs `ref_logp`"):
        OBJECTIVES["treg"](logp, old, torch.zeros(3), mask, treg_coef=0.0, **kw)


def test_treg_recipe_config_errors_name_the_field():
    from rlvr.train.config import ConfigError, load_config

    cfg = load_config("treg")
    assert cfg.algo.objective == "treg" and cfg.algo.knobs["treg_coef"] == 1.0
    with pytest.raises(ConfigError, match=r"'algo.treg_coef'.*expected >= 0"):
        load_config("treg", ["algo.treg_coef=-1"])
    with pytest.raises(ConfigError, match="'treg' reads the self-teacher's log-probs"):
        load_config("treg", ["guidance.strategy='hints'"])


def test_the_learner_gives_treg_the_self_teacher_logp(micro_base, tmp_path, monkeypatch):
    """A real step on the micro model: the objective receives the [self_teacher] forward's
    log-probs (the failed rows got a hint, so they differ from old_logp) through the learner."""
    from tests.conftest import micro_run

    from rlvr.train import setup as setup_mod
    from rlvr.train.config import load_config
    from rlvr.train.trainer import train

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real, build = OBJECTIVES["treg"], setup_mod.build_components

    def spy(logp, old_logp, adv, mask, **kw):
        seen.append((kw["self_teacher_logp"].detach().clone(), old_logp.detach().clone()))
        return real(logp, old_logp, adv, mask, **kw)

    spy.needs = real.needs  # type: ignore[attr-defined]

    def build_spy(c):
        out = build(c)
        out.objective = spy
        return out

    monkeypatch.setattr(setup_mod, "build_components", build_spy)
    cfg = load_config(
        "treg", micro_run(micro_base, "eval.before=false", "eval.after=false", "train.steps=1")
    )
    train(cfg, run_dir=tmp_path / "r", progress=False)
    assert seen
    st, old = seen[0]
    assert st.shape == old.shape and not torch.equal(st, old)
