"""The demonstration objectives (rlvr.algos.hybrid): hand values, the reduction to ppo_clip without
demonstration rows, gradients, a row-by-row loop, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import OBJECTIVES
from rlvr.algos.objectives import ppo_clip
from rlvr.registry import KnobError

hybrid, rl_plus, calibrl = OBJECTIVES["hybrid"], OBJECTIVES["rl_plus"], OBJECTIVES["calibrl"]


def _batch(seed: int = 0, n: int = 6, t: int = 4):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g) * 2  # [N, T]
    logp = (old + 0.3 * torch.randn(n, t, generator=g)).clamp(max=-1e-3)  # [N, T]
    adv = torch.randn(n, generator=g)  # [N]
    mask = torch.ones(n, t)
    mask[1, 3:] = 0
    mask[4, 2:] = 0
    return logp, old, adv, mask


def test_hybrid_hand_values():
    # row 0: a sample in a group with a demonstration; row 1: a sample in a group without one;
    # row 2: the demonstration. ratio 1 on the samples: ppo_clip = -A.
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.5], [0.5, 0.8]]))  # [3, 2]
    adv = torch.tensor([2.0, -1.0, 3.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    demo, group = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 1.0])
    out = hybrid(lp, lp, adv, mask, demo=demo, demo_group=group, rl_coef=0.5, sft_coef=2.0)
    want = torch.tensor(
        [
            [-2.0 * 0.5, -2.0 * 0.5],  # rl_coef * (-A)
            [1.0, 0.0],  # -A; padding 0
            [2.0 * math.log(2), 2.0 * -math.log(0.8)],  # sft_coef * (-log p)
        ]
    )
    torch.testing.assert_close(out, want)
    phi = hybrid(lp, lp, adv, mask, demo=demo, demo_group=group, sft_coef=1.0, sft_weight="chord_phi")
    # CHORD-phi: p (1 - p) * (-log p) on the demonstration's tokens
    torch.testing.assert_close(phi[2], torch.tensor([0.25 * math.log(2), 0.8 * 0.2 * -math.log(0.8)]))
    torch.testing.assert_close(phi[:2], torch.tensor([[-2.0, -2.0], [1.0, 0.0]]))


def test_hybrid_without_demonstrations_is_ppo_clip_to_the_bit():
    logp, old, adv, mask = _batch()
    zero = torch.zeros(len(adv))
    for knobs in ({}, {"rl_coef": 0.0, "sft_coef": 3.0}, {"clip_high": 0.28}):
        a = logp.clone().requires_grad_()
        b = logp.clone().requires_grad_()
        got = hybrid(a, old, adv, mask, demo=zero, demo_group=zero, **knobs)
        ref = ppo_clip(b, old, adv, mask, **{k: v for k, v in knobs.items() if k.startswith("clip")})
        assert torch.equal(got, ref)
        got.sum().backward()
        ref.sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_hybrid_hpt_switch_zeroes_the_rl_gradient_of_a_demonstrated_group():
    logp, old, adv, mask = _batch()
    demo = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    group = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    x = logp.clone().requires_grad_()
    loss = hybrid(x, old, adv, mask, demo=demo, demo_group=group, rl_coef=0.0, sft_coef=1.0)
    loss.sum().backward()
    assert torch.equal(x.grad[:2], torch.zeros(2, 4))  # the group's samples: no RL signal
    torch.testing.assert_close(x.grad[2], -mask[2])  # d(-logp)/dlogp on the demonstration
    ref = logp.clone().requires_grad_()
    ppo_clip(ref, old, adv, mask).sum().backward()
    assert torch.equal(x.grad[3:], ref.grad[3:])  # groups without a demonstration: grpo's RL


def test_hybrid_is_row_by_row():
    logp, old, adv, mask = _batch(seed=3)
    demo = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    group = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    knobs = {"rl_coef": 0.3, "sft_coef": 0.7, "sft_weight": "chord_phi"}
    whole = hybrid(logp, old, adv, mask, demo=demo, demo_group=group, **knobs)
    for i in range(len(adv)):
        r = slice(i, i + 1)
        one = hybrid(logp[r], old[r], adv[r], mask[r], demo=demo[r], demo_group=group[r], **knobs)
        torch.testing.assert_close(whole[r], one)


def test_hybrid_errors():
    logp, old, adv, mask = _batch()
    zero = torch.zeros(len(adv))
    with pytest.raises(ValueError, match="needs `demo`"):
        hybrid(logp, old, adv, mask, demo_group=zero)
    with pytest.raises(ValueError, match="demo_group must be"):
        hybrid(logp, old, adv, mask, demo=zero, demo_group=torch.zeros(2))
    with pytest.raises(ValueError, match="sft_weight"):
        hybrid(logp, old, adv, mask, demo=zero, demo_group=zero, sft_weight="phi")
    with pytest.raises(KnobError):
        OBJECTIVES.check_knobs("hybrid", {"sft_coef": -1.0})
    with pytest.raises(KnobError):
        OBJECTIVES.check_knobs("hybrid", {"sft_weight": "phi"})


def test_rl_plus_hand_values_and_gradient():
    # the demonstration (row 1): p = 0.5 now and before, q = 1: r = 0.5 / (0.25 + 0.5) = 2/3,
    # C = (1 - 0.5)^2 = 1/4, A = 2: L = -2/3 * 2 * 1/4 = -1/3; dL/dlogp = r' = L (r is p / const)
    lp = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.2]]))
    old = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.6]]))
    adv = torch.tensor([-1.0, 2.0])
    mask = torch.ones(2, 2)
    demo = torch.tensor([0.0, 1.0])
    x = lp.clone().requires_grad_()
    out = rl_plus(x, old, adv, mask, demo=demo, explore_gamma=2.0, demo_prob=1.0)
    r2 = 0.2 / (0.3 + 0.5)
    want = torch.tensor([[1.0, 1.0], [-1 / 3, -r2 * 2.0 * 0.8**2]])
    torch.testing.assert_close(out, want)
    out.sum().backward()
    torch.testing.assert_close(x.grad[1], want[1])  # d(-A C p / mix)/dlogp = the loss itself
    # q = 0.5 and plain MIS (gamma 0): r = 0.5 / (0.25 + 0.25) = 1, L = -A
    plain = rl_plus(lp, old, adv, mask, demo=demo, explore_gamma=0.0, demo_prob=0.5)
    torch.testing.assert_close(plain[1, 0], torch.tensor(-2.0))


def test_rl_plus_without_demonstrations_is_ppo_clip_to_the_bit():
    logp, old, adv, mask = _batch(seed=1)
    zero = torch.zeros(len(adv))
    a = logp.clone().requires_grad_()
    b = logp.clone().requires_grad_()
    got = rl_plus(a, old, adv, mask, demo=zero, clip_low=0.1)
    ref = ppo_clip(b, old, adv, mask, clip_low=0.1)
    assert torch.equal(got, ref)
    got.sum().backward()
    ref.sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_rl_plus_is_row_by_row_and_ignores_padding():
    logp, old, adv, mask = _batch(seed=2)
    demo = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    whole = rl_plus(logp, old, adv, mask, demo=demo)
    assert torch.equal(whole[mask == 0], torch.zeros(int((mask == 0).sum())))
    for i in range(len(adv)):
        r = slice(i, i + 1)
        torch.testing.assert_close(whole[r], rl_plus(logp[r], old[r], adv[r], mask[r], demo=demo[r]))


def test_rl_plus_errors():
    logp, old, adv, mask = _batch()
    with pytest.raises(ValueError, match="needs `demo`"):
        rl_plus(logp, old, adv, mask)
    for bad in ({"demo_prob": 0.0}, {"demo_prob": 1.5}, {"explore_gamma": -1.0}):
        with pytest.raises(KnobError):
            OBJECTIVES.check_knobs("rl_plus", bad)


# ---------------------------------------------------------------- calibrl (expert-calibrated term)


def _calib_batch(seed: int = 4):
    """Two groups of 3 samples + 1 demonstration (rows 3 and 7), and a group of 2 without one."""
    logp, old, adv, mask = _batch(seed=seed, n=10, t=4)
    demo = torch.zeros(10)
    demo[[3, 7]] = 1.0
    demo_group = torch.tensor([1.0] * 8 + [0.0] * 2)
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    mask[7, 2:] = 0  # a short demonstration: its mean stands in past its end
    return logp, old, adv, mask, demo, demo_group, group


def test_calibrl_hand_values_and_gradient():
    # group 0: rows 0, 1 samples, row 2 its demonstration; row 3 a group without one. ratio 1 on the
    # samples, so ppo_clip = -A. The demonstration's old log-probs e = log(.5), log(.25).
    old = torch.log(torch.tensor([[0.25, 0.5], [0.25, 0.5], [0.5, 0.25], [0.5, 0.5]]))
    lp = old.clone()
    adv = torch.tensor([2.0, -1.0, 3.0, 0.5])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    demo, dgroup = torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    group = torch.tensor([0, 0, 0, 1])
    x = lp.clone().requires_grad_()
    out = calibrl(x, old, adv, mask, demo=demo, demo_group=dgroup, group=group)
    ln2 = math.log(2)
    # row 0 (A = 2): logp - e = log(.25/.5), log(.5/.25) = -ln2, ln2; z = -(logp - e) = ln2, -ln2
    #   -> LeakyReLU(., .5) = ln2, -ln2/2 -> 0.1 * 2 * that: .2 ln2, -.1 ln2
    # row 1 (A = -1): z = +(logp - e) = log .25 - log .5 = -ln2 -> -ln2/2 -> 0.1 * 1 * that
    # row 2 (the demonstration): 0; row 3 (no demonstration in its group): -A
    want = torch.tensor(
        [[-2.0 + 0.2 * ln2, -2.0 - 0.1 * ln2], [1.0 - 0.05 * ln2, 0.0], [0.0, 0.0], [-0.5, -0.5]]
    )
    torch.testing.assert_close(out, want)
    out.sum().backward()
    # d/dlogp: ppo's -A (ratio 1) plus 0.1 |A| (slope 1 or .5) dz/dlogp, dz/dlogp = -sign(A)
    grad = torch.tensor([[-2.0 - 0.2, -2.0 - 0.1], [1.0 + 0.05, 0.0], [0.0, 0.0], [-0.5, -0.5]])
    torch.testing.assert_close(x.grad, grad)
    # a demonstration that ends after its first token: e past its end is its mean, log .5
    short = mask.clone()
    short[2, 1] = 0
    out = calibrl(lp, old, adv, short, demo=demo, demo_group=dgroup, group=group)
    # row 0, t = 1 (A = 2): z = -(log .5 - log .5) = 0 -> no calibration term: -2
    torch.testing.assert_close(out[0], torch.tensor([-2.0 + 0.2 * ln2, -2.0]))


def test_calibrl_without_demonstrations_or_with_coef_zero_is_ppo_clip_to_the_bit():
    logp, old, adv, mask, demo, demo_group, group = _calib_batch()
    zero = torch.zeros(len(adv))
    cases = [
        (zero, zero, {}),
        (zero, zero, {"guide_slope": 1.0, "clip_high": 0.28}),
        (demo, demo_group, {"guide_coef": 0.0}),
        (demo, demo_group, {"guide_coef": 0.0, "clip_low": 0.1}),
    ]
    for d, dg, knobs in cases:
        a = logp.clone().requires_grad_()
        b = logp.clone().requires_grad_()
        got = calibrl(a, old, adv, mask, demo=d, demo_group=dg, group=group, **knobs)
        clip = {k: v for k, v in knobs.items() if k.startswith("clip")}
        ref = ppo_clip(b, old, adv, mask * (1 - d)[:, None], **clip)  # the samples' tokens
        assert torch.equal(got, ref)
        got.sum().backward()
        ref.sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_calibrl_slope_one_is_a_reinforce_term():
    # LeakyReLU with slope 1 is the identity: the term is -A (logp - e), gradient -coef * A
    logp, old, adv, mask, demo, demo_group, group = _calib_batch(seed=5)
    a = logp.clone().requires_grad_()
    b = logp.clone().requires_grad_()
    calibrl(
        a,
        old,
        adv,
        mask,
        demo=demo,
        demo_group=demo_group,
        group=group,
        guide_slope=1.0,
        guide_coef=0.3,
    ).sum().backward()
    own = mask * (1 - demo)[:, None]
    ppo_clip(b, old, adv, own).sum().backward()
    guided = own * demo_group[:, None]  # [N, T] the samples of the demonstrated groups
    torch.testing.assert_close(a.grad, b.grad - 0.3 * adv[:, None] * guided)


def test_calibrl_equals_group_by_group_loop():
    logp, old, adv, mask, demo, demo_group, group = _calib_batch(seed=6)
    knobs = {"guide_coef": 0.4, "guide_slope": 0.2}
    whole = calibrl(logp, old, adv, mask, demo=demo, demo_group=demo_group, group=group, **knobs)
    for g in group.unique().tolist():
        r = group == g
        one = calibrl(
            logp[r],
            old[r],
            adv[r],
            mask[r],
            demo=demo[r],
            demo_group=demo_group[r],
            group=group[r],
            **knobs,
        )
        torch.testing.assert_close(whole[r], one)
    # a plain loop over tokens for the first group
    e = old[3]
    for i in range(3):
        for t in range(4):
            if mask[i, t] == 0:
                assert whole[i, t] == 0
                continue
            ratio = math.exp(float(logp[i, t] - old[i, t]))
            a_ = float(adv[i])
            ppo = -min(ratio * a_, min(max(ratio, 0.8), 1.2) * a_)
            z = -math.copysign(1.0, a_) * float(logp[i, t] - e[t])
            leaky = z if z >= 0 else 0.2 * z
            assert float(whole[i, t]) == pytest.approx(ppo + 0.4 * abs(a_) * leaky, abs=1e-5)
    assert torch.equal(whole[3], torch.zeros(4)) and torch.equal(whole[7], torch.zeros(4))


def test_calibrl_errors():
    logp, old, adv, mask, demo, demo_group, group = _calib_batch()
    with pytest.raises(ValueError, match="needs `group`"):
        calibrl(logp, old, adv, mask, demo=demo, demo_group=demo_group)
    with pytest.raises(ValueError, match="group must be"):
        calibrl(logp, old, adv, mask, demo=demo, demo_group=demo_group, group=group[:3])
    with pytest.raises(ValueError, match="needs `demo_group`"):
        calibrl(logp, old, adv, mask, demo=demo, group=group)
    r = slice(0, 3)  # group 0 without its demonstration row (a micro-batch that split the group)
    with pytest.raises(ValueError, match="without their demonstration row"):
        calibrl(logp[r], old[r], adv[r], mask[r], demo=demo[r], demo_group=demo_group[r], group=group[r])
    two = demo.clone()
    two[2] = 1.0
    with pytest.raises(ValueError, match="more than one demonstration"):
        calibrl(logp, old, adv, mask, demo=two, demo_group=demo_group, group=group)
    for bad in ({"guide_coef": -0.1}, {"guide_slope": 1.5}, {"guide_slope": -0.5}):
        with pytest.raises(KnobError):
            OBJECTIVES.check_knobs("calibrl", bad)
    assert OBJECTIVES.needs("calibrl") == {"demo", "demo_group", "group"}


critique_grpo = OBJECTIVES["critique_grpo"]


def test_critique_grpo_hand_values_and_gradient():
    # row 0: an initial response at ratio 1 (ppo_clip = -A); row 1: a refinement, p = 0.4 and 0.1
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.4, 0.1]]))  # [2, 2]
    adv = torch.tensor([2.0, -3.0])
    mask = torch.ones(2, 2)
    x = lp.clone().requires_grad_()
    out = critique_grpo(x, lp, adv, mask, demo=torch.tensor([0.0, 1.0]), refine_gamma=0.1)
    want = torch.tensor([[-2.0, -2.0], [3.0 * 0.4 / 0.5, 3.0 * 0.1 / 0.2]])  # -A p / (p + gamma)
    torch.testing.assert_close(out, want)
    out.sum().backward()
    # d/dlogp of -A p / (p + g) = -A g p / (p + g)^2
    grad = torch.tensor([[-2.0, -2.0], [3.0 * 0.1 * 0.4 / 0.25, 3.0 * 0.1 * 0.1 / 0.04]])
    torch.testing.assert_close(x.grad, grad)


def test_critique_grpo_without_refinements_is_ppo_clip_to_the_bit():
    logp, old, adv, mask = _batch(seed=5)
    zero = torch.zeros(len(adv))
    for knobs in ({}, {"refine_gamma": 2.0}, {"clip_low": 0.1, "clip_high": 0.28}):
        a = logp.clone().requires_grad_()
        b = logp.clone().requires_grad_()
        got = critique_grpo(a, old, adv, mask, demo=zero, **knobs)
        ref = ppo_clip(b, old, adv, mask, **{k: v for k, v in knobs.items() if k.startswith("clip")})
        assert torch.equal(got, ref)
        got.sum().backward()
        ref.sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_critique_grpo_is_row_by_row_and_masks_padding():
    logp, old, adv, mask = _batch(seed=7)
    demo = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    whole = critique_grpo(logp, old, adv, mask, demo=demo, refine_gamma=0.3)
    for i in range(len(adv)):
        one = critique_grpo(
            logp[i : i + 1],
            old[i : i + 1],
            adv[i : i + 1],
            mask[i : i + 1],
            demo=demo[i : i + 1],
            refine_gamma=0.3,
        )
        torch.testing.assert_close(whole[i : i + 1], one)
    assert torch.equal(whole[1, 3:], torch.zeros(1)) and torch.equal(whole[4, 2:], torch.zeros(2))
    with pytest.raises(ValueError, match=r"critique_grpo needs `demo`"):
        critique_grpo(logp, old, adv, mask)
    with pytest.raises(KnobError, match="refine_gamma"):
        OBJECTIVES.check_knobs("critique_grpo", {"refine_gamma": 0.0})
