"""Surrogate objectives: hand values, gradients, clipping, masking, stats, loop-vs-vectorised."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import OBJECTIVES
from rlvr.algos.objectives import ppo_clip, reinforce

close = torch.testing.assert_close


def _toy():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([2.0, -1.0])
    return logp, mask, adv


def _ratios(values):
    """logp with exp(logp - 0) = the given ratios, as a leaf that records gradients."""
    return torch.log(torch.tensor([values])).requires_grad_(True)


def test_registered_names():
    assert OBJECTIVES["reinforce"] is reinforce
    assert OBJECTIVES["ppo_clip"] is ppo_clip


# ---------------------------------------------------------------- reinforce


def test_reinforce_value_and_gradient():
    logp, mask, adv = _toy()
    loss = reinforce(logp, torch.zeros(2, 3), adv, mask)
    # -A * logp: row 0 (A = 2): 2, 4, masked -> 0; row 1 (A = -1): -.3, -1.2, -4
    close(loss, torch.tensor([[2.0, 4.0, 0.0], [-0.3, -1.2, -4.0]]))
    loss.sum().backward()
    # d/dlogp = -A * mask
    close(logp.grad, torch.tensor([[-2.0, -2.0, 0.0], [1.0, 1.0, 1.0]]))


def test_reinforce_ignores_old_logp():
    logp, mask, adv = _toy()
    a = reinforce(logp, torch.zeros(2, 3), adv, mask)
    b = reinforce(logp, torch.randn(2, 3, generator=torch.Generator().manual_seed(0)), adv, mask)
    assert torch.equal(a, b)


def test_reinforce_per_token_advantage():
    logp, mask, _ = _toy()
    adv = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    # -A * logp * mask: [1*1, 2*2, 0], [0, -1.2, 2]
    close(reinforce(logp, logp, adv, mask), torch.tensor([[1.0, 4.0, 0.0], [0.0, -1.2, 2.0]]))


# ---------------------------------------------------------------- ppo_clip: gradients at ratio 1


@pytest.mark.parametrize(("clip_low", "clip_high"), [(0.2, 0.2), (0.1, 0.28)])
def test_ppo_clip_at_ratio_one_matches_reinforce_gradient(clip_low, clip_high):
    logp, mask, adv = _toy()
    loss = ppo_clip(logp, logp.detach(), adv, mask, clip_low=clip_low, clip_high=clip_high)
    # ratio = 1: loss = -A * mask
    close(loss, torch.tensor([[-2.0, -2.0, 0.0], [1.0, 1.0, 1.0]]))
    loss.sum().backward()
    grad_ppo = logp.grad.clone()

    logp2, _, _ = _toy()
    reinforce(logp2, logp2.detach(), adv, mask).sum().backward()
    close(grad_ppo, logp2.grad)
    close(grad_ppo, -adv[:, None] * mask)


# ---------------------------------------------------------------- ppo_clip: hand values


def test_ppo_clip_positive_advantage_hand_values():
    # A = +2; ratios 1.5 (above 1 + .2), 1.1 (inside), .5 (below 1 - .2)
    logp = _ratios([1.5, 1.1, 0.5])
    adv = torch.tensor([[2.0, 2.0, 2.0]])
    loss = ppo_clip(logp, torch.zeros(1, 3), adv, torch.ones(1, 3), clip_low=0.2, clip_high=0.2)
    # 1.5: -min(3.0, 2 * 1.2 = 2.4) = -2.4 (clipped);  1.1: -2.2;  .5: -min(1.0, 1.6) = -1.0
    close(loss, torch.tensor([[-2.4, -2.2, -1.0]]))
    loss.sum().backward()
    # clipped token: gradient 0;  unclipped: d(-A * exp(logp))/dlogp = -A * ratio
    close(logp.grad, torch.tensor([[0.0, -2.2, -1.0]]))


def test_ppo_clip_negative_advantage_hand_values():
    # A = -1; ratios .5 (below 1 - .2), .9 (inside), 1.5 (above 1 + .2)
    logp = _ratios([0.5, 0.9, 1.5])
    adv = torch.tensor([-1.0])
    loss = ppo_clip(logp, torch.zeros(1, 3), adv, torch.ones(1, 3), clip_low=0.2, clip_high=0.2)
    # .5: -min(-.5, -.8) = .8 (clipped);  .9: .9;  1.5: -min(-1.5, -1.2) = 1.5 (not clipped)
    close(loss, torch.tensor([[0.8, 0.9, 1.5]]))
    loss.sum().backward()
    close(logp.grad, torch.tensor([[0.0, 0.9, 1.5]]))


def test_ppo_clip_asymmetric_bounds():
    # clip_low = .1 (lower bound .9), clip_high = .3 (upper bound 1.3)
    logp = _ratios([1.25, 1.5, 0.85, 0.95, 0.85])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]])
    stats: dict = {}
    loss = ppo_clip(
        logp, torch.zeros(1, 5), adv, torch.ones(1, 5), clip_low=0.1, clip_high=0.3, stats=stats
    )
    # A>0, 1.25 < 1.3: -1.25 (a symmetric .2 clip would give -1.2);  A>0, 1.5: -1.3
    # A<0, .85 < .9: .9 (clipped at the lower bound);  A<0, .95: .95
    # A>0, .85: -min(.85, .9) = -.85 (the lower bound does not bind for A > 0)
    close(loss, torch.tensor([[-1.25, -1.3, 0.9, 0.95, -0.85]]))
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    loss.sum().backward()
    close(logp.grad, torch.tensor([[-1.25, 0.0, 0.0, 0.95, -0.85]]))


def test_ppo_clip_high_only_moves_upper_bound():
    logp = _ratios([1.25, 0.7])
    adv = torch.tensor([[1.0, -1.0]])
    sym = ppo_clip(logp, torch.zeros(1, 2), adv, torch.ones(1, 2), clip_low=0.2, clip_high=0.2)
    hi = ppo_clip(logp, torch.zeros(1, 2), adv, torch.ones(1, 2), clip_low=0.2, clip_high=0.28)
    # upper: -1.2 vs -1.25;  lower (A<0, .7 < .8): .8 in both
    close(sym, torch.tensor([[-1.2, 0.8]]))
    close(hi, torch.tensor([[-1.25, 0.8]]))


# ---------------------------------------------------------------- ppo_clip: dual clip


def test_ppo_dual_clip_bounds_negative_advantage_loss():
    # ratio 10: A = -1 -> min(10, 3 * 1) = 3;  A = -2 -> min(20, 3 * 2) = 6
    # A = +1 -> -1.2 (dual clip only touches A < 0);  A = -1, ratio .5 -> .8 (below the bound)
    logp = _ratios([10.0, 10.0, 10.0, 0.5])
    adv = torch.tensor([[-1.0, -2.0, 1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss = ppo_clip(logp, torch.zeros(1, 4), adv, mask, dual_clip=3.0)
    close(loss, torch.tensor([[3.0, 6.0, -1.2, 0.8]]))
    loss.sum().backward()
    close(logp.grad, torch.zeros(1, 4))
    # without the dual clip the A < 0 losses grow with the ratio: 10 and 20
    plain = ppo_clip(logp, torch.zeros(1, 4), adv, mask)
    close(plain, torch.tensor([[10.0, 20.0, -1.2, 0.8]]))


def test_ppo_dual_clip_huge_ratio_is_bounded():
    logp = torch.tensor([[30.0]])  # ratio e^30
    loss = ppo_clip(logp, torch.zeros(1, 1), torch.tensor([-0.5]), torch.ones(1, 1), dual_clip=2.0)
    close(loss, torch.tensor([[1.0]]))  # -c * A = 2 * .5


@pytest.mark.parametrize("c", [1.0, 0.5, 0.0, -3.0])
def test_ppo_dual_clip_must_exceed_one(c):
    logp, mask, adv = _toy()
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip(logp, logp, adv, mask, dual_clip=c)


# ---------------------------------------------------------------- shapes and masking


def _random(seed=3, n=4, t=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, t, generator=g) * 3
    old = logp + torch.randn(n, t, generator=g) * 0.4  # ratios spread around 1
    adv = torch.randn(n, generator=g)
    mask = (torch.rand(n, t, generator=g) > 0.3).float()
    return logp, old, adv, mask


@pytest.mark.parametrize("name", ["reinforce", "ppo_clip"])
def test_adv_per_sequence_equals_expanded(name):
    logp, old, adv, mask = _random()
    fn = OBJECTIVES[name]
    assert torch.equal(fn(logp, old, adv, mask), fn(logp, old, adv[:, None].expand(4, 6), mask))


@pytest.mark.parametrize("name", ["reinforce", "ppo_clip"])
def test_adv_wrong_shape_raises(name):
    logp, old, _, mask = _random()
    with pytest.raises(ValueError, match="adv"):
        OBJECTIVES[name](logp, old, torch.zeros(4, 7), mask)


@pytest.mark.parametrize("name", ["reinforce", "ppo_clip"])
def test_masked_tokens_contribute_nothing(name):
    logp, old, adv, mask = _random()
    fn = OBJECTIVES[name]
    kw = {"dual_clip": 3.0} if name == "ppo_clip" else {}
    s1: dict = {}
    lp1 = logp.clone().requires_grad_(True)
    loss1 = fn(lp1, old, adv, mask, stats=s1, **kw)
    assert torch.equal(loss1[mask == 0], torch.zeros(int((mask == 0).sum())))
    loss1.sum().backward()
    assert torch.equal(lp1.grad[mask == 0], torch.zeros(int((mask == 0).sum())))

    # change logp (and old_logp) wildly at masked positions only
    noise = torch.randn(4, 6, generator=torch.Generator().manual_seed(9)) * 5
    s2: dict = {}
    lp2 = torch.where(mask == 0, logp + noise, logp).requires_grad_(True)
    old2 = torch.where(mask == 0, old - noise, old)
    loss2 = fn(lp2, old2, adv, mask, stats=s2, **kw)
    assert torch.equal(loss1, loss2)
    loss2.sum().backward()
    assert torch.equal(lp1.grad, lp2.grad)
    assert s1 == s2


# ---------------------------------------------------------------- stats


def test_ppo_stats_clip_frac_hand_count():
    # ratios with clip .2; mask drops the last token
    #   A=+1, 1.5 -> clipped;  A=+1, .5 -> not;  A=-1, .5 -> clipped;  A=-1, 1.5 -> not
    #   A=+1, 1.1 -> not;  masked A=+1, 2.0 -> would be clipped but does not count
    # clip_frac = 2 / 5;  ratio_mean = (1.5 + .5 + .5 + 1.5 + 1.1) / 5 = 1.02
    logp = _ratios([1.5, 0.5, 0.5, 1.5, 1.1, 2.0])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    stats: dict = {}
    ppo_clip(logp, torch.zeros(1, 6), adv, mask, stats=stats)
    assert stats["clip_frac"] == pytest.approx(0.4)
    assert stats["ratio_mean"] == pytest.approx(1.02, rel=1e-6)
    assert isinstance(stats["clip_frac"], float)


def test_ppo_stats_no_clipping_at_ratio_one_and_none_is_fine():
    logp, mask, adv = _toy()
    stats: dict = {}
    ppo_clip(logp, logp.detach(), adv, mask, stats=stats)
    assert stats["clip_frac"] == 0.0
    assert stats["ratio_mean"] == pytest.approx(1.0)
    ppo_clip(logp, logp.detach(), adv, mask, stats=None)  # no dict: no error


# ---------------------------------------------------------------- loop vs vectorised


@pytest.mark.parametrize(
    ("clip_low", "clip_high", "dual_clip"), [(0.2, 0.2, None), (0.2, 0.28, None), (0.1, 0.3, 2.0)]
)
def test_ppo_clip_vectorised_equals_loop(clip_low, clip_high, dual_clip):
    logp, old, adv, mask = _random(seed=11, n=5, t=7)
    vec = ppo_clip(logp, old, adv, mask, clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip)
    n_clipped, n_tokens = 0, 0
    for i in range(5):
        for t in range(7):
            r = math.exp(float(logp[i, t]) - float(old[i, t]))
            a = float(adv[i])
            r_clip = min(max(r, 1 - clip_low), 1 + clip_high)
            obj = min(r * a, r_clip * a)  # the pessimistic surrogate, to maximise
            if dual_clip is not None and a < 0:
                obj = max(obj, dual_clip * a)
            want = -obj if mask[i, t] else 0.0
            assert float(vec[i, t]) == pytest.approx(want, abs=1e-5), (i, t)
            if mask[i, t]:
                n_tokens += 1
                n_clipped += r_clip * a < r * a
    stats: dict = {}
    ppo_clip(logp, old, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    assert 0 < n_clipped < n_tokens  # the data exercises both branches
    assert stats["clip_frac"] == pytest.approx(n_clipped / n_tokens)
