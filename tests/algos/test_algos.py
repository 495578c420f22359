"""Hand-computed values and invariants for every algorithm function of the skeleton."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, OBJECTIVES
from rlvr.registry import Registry, UnknownComponentError

# ---------------------------------------------------------------- advantages


def test_grpo_hand_values():
    # mean 0.5; unbiased std = sqrt(((.5^2) * 4) / 3) = sqrt(1/3) = 0.57735
    a = ADVANTAGES["grpo"](torch.tensor([[1.0, 0.0, 0.0, 1.0]]), eps=0.0)
    torch.testing.assert_close(a, torch.tensor([[0.8660254, -0.8660254, -0.8660254, 0.8660254]]))


def test_grpo_invariants():
    r = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    a = ADVANTAGES["grpo"](r)
    torch.testing.assert_close(a.sum(1), torch.zeros(5), atol=1e-5, rtol=0)
    assert torch.equal(ADVANTAGES["grpo"](torch.full((2, 4), 3.0)), torch.zeros(2, 4))
    # 0.1 has no exact float32 form: the group mean rounds, yet the advantage must be exactly 0
    assert torch.equal(ADVANTAGES["grpo"](torch.full((3, 8), 0.1)), torch.zeros(3, 8))
    torch.testing.assert_close(ADVANTAGES["grpo"](r, scale="none"), ADVANTAGES["dr_grpo"](r))
    batch = ADVANTAGES["grpo"](r, scale="batch", eps=0.0)
    torch.testing.assert_close(batch, (r - r.mean(1, keepdim=True)) / r.std())
    with pytest.raises(ValueError, match="scale"):
        ADVANTAGES["grpo"](r, scale="nope")
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        ADVANTAGES["grpo"](torch.rand(8))


def test_rloo_hand_values_and_loop():
    # r = [1, 0, 0, 1]: A_0 = 1 - (0+0+1)/3 = 2/3; A_1 = 0 - (1+0+1)/3 = -2/3
    a = ADVANTAGES["rloo"](torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(a, torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]))
    r = torch.rand(3, 5, generator=torch.Generator().manual_seed(1))
    loop = torch.tensor([[r[b, i] - (r[b].sum() - r[b, i]) / 4 for i in range(5)] for b in range(3)])
    torch.testing.assert_close(ADVANTAGES["rloo"](r), loop)
    torch.testing.assert_close(ADVANTAGES["rloo"](r), 5 / 4 * ADVANTAGES["dr_grpo"](r))
    with pytest.raises(ValueError, match="G >= 2"):
        ADVANTAGES["rloo"](torch.rand(2, 1))


# ---------------------------------------------------------------- objectives


def _toy():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([2.0, -1.0])
    return logp, mask, adv


def test_reinforce_value_and_gradient():
    logp, mask, adv = _toy()
    loss = OBJECTIVES["reinforce"](logp, logp.detach(), adv, mask)
    torch.testing.assert_close(loss, torch.tensor([[2.0, 4.0, 0.0], [-0.3, -1.2, -4.0]]))
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, -adv[:, None] * mask)


def test_ppo_clip_at_ratio_one_is_reinforce_gradient():
    logp, mask, adv = _toy()
    OBJECTIVES["ppo_clip"](logp, logp.detach(), adv, mask).sum().backward()
    torch.testing.assert_close(logp.grad, -adv[:, None] * mask)


def test_ppo_clip_hand_values():
    old = torch.zeros(1, 4)
    # ratios 1.5, 0.5 (A = +1) and 1.5, 0.5 (A = -1)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    stats: dict = {}
    loss = OBJECTIVES["ppo_clip"](logp, old, adv, mask, clip_low=0.2, clip_high=0.28, stats=stats)
    # A>0: -min(1.5, 1.28) = -1.28 (clipped); -min(0.5, 0.8) = -0.5
    # A<0: -min(-1.5, -1.28) = 1.5; -min(-0.5, -0.8) = 0.8 (clipped)
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -0.5, 1.5, 0.8]]))
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.sum().backward()
    # clipped tokens get no gradient; unclipped ones get -A * ratio
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5, 1.5, 0.0]]))


def test_ppo_dual_clip_bounds_negative_advantage_loss():
    logp = torch.log(torch.tensor([[10.0]]))
    loss = OBJECTIVES["ppo_clip"](
        logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=3.0
    )
    torch.testing.assert_close(loss, torch.tensor([[3.0]]))  # min(10, 3)
    with pytest.raises(ValueError, match="dual_clip"):
        OBJECTIVES["ppo_clip"](logp, logp, torch.tensor([1.0]), torch.ones(1, 1), dual_clip=1.0)


def test_ppo_clip_vectorised_equals_loop_and_adv_broadcast():
    g = torch.Generator().manual_seed(3)
    logp, old = -torch.rand(4, 6, generator=g) * 3, -torch.rand(4, 6, generator=g) * 3
    adv = torch.randn(4, generator=g)
    mask = (torch.rand(4, 6, generator=g) > 0.3).float()
    vec = OBJECTIVES["ppo_clip"](logp, old, adv, mask, clip_low=0.2, clip_high=0.3)
    torch.testing.assert_close(
        vec,
        OBJECTIVES["ppo_clip"](logp, old, adv[:, None].expand(4, 6), mask, clip_low=0.2, clip_high=0.3),
    )
    for i in range(4):
        for t in range(6):
            r = math.exp(logp[i, t] - old[i, t])
            a = float(adv[i])
            want = -min(r * a, min(max(r, 0.8), 1.3) * a) * float(mask[i, t])
            assert float(vec[i, t]) == pytest.approx(want, abs=1e-5)


# ---------------------------------------------------------------- aggregation

LOSS = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("token_mean", (1 + 2 + 3 + 4) / 4),  # 2.5
        ("seq_mean_token_mean", (2.0 + 4.0) / 2),  # 3.0
        ("seq_mean_token_sum", (6.0 + 4.0) / 2),  # 5.0
        ("constant", 10.0 / (2 * 4)),  # 1.25
    ],
)
def test_aggregation_hand_values(name, want):
    assert float(AGGREGATIONS[name](LOSS, MASK)) == pytest.approx(want)
    # masked positions do not matter
    assert float(AGGREGATIONS[name](LOSS + 100 * (1 - MASK), MASK)) == pytest.approx(want)


def test_constant_with_max_tokens():
    assert float(AGGREGATIONS["constant"](LOSS, MASK, max_tokens=10)) == pytest.approx(10 / 20)


@pytest.mark.parametrize("name", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"])
def test_aggregation_is_linear_so_micro_batches_are_exact(name):
    g = torch.Generator().manual_seed(4)
    loss = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.4).float()
    full = AGGREGATIONS[name](loss, mask)
    parts = 0.0
    for rows in (torch.arange(0, 3), torch.arange(3, 6)):
        emb = torch.zeros_like(loss).index_copy(0, rows, loss[rows])
        parts = parts + AGGREGATIONS[name](emb, mask)
    torch.testing.assert_close(parts, full)


# ---------------------------------------------------------------- KL


def test_kl_hand_values():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]])
    torch.testing.assert_close(KL_ESTIMATORS["k1"](logp, ref), torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(KL_ESTIMATORS["k2"](logp, ref), torch.tensor([[0.5, 0.5]]))
    # k3 = e^(ref-logp) - (ref-logp) - 1: e^-1 + 1 - 1 = 0.367879; e^1 - 1 - 1 = 0.718282
    torch.testing.assert_close(KL_ESTIMATORS["k3"](logp, ref), torch.tensor([[0.367879, 0.718282]]))


def test_kl_invariants_and_unbiasedness():
    g = torch.Generator().manual_seed(5)
    x = -torch.rand(100, generator=g) * 5
    y = -torch.rand(100, generator=g) * 5
    assert (KL_ESTIMATORS["k3"](x, y) >= 0).all()
    for name in ("k1", "k2", "k3"):
        assert torch.equal(KL_ESTIMATORS[name](x, x), torch.zeros(100))
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.2, 0.6])
    exact = float((p * (p / q).log()).sum())
    s = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[s], q.log()[s]
    assert float(KL_ESTIMATORS["k1"](lp, lq).mean()) == pytest.approx(exact, abs=0.01)
    assert float(KL_ESTIMATORS["k3"](lp, lq).mean()) == pytest.approx(exact, abs=0.01)


# ---------------------------------------------------------------- registry


def test_registry_errors_and_knobs():
    with pytest.raises(UnknownComponentError, match="valid names: " + ", ".join(ADVANTAGES.names())):
        ADVANTAGES["grpoo"]
    assert ADVANTAGES.knobs("grpo") == {"eps": 1e-6, "scale": "group"}
    assert OBJECTIVES.knobs("ppo_clip") == {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}
    assert ADVANTAGES.needs("grpo") == frozenset()
    reg = Registry("thing")
    reg.register("a", needs={"ref_logp"})(lambda x, *, ref_logp=None: x)
    assert reg.needs("a") == {"ref_logp"}
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(lambda x: x)
