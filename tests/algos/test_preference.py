"""Preference optimisation from each group's samples and a few reward-side components (issue 30,
theme 10): RPO, P3O, the self-play win rate of SPO, PF-PPO's filtration, SSL's tiered rewards and the
chi-squared regulariser of "Correlated Proxies". Hand values, neutral settings, loops."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, CREDIT, KL_ESTIMATORS, OBJECTIVES, SHAPING
from rlvr.registry import KnobError

close = torch.testing.assert_close
seq_mean = AGGREGATIONS["seq_mean_token_mean"]


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


def _random(n: int = 6, t: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 3 - 0.05  # [N, T]
    logp = (old + 0.5 * torch.randn(n, t, generator=gen)).clamp(max=-1e-3).requires_grad_(True)
    ref = -torch.rand(n, t, generator=gen) * 3  # [N, T]
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [N, T]
    return logp, old, ref, mask


# ---------------------------------------------------------------- RPO


def _pair_example():
    # one group of 3: rewards 0.2, 1.0, 0.0 -> chosen row 1, rejected row 2; log ratios to the
    # reference 0.5 and -1.5 -> h = 0.1 * 2 = 0.2; l_w = -1.5
    logp = torch.tensor([[-1.0, -1.0], [-0.5, -1.0], [-2.0, -1.5]], requires_grad=True)
    kw = dict(
        ref_logp=torch.full((3, 2), -1.0),
        rewards=torch.tensor([0.2, 1.0, 0.0]),
        group=torch.zeros(3, dtype=torch.long),
    )
    return logp, torch.ones(3, 2), kw


def test_rpo_hand_values_and_gradient():
    logp, mask, kw = _pair_example()
    stats: dict = {}
    loss = OBJECTIVES["rpo"](logp, logp.detach(), torch.zeros(3), mask, rpo_eta=0.1, stats=stats, **kw)
    half = (math.log(1 + math.exp(-0.2)) + 0.1 * 1.5) / 2
    close(loss, torch.tensor([[0.0, 0.0], [half, half], [half, half]]))
    assert stats["rpo_nll_mean"] == pytest.approx(1.5)
    # at pi = pi_ref: DPO's -beta/2 on the chosen and +beta/2 on the rejected tokens, plus the SFT
    # term's -eta on every token of the chosen sample
    kw["ref_logp"] = logp.detach().clone()
    total = seq_mean(
        OBJECTIVES["rpo"](logp, logp.detach(), torch.zeros(3), mask, rpo_eta=0.1, **kw), mask
    )
    close(_grad(total * 3, logp), torch.tensor([[0.0, 0.0], [-0.15, -0.15], [0.05, 0.05]]))
    # no pair (equal rewards): no SFT term either
    kw["rewards"] = torch.ones(3)
    out = OBJECTIVES["rpo"](logp, logp.detach(), torch.zeros(3), mask, rpo_eta=0.1, **kw)
    assert torch.equal(out, torch.zeros(3, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_rpo_equals_loop_and_eta_zero_is_online_dpo(seed):
    logp, old, ref, mask = _random(n=6, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7)
    rewards = torch.randperm(6, generator=gen).float()
    kw = dict(ref_logp=ref, rewards=rewards, group=torch.arange(2).repeat_interleave(3))
    adv = torch.zeros(6)
    assert torch.equal(
        OBJECTIVES["rpo"](logp, old, adv, mask, rpo_eta=0.0, **kw),
        OBJECTIVES["online_dpo"](logp, old, adv, mask, **kw),
    )
    ours = seq_mean(OBJECTIVES["rpo"](logp, old, adv, mask, dpo_beta=0.2, rpo_eta=0.3, **kw), mask) * 6
    theirs = torch.zeros(())
    for g in range(2):
        rows = range(3 * g, 3 * g + 3)
        w = max(rows, key=lambda i: float(rewards[i]))
        lo = min(rows, key=lambda i: float(rewards[i]))
        lw, ll = (logp[w] * mask[w]).sum(), (logp[lo] * mask[lo]).sum()
        rw, rl = (ref[w] * mask[w]).sum(), (ref[lo] * mask[lo]).sum()
        h = 0.2 * ((lw - rw) - (ll - rl))
        theirs = theirs + (-torch.nn.functional.logsigmoid(h) - 0.3 * lw)
    close(ours, theirs)
    close(_grad(ours, logp), _grad(theirs, logp))


def test_rpo_bad_knobs():
    with pytest.raises(KnobError, match="rpo_eta"):
        OBJECTIVES.check_knobs("rpo", {"rpo_eta": -0.1})
    with pytest.raises(KnobError, match="dpo_beta"):
        OBJECTIVES.check_knobs("rpo", {"dpo_beta": 0.0})
    logp, mask, kw = _pair_example()
    with pytest.raises(ValueError, match="rpo needs"):
        OBJECTIVES["rpo"](logp, logp, torch.zeros(3), mask, rewards=kw["rewards"])


# ---------------------------------------------------------------- SSL


def test_ssl_hand_values():
    r = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    # K = 2, amplify 3: weights 1, 3; C = 0, 1, 4
    close(SHAPING["ssl"](r, tiers=2, amplify=3.0), torch.tensor([[0.0, 0.125, 0.25, 0.625, 1.0]]))
    close(
        SHAPING["ssl"](r, tiers=2, amplify=3.0, discrete=True),
        torch.tensor([[0.0, 0.0, 0.25, 0.25, 1.0]]),
    )
    # a reward range [-1, 1]: the same map on x = (r + 1) / 2
    close(
        SHAPING["ssl"](2 * r - 1, tiers=2, amplify=3.0, low=-1.0, high=1.0),
        2 * torch.tensor([[0.0, 0.125, 0.25, 0.625, 1.0]]) - 1,
    )


def test_ssl_neutral_order_and_loop():
    gen = torch.Generator().manual_seed(3)
    r = torch.rand(4, 6, generator=gen)
    assert torch.equal(SHAPING["ssl"](r, tiers=1, amplify=5.0), r)
    assert torch.equal(SHAPING["ssl"](r, tiers=6, amplify=1.0), r)
    s = SHAPING["ssl"](r, tiers=4, amplify=2.0)
    order = r.flatten().argsort()
    assert bool((s.flatten()[order].diff() > 0).all())  # strictly increasing: the order is kept

    def plain(x, k_tiers, a):  # the piecewise-linear map, tier by tier
        total = sum(a**j for j in range(k_tiers))
        acc = 0.0
        for k in range(k_tiers):
            lo, hi = k / k_tiers, (k + 1) / k_tiers
            if x <= hi or k == k_tiers - 1:
                return (acc + a**k * (x - lo) * k_tiers) / total
            acc += a**k

    expected = torch.tensor([[plain(float(x), 4, 2.0) for x in row] for row in r])
    close(s, expected)


def test_ssl_outside_the_range_and_bad_inputs():
    # K = 2, amplify 3: beyond 1 the top tier's slope 3 * 2 / 4 = 1.5, below 0 the bottom's 0.5
    r = torch.tensor([[-0.2, 1.1]])
    close(SHAPING["ssl"](r, tiers=2, amplify=3.0), torch.tensor([[-0.1, 1.15]]))
    close(SHAPING["ssl"](r, tiers=2, amplify=3.0, discrete=True), torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="high must be > low"):
        SHAPING["ssl"](torch.tensor([[0.5]]), low=1.0, high=1.0)
    with pytest.raises(KnobError, match="tiers"):
        SHAPING.check_knobs("ssl", {"tiers": 0})
    with pytest.raises(KnobError, match="amplify"):
        SHAPING.check_knobs("ssl", {"amplify": 0.5})


# ---------------------------------------------------------------- chi-squared regularisers


def test_chi2_hand_values_gradient_and_zero():
    # d = ln 2, -ln 2, 0, 1:  rho + 1/rho - 2 = 0.5, 0.5, 0, e + 1/e - 2 = 1.086161
    logp = torch.tensor([[math.log(0.5), math.log(0.25), -1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.5), -1.0, -2.0]])
    close(KL_ESTIMATORS["chi2"](logp, ref), torch.tensor([[0.5, 0.5, 0.0, 1.086161]]))
    g = _grad(KL_ESTIMATORS["chi2"](logp, ref).sum(), logp)  # 2 sinh(d): 1.5, -1.5, 0, 2.350402
    close(g, torch.tensor([[1.5, -1.5, 0.0, 2.350402]]))
    # occupancy: the prefix sums of d are ln 2, 0, 0, 1
    close(KL_ESTIMATORS["chi2_occupancy"](logp, ref), torch.tensor([[0.5, 0.0, 0.0, 1.086161]]))
    x = -torch.rand(6, 9, generator=torch.Generator().manual_seed(1)) * 5
    for name in ("chi2", "chi2_occupancy"):
        assert torch.equal(KL_ESTIMATORS[name](x, x), torch.zeros(6, 9))
        y = -torch.rand(6, 9, generator=torch.Generator().manual_seed(2)) * 5
        assert bool((KL_ESTIMATORS[name](x, y) >= 0).all())


def test_chi2_unbiased_for_chi_squared():
    pi = torch.tensor([0.5, 0.3, 0.2])
    ref = torch.tensor([0.2, 0.2, 0.6])
    # chi^2(pi || ref) = sum pi^2 / ref - 1 = 1.25 + 0.45 + 0.066667 - 1 = 0.766667
    gen = torch.Generator().manual_seed(4)
    y = torch.multinomial(pi, 200_000, replacement=True, generator=gen)
    est = KL_ESTIMATORS["chi2"](pi.log()[y], ref.log()[y])
    assert float(est.mean()) == pytest.approx(0.766667, abs=0.02)


def test_chi2_occupancy_unbiased_and_equals_loop():
    # two steps; the second token's distribution depends on the first
    pi1, ref1 = torch.tensor([0.6, 0.4]), torch.tensor([0.3, 0.7])
    pi2 = torch.tensor([[0.7, 0.3], [0.2, 0.8]])  # [y1, y2]
    ref2 = torch.tensor([[0.5, 0.5], [0.4, 0.6]])
    joint_pi, joint_ref = pi1[:, None] * pi2, ref1[:, None] * ref2  # [2, 2] occupancy at step 2
    exact2 = float((joint_pi**2 / joint_ref).sum() - 1)
    exact1 = float((pi1**2 / ref1).sum() - 1)
    gen = torch.Generator().manual_seed(5)
    n = 200_000
    y1 = torch.multinomial(pi1, n, replacement=True, generator=gen)  # [n]
    y2 = (torch.rand(n, generator=gen) >= pi2[y1, 0]).long()  # [n]
    logp = torch.stack([pi1.log()[y1], pi2.log()[y1, y2]], dim=1)  # [n, 2]
    lref = torch.stack([ref1.log()[y1], ref2.log()[y1, y2]], dim=1)  # [n, 2]
    est = KL_ESTIMATORS["chi2_occupancy"](logp, lref).mean(0)  # [2]
    assert float(est[0]) == pytest.approx(exact1, abs=0.02)
    assert float(est[1]) == pytest.approx(exact2, abs=0.03)
    # the plain loop: the running product of the token ratios
    logp, _, ref, _ = _random(n=4, t=6, seed=9)
    logp = logp.detach()
    out = KL_ESTIMATORS["chi2_occupancy"](logp, ref)
    for i in range(4):
        w = 1.0
        for t in range(6):
            w *= math.exp(float(logp[i, t] - ref[i, t]))
            assert float(out[i, t]) == pytest.approx(w + 1 / w - 2, rel=1e-4, abs=1e-5)


# ---------------------------------------------------------------- SPO's win rate


def test_win_rate_hand_values_and_invariants():
    r = torch.tensor([[0.2, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    # row 0: 0.2 beats 0.0 and loses twice: w = 1/3; 1.0 beats two, ties one: w = 2.5/3; 0.0: w = 0
    w = torch.tensor([[1 / 3, 2.5 / 3, 0.0, 2.5 / 3], [0.5] * 4])
    a = ADVANTAGES["win_rate"](r)
    close(a, w - 0.5)
    close(a.sum(dim=1), torch.zeros(2))
    # only the order counts
    close(ADVANTAGES["win_rate"](r.exp() * 3 - 1), a)
    # 0/1 rewards: half of RLOO's advantage
    gen = torch.Generator().manual_seed(0)
    binary = (torch.rand(5, 6, generator=gen) > 0.5).float()
    close(ADVANTAGES["win_rate"](binary), ADVANTAGES["rloo"](binary) / 2)
    assert torch.equal(ADVANTAGES["win_rate"](torch.tensor([[0.7], [0.1]])), torch.zeros(2, 1))


def test_win_rate_equals_loop():
    gen = torch.Generator().manual_seed(1)
    r = torch.randint(0, 4, (3, 5), generator=gen).float() / 3  # ties included
    expected = torch.zeros(3, 5)
    for b in range(3):
        for i in range(5):
            wins = sum(
                1.0 if r[b, i] > r[b, j] else 0.5 if r[b, i] == r[b, j] else 0.0
                for j in range(5)
                if j != i
            )
            expected[b, i] = wins / 4 - 0.5
    close(ADVANTAGES["win_rate"](r), expected)
    with pytest.raises(ValueError):
        ADVANTAGES["win_rate"](torch.zeros(4))


# ---------------------------------------------------------------- P3O


def _p3o_loop(logp, old, adv, mask, g, clip, mode):
    """sum_g L_g as a plain loop over the pairs of each group."""
    s = ((logp - old) * mask).sum(-1)
    total = torch.zeros(())
    for start in range(0, logp.shape[0], g):
        for i in range(start, start + g):
            for j in range(start, start + g):
                delta = float(adv[i] - adv[j])
                if delta <= 0:
                    continue
                if mode == "joint":
                    rho = torch.exp(s[i] - s[j])
                    total = total - torch.minimum(rho * delta, rho.clamp(1 - clip, 1 + clip) * delta) / (
                        g - 1
                    )
                else:
                    ri, rj = torch.exp(s[i]), torch.exp(s[j])
                    up = -torch.minimum(ri * delta, ri.clamp(1 - clip, 1 + clip) * delta)
                    down = -torch.minimum(-rj * delta, -rj.clamp(1 - clip, 1 + clip) * delta)
                    total = total + (up + down) / (g - 1)
    return total


@pytest.mark.parametrize("mode", ["joint", "separate"])
@pytest.mark.parametrize("seed", [0, 1])
def test_p3o_equals_loop(mode, seed):
    logp, old, _, mask = _random(n=8, t=4, seed=seed)
    old = logp.detach() + 0.15 * torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
    adv = torch.tensor([1.0, 0.0, 0.0, 0.5, 2.0, -1.0, 2.0, 0.3])
    group = torch.arange(2).repeat_interleave(4)
    stats: dict = {}
    out = OBJECTIVES["p3o"](logp, old, adv, mask, group=group, p3o_clip=mode, stats=stats)
    ours = seq_mean(out, mask) * 8
    theirs = _p3o_loop(logp, old, adv, mask, 4, 0.2, mode)
    close(ours, theirs)
    close(_grad(ours, logp), _grad(theirs, logp))
    assert stats["p3o_pairs"] == 10.0  # 5 unequal pairs in each group


def test_p3o_at_ratio_one_is_rloo_reinforce_on_summed_logp():
    logp, _, _, mask = _random(n=6, seed=3)
    old = logp.detach().clone()
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.2, 0.9])
    group = torch.arange(2).repeat_interleave(3)
    rloo = ADVANTAGES["rloo"](rewards.view(2, 3)).reshape(6)
    ref = _grad(
        AGGREGATIONS["seq_mean_token_sum"](OBJECTIVES["reinforce"](logp, old, rloo, mask), mask), logp
    )
    for mode in ("joint", "separate"):
        loss = seq_mean(OBJECTIVES["p3o"](logp, old, rewards, mask, group=group, p3o_clip=mode), mask)
        close(_grad(loss, logp), ref)
    # a per-prompt shift of the rewards changes nothing
    shifted = rewards + torch.tensor([3.0, 3.0, 3.0, -2.0, -2.0, -2.0])
    close(
        OBJECTIVES["p3o"](logp, old, shifted, mask, group=group),
        OBJECTIVES["p3o"](logp, old, rewards, mask, group=group),
    )


def test_p3o_hand_values_and_clip():
    # one group of 2, one token each: s_1 = 0.1, s_2 = -0.2, delta = 1 (row 0 the winner)
    old = torch.tensor([[-1.0], [-1.0]])
    logp = torch.tensor([[-0.9], [-1.2]], requires_grad=True)
    kw = dict(group=torch.zeros(2, dtype=torch.long))
    adv, mask = torch.tensor([1.0, 0.0]), torch.ones(2, 1)
    # joint: rho = e^0.3 = 1.349859 > 1.2: clipped, -1.2, no gradient
    out = OBJECTIVES["p3o"](logp, old, adv, mask, **kw)
    close(out, torch.tensor([[-0.6], [-0.6]]))
    assert torch.equal(_grad(out.sum(), logp), torch.zeros(2, 1))
    # separate: rho_1 = e^0.1 = 1.105171 (inside), rho_2 = e^-0.2 = 0.818731 (inside, advantage -1)
    out = OBJECTIVES["p3o"](logp, old, adv, mask, p3o_clip="separate", **kw)
    half = (-1.105171 + 0.818731) / 2
    close(out, torch.tensor([[half], [half]]))
    # no pair in a constant group
    assert torch.equal(OBJECTIVES["p3o"](logp, old, torch.ones(2), mask, **kw), torch.zeros(2, 1))


def test_p3o_bad_inputs():
    logp, old, _, mask = _random(n=4)
    with pytest.raises(ValueError, match="p3o needs `group`"):
        OBJECTIVES["p3o"](logp, old, torch.zeros(4), mask)
    with pytest.raises(ValueError, match="p3o: the rows of each group"):
        OBJECTIVES["p3o"](logp, old, torch.zeros(4), mask, group=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(KnobError, match="p3o_clip"):
        OBJECTIVES.check_knobs("p3o", {"p3o_clip": "both"})
    with pytest.raises(KnobError, match="clip_low"):
        OBJECTIVES.check_knobs("p3o", {"clip_low": 1.0})


# ---------------------------------------------------------------- PF-PPO


def test_pf_ppo_hand_values():
    r = torch.tensor([[0.2, 1.0, 0.0, 0.6], [0.9, 0.1, 0.5, 0.5]])
    a = ADVANTAGES["grpo"](r)
    z = torch.zeros(2, 4)

    def only(*cells):
        out = z.clone()
        for b, i in cells:
            out[b, i] = a[b, i]
        return out

    pf = ADVANTAGES["pf_ppo"]
    close(pf(r, pf_strategy="best_of_n"), only((0, 1), (1, 0)))
    close(pf(r, pf_strategy="best_worst"), only((0, 1), (0, 2), (1, 0), (1, 1)))
    # the first sample that is not the best: row 0 (best 1) -> 0; row 1 (best 0) -> 1
    close(pf(r, pf_strategy="best_random"), only((0, 1), (0, 0), (1, 0), (1, 1)))
    close(
        pf(r, pf_strategy="range", pf_low=0.2, pf_high=0.9),
        only((0, 0), (0, 1), (0, 2), (1, 0), (1, 1)),
    )


def test_pf_ppo_neutral_loop_and_errors():
    gen = torch.Generator().manual_seed(2)
    r = torch.rand(5, 6, generator=gen)
    assert torch.equal(
        ADVANTAGES["pf_ppo"](r, pf_strategy="range", pf_low=0.4, pf_high=0.4), ADVANTAGES["grpo"](r)
    )
    a = ADVANTAGES["grpo"](r)
    out = ADVANTAGES["pf_ppo"](r, pf_strategy="best_worst")
    for b in range(5):
        row = r[b].tolist()
        kept = {row.index(max(row)), row.index(min(row))}
        for i in range(6):
            assert float(out[b, i]) == (float(a[b, i]) if i in kept else 0.0)
    assert torch.equal(ADVANTAGES["pf_ppo"](torch.ones(2, 3)), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="pf_low must be <= pf_high"):
        ADVANTAGES["pf_ppo"](r, pf_strategy="range", pf_low=0.8, pf_high=0.2)
    with pytest.raises(KnobError, match="pf_strategy"):
        ADVANTAGES.check_knobs("pf_ppo", {"pf_strategy": "worst"})


# ---------------------------------------------------------------- RTO


def test_rto_hand_values_and_neutral():
    rewards = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    teacher = torch.tensor([[-1.0, -0.5, -2.0], [-1.0, -3.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    # token rewards 0.1 * (0.5, 0.5, -1) and 0.1 * (0, -2); rewards-to-go at gamma 1:
    # row 0: 0, -0.05, -0.1; row 1: -0.2, -0.2; grpo: +-0.707107 (std of (1, 0) = 0.707107)
    a = CREDIT["rto"](rewards, mask, teacher_logp=teacher, ref_logp=ref)
    g = 0.707106
    close(a, torch.tensor([[g, g - 0.05, g - 0.1], [-g - 0.2, -g - 0.2, 0.0]]), atol=1e-5, rtol=0)
    # gamma 0: each token its own reward
    a0 = CREDIT["rto"](rewards, mask, teacher_logp=teacher, ref_logp=ref, gamma=0.0, outcome_coef=0.0)
    close(a0, torch.tensor([[0.05, 0.05, -0.1], [0.0, -0.2, 0.0]]))
    # rto_beta = 0: grpo's advantage on every counted token, the log-probs not read
    base = ADVANTAGES["grpo"](rewards).reshape(2, 1) * mask
    close(CREDIT["rto"](rewards, mask, rto_beta=0.0), base)
    with pytest.raises(ValueError, match="rto needs 'ref_logp'"):
        CREDIT["rto"](rewards, mask, teacher_logp=teacher)
    assert CREDIT.needs("rto") == {"teacher_logp", "ref_logp"}


def test_rto_equals_loop():
    gen = torch.Generator().manual_seed(8)
    rewards = torch.rand(2, 3, generator=gen)
    _, teacher, ref, mask = _random(n=6, t=5, seed=8)
    a = CREDIT["rto"](rewards, mask, teacher_logp=teacher, ref_logp=ref, gamma=0.9, rto_beta=0.3)
    outcome = ADVANTAGES["grpo"](rewards).reshape(6)
    for i in range(6):
        for t in range(5):
            if not mask[i, t]:
                assert float(a[i, t]) == 0.0
                continue
            togo = sum(
                0.9 ** (k - t) * float(teacher[i, k] - ref[i, k]) for k in range(t, 5) if mask[i, k]
            )
            assert float(a[i, t]) == pytest.approx(float(outcome[i]) + 0.3 * togo, abs=1e-5)
