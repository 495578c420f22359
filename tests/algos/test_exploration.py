"""Exploration, entropy and KL components (theme 4): APO (dads, stcr), D^3S (advantage and
objective), HICRA, EMPG's future-clarity bonus, COPO. Hand values, neutral settings, loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, OBJECTIVES, SHAPING, TOKEN_WEIGHTS
from rlvr.algos.advantages import copo, d3s, grpo, max_variance_subset
from rlvr.algos.kl import k3
from rlvr.algos.objectives import d3s as d3s_tokens
from rlvr.algos.objectives import dads, hicra, planning_mask, ppo_clip
from rlvr.algos.objectives import empg as empg_objective
from rlvr.algos.shaping import stcr

close = torch.testing.assert_close


def _random(n: int = 6, t: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g) * 3
    mask = (torch.rand(n, t, generator=g) > 0.2).float()
    mask[:, 0] = 1.0
    return {
        "logp": old + 0.1 * torch.randn(n, t, generator=g),
        "old_logp": old,
        "adv": torch.randn(n, generator=g),
        "mask": mask,
    }


def test_registered():
    assert OBJECTIVES["dads"] is dads and OBJECTIVES["d3s"] is d3s_tokens
    assert OBJECTIVES["hicra"] is hicra and OBJECTIVES["empg"] is empg_objective
    assert ADVANTAGES["d3s"] is d3s and ADVANTAGES["copo"] is copo
    assert SHAPING["stcr"] is stcr


# ---------------------------------------------------------------- APO: dads


def test_dads_hand_values():
    # ratio 1, so ppo_clip is -A on every counted token; KL by k1 = logp - ref = .5 on token 0
    logp = torch.tensor([[-1.0, -2.0]] * 4)
    ref = torch.tensor([[-1.5, -2.0]] * 4)
    adv = torch.tensor([1.0, -1.0, 0.5, 0.5])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])  # success rates: group 0 .5, group 1 1.0
    group = torch.tensor([0, 0, 1, 1])
    kw = {"ref_logp": ref, "rewards": rewards, "group": group, "dads_beta": 0.1, "dads_kl": "k1"}
    # beta = .1 * p on positive samples: .05, 0 (A < 0), .1, .1
    out = dads(logp, logp, adv, mask, **kw)
    want = torch.tensor([[-0.975, -1.0], [1.0, 1.0], [-0.45, -0.5], [-0.45, 0.0]])
    close(out, want)
    # dads_power = 2: group 0's beta is .1 * .25 = .025 -> -1 + .025 * .5 = -.9875
    close(dads(logp, logp, adv, mask, **kw, dads_power=2.0)[0], torch.tensor([-0.9875, -1.0]))
    # the default estimator is k3
    base = ppo_clip(logp, logp, adv, mask)
    beta = torch.tensor([0.05, 0.0, 0.1, 0.1]).unsqueeze(-1)
    close(dads(logp, logp, adv, mask, **{**kw, "dads_kl": "k3"}), base + beta * k3(logp, ref) * mask)


def test_dads_neutral_is_ppo_clip():
    x = _random()
    rewards, group = torch.rand(6), torch.arange(3).repeat_interleave(2)
    out = dads(**x, ref_logp=x["old_logp"] - 0.3, rewards=rewards, group=group, dads_beta=0.0)
    assert torch.equal(out, ppo_clip(**x))


# ---------------------------------------------------------------- APO: stcr


def test_stcr_hand_values_and_neutral():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    correct = rewards.clone()
    lengths = torch.tensor([[10.0, 4.0, 8.0, 12.0], [16.0, 2.0, 6.0, 6.0]])
    # group 0: wrong mean (4 + 8 + 12) / 3 = 8; only the 12 exceeds it: .5 * 4 / 16 = .125
    # group 1: wrong mean 6, no excess; the long correct answer (16) is untouched
    out = stcr(rewards, lengths=lengths, correct=correct, max_len=16, coef=0.5)
    close(out, torch.tensor([[1.0, 0.0, 0.0, -0.125], [1.0, 1.0, 0.0, 0.0]]))
    same = stcr(rewards, lengths=lengths, correct=correct, max_len=16, coef=0.0)
    assert torch.equal(same, rewards.float())


# ---------------------------------------------------------------- D^3S


def test_max_variance_subset_hand_values():
    # sorted -1, 0, .1, .5, 2; k = 3: {-1, 0, 2} has var 1.5556, {-1, .5, 2} 1.5, {.1, .5, 2} .6156
    keep = max_variance_subset(torch.tensor([[0.1, 0.5, -1.0, 2.0, 0.0]]), 3)
    assert keep.tolist() == [[False, False, True, True, True]]


def test_max_variance_subset_equals_brute_force():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(6, 7, generator=g)
    for k in range(1, 8):
        keep = max_variance_subset(a, k)
        assert (keep.sum(1) == k).all()
        for b in range(a.shape[0]):
            row = a[b].double()
            best = max(
                float(row[list(s)].var(unbiased=False)) for s in itertools.combinations(range(7), k)
            )
            assert float(row[keep[b]].var(unbiased=False)) == pytest.approx(best, abs=1e-9)


def test_d3s_advantage_hand_values_and_neutral():
    r = torch.tensor([[0.0, 0.2, 0.6, 1.0]])
    # grpo: mean .45, deviations -.45 -.25 .15 .55, std sqrt(.59 / 3) = .443471
    #   A = -1.014718, -.563732, .338239, 1.240212
    # k = 2: {A1, A4} has var (2.254930 / 2)^2 = 1.271676, {A3, A4} .203391, {A1, A2} .050826
    close(d3s(r, d3s_rollouts=0.5), torch.tensor([[-1.014718, 0.0, 0.0, 1.240212]]))
    assert torch.equal(d3s(r, d3s_rollouts=1.0), grpo(r))


def test_d3s_tokens_hand_values():
    adv = torch.tensor([1.0, -2.0])
    ent = torch.tensor([[0.5, 0.1, 0.3], [0.2, 0.05, 0.4]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logp = torch.zeros(2, 3)
    # |A| * H on the 5 counted tokens: .5 .1 .3 | .4 .1 (the .8 is padding); ratio 1: L = -A
    # 0.4 -> k = 2: .5 and .4
    out = d3s_tokens(logp, logp, adv, mask, entropy=ent, d3s_tokens=0.4)
    close(out, torch.tensor([[-1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    # 0.5 -> k = ceil(2.5) = 3: also the .3
    out = d3s_tokens(logp, logp, adv, mask, entropy=ent, d3s_tokens=0.5)
    close(out, torch.tensor([[-1.0, 0.0, -1.0], [2.0, 0.0, 0.0]]))


def test_d3s_tokens_equals_loop_and_neutral():
    x = _random(n=5, t=6, seed=3)
    ent = torch.rand(5, 6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(d3s_tokens(**x, entropy=ent, d3s_tokens=1.0), ppo_clip(**x))
    out = d3s_tokens(**x, entropy=ent, d3s_tokens=0.3)
    base = ppo_clip(**x)
    counted = [(i, t) for i in range(5) for t in range(6) if x["mask"][i, t] > 0]
    score = {(i, t): abs(float(x["adv"][i])) * float(ent[i, t]) for i, t in counted}
    kept = sorted(counted, key=lambda it: -score[it])[: math.ceil(0.3 * len(counted))]
    want = torch.zeros(5, 6)
    for i, t in kept:
        want[i, t] = base[i, t]
    assert torch.equal(out, want)


# ---------------------------------------------------------------- HICRA


def _planning_loop(ids, mask, grams):
    n, t = ids.shape
    out = [[False] * t for _ in range(n)]
    for i in range(n):
        for gram in grams:
            width = len(gram)
            for s in range(t - width + 1):
                window = ids[i, s : s + width].tolist()
                if window == gram and all(mask[i, s + j] > 0 for j in range(width)):
                    for j in range(width):
                        out[i][s + j] = True
    return torch.tensor(out)


def test_planning_mask_hand_values_and_loop():
    ids = torch.tensor([[5, 7, 8, 7, 8, 9], [7, 8, 1, 2, 7, 8]])
    mask = torch.tensor([[1.0] * 6, [1.0] * 5 + [0.0]])
    grams = [[7, 8], [9]]
    # row 0: 7 8 at 1-2 and 3-4, 9 at 5; row 1: 7 8 at 0-1 (the one at 4-5 ends on padding)
    want = [[False, True, True, True, True, True], [True, True, False, False, False, False]]
    assert planning_mask(ids, mask, grams).tolist() == want
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 4, (7, 9), generator=g)
    mask = (torch.rand(7, 9, generator=g) > 0.2).float()
    grams = [[1, 2], [3], [0, 1, 0]]
    assert torch.equal(planning_mask(ids, mask, grams), _planning_loop(ids, mask, grams))


def test_hicra_hand_values_and_neutral():
    ids = torch.tensor([[5, 7, 8, 7, 8, 9], [7, 8, 1, 2, 7, 8]])
    mask = torch.tensor([[1.0] * 6, [1.0] * 5 + [0.0]])
    adv = torch.tensor([1.0, -2.0])
    logp = torch.zeros(2, 6)
    kw = {"completion_ids": ids, "planning_grams": [[7, 8], [9]]}
    # ratio 1, L = -(A + .5 |A| P): row 0 -1 off / -1.5 on planning; row 1 2 off / 2 - 1 = 1 on
    out = hicra(logp, logp, adv, mask, **kw, hicra_alpha=0.5)
    want = torch.tensor([[-1.0, -1.5, -1.5, -1.5, -1.5, -1.5], [1.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    close(out, want)
    x = _random()
    ids = torch.randint(0, 3, (6, 5), generator=torch.Generator().manual_seed(9))
    grams = [[1, 2]]
    off = hicra(**x, completion_ids=ids, planning_grams=grams, hicra_alpha=0.0)
    assert torch.equal(off, ppo_clip(**x))
    assert torch.equal(hicra(**x, completion_ids=ids, planning_grams=None), ppo_clip(**x))


# ---------------------------------------------------------------- EMPG with the future-clarity bonus


def test_empg_objective_hand_values():
    ent = torch.tensor([[0.0, 1.0, 0.5]])
    mask = torch.ones(1, 3)
    logp = torch.zeros(1, 3)
    adv = torch.tensor([1.0])
    ln2 = math.log(2.0)
    # Hn = 0, 1, .5;  exp(-ln2 Hn) = 1, .5, .707107, mean .735702 -> g = 1.359246, .679623, .961132
    # f = exp(-ln2 Hn_{t+1}) = .5, .707107, 0 (last token);  A' = g + .2 f
    #   = 1.359246 + .1, .679623 + .141421, .961132 = 1.459246, .821044, .961132
    out = empg_objective(logp, logp, adv, mask, entropy=ent, k=ln2, k_future=ln2, zeta=0.2)
    close(out, -torch.tensor([[1.459246, 0.821044, 0.961132]]))
    # the last counted token gets no bonus: with mask 1 1 0, Hn = 0, 1 (min-max over the counted)
    # g = 1 / .75, .5 / .75;  f = .5 (its successor has Hn 1), 0
    out = empg_objective(
        logp, logp, adv, torch.tensor([[1.0, 1.0, 0.0]]), entropy=ent, k=ln2, k_future=ln2, zeta=0.2
    )
    close(out, -torch.tensor([[4 / 3 + 0.1, 2 / 3, 0.0]]))


def test_empg_objective_neutral_and_zeta_zero():
    x = _random(seed=11)
    ent = torch.rand(6, 5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(empg_objective(**x, entropy=ent, k=0.0, zeta=0.0), ppo_clip(**x))
    # zeta = 0 at ratio 1: the token weights' loss
    on = {**x, "logp": x["old_logp"]}
    w = TOKEN_WEIGHTS["empg"](x["mask"], entropy=ent, k=1.5)
    close(empg_objective(**on, entropy=ent, k=1.5, zeta=0.0), ppo_clip(**on) * w)


# ---------------------------------------------------------------- COPO


def test_copo_hand_values_and_neutral():
    r = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    # local (grpo): 0 | -.707107 .707107 | 0
    # global: batch mean .5, std sqrt(6 * .25 / 5) = .547723 -> +-.912871
    # p = 1, .5, 0 -> H = 0, 1, 0 -> w = 1, 0, 1
    want = torch.tensor([[0.912871, 0.912871], [-0.707107, 0.707107], [-0.912871, -0.912871]])
    close(copo(r), want)
    # copo_global = .5: w = .5, 0, .5
    want_half = torch.tensor([[0.456435, 0.456435], [-0.707107, 0.707107], [-0.456435, -0.456435]])
    close(copo(r, copo_global=0.5), want_half)
    assert torch.equal(copo(r, copo_global=0.0), grpo(r))
    assert torch.equal(copo(torch.ones(2, 3)), torch.zeros(2, 3))
