"""SRPO's sample-routed credit (``credit:srpo``): hand values, the neutral setting, a plain loop,
and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import CREDIT
from rlvr.algos.advantages import grpo
from rlvr.algos.credit import srpo
from rlvr.registry import KnobError

close = torch.testing.assert_close


def _batch():
    """B = 2 x G = 2, T = 3. Group 0: row 0 correct (reward 1), row 1 failed; group 1: both failed.
    Rows 1, 2, 3 are routed (h = 1). On their counted tokens d = teacher - old is [1, -1, 2 | 0.5 |
    -1, 0] and u = exp(-H) is [1, 1/2, 1/4 | 1/4 | 1, 1/2] (9s sit on masked positions)."""
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    old = torch.tensor([[-1.0, -1.0, 9.0], [-2.0, -1.0, -3.0], [-1.0, 9.0, 9.0], [-1.0, -2.0, 9.0]])
    teacher = torch.tensor([[-5.0, -5.0, 9.0], [-1.0, -2.0, -1.0], [-0.5, 9.0, 9.0], [-2.0, -2.0, 9.0]])
    ln2, ln4 = math.log(2), math.log(4)
    ent = torch.tensor([[3.0, 3.0, 9.0], [0.0, ln2, ln4], [ln4, 9.0, 9.0], [0.0, ln2, 9.0]])
    h = torch.tensor([0.0, 1.0, 1.0, 1.0])
    return rewards, mask, old, teacher, ent, h


def _srpo(**knobs):
    rewards, mask, old, teacher, ent, h = _batch()
    return srpo(
        rewards,
        mask,
        old_logp=old,
        self_teacher_logp=teacher,
        self_teacher_entropy=ent,
        self_teacher_mask=h,
        **knobs,
    )


def test_srpo_hand_values():
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # grpo of (1, 0); the constant group (0, 0) has 0
    k = 12 / 7  # 1 / mean u over the 6 routed tokens: sum u = 3.5
    want = torch.tensor(
        [
            [a, a, 0.0],  # correct: grpo's advantage
            [k * 1, k * 0.5 * -1, k * 0.25 * 2],  # routed: no grpo term, w d
            [k * 0.25 * 0.5, 0.0, 0.0],
            [k * 1 * -1, k * 0.5 * 0, 0.0],
        ]
    )
    close(_srpo(), want)
    # half the grpo term kept, twice the distillation
    half = want.clone()
    half[1:] *= 2
    half[1] += 0.5 * -a
    close(_srpo(route=0.5, distill_coef=2.0), half)
    # entropy_scale = 0: uniform weights, the plain self-distillation signal on routed rows
    plain = torch.tensor([[a, a, 0.0], [1.0, -1.0, 2.0], [0.5, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    close(_srpo(entropy_scale=0.0), plain)
    # entropy_scale = 2: u = exp(-2 H) = [1, 1/4, 1/16 | 1/16 | 1, 1/4], sum 2.625
    k2 = 6 / 2.625
    close(_srpo(entropy_scale=2.0)[1], torch.tensor([k2, -k2 / 4, k2 / 8]))


def test_srpo_without_distillation_or_routing_is_grpo_to_the_bit():
    gen = torch.Generator().manual_seed(5)
    rewards = torch.rand(3, 4, generator=gen)
    rewards[2] = 0.0  # a constant group
    mask = (torch.rand(12, 6, generator=gen) > 0.3).float()  # [N, T] with holes
    grpo_tok = torch.where(mask.bool(), grpo(rewards).reshape(-1, 1), 0.0)  # [N, T]
    junk = torch.randn(12, 6, generator=gen)
    h = (torch.rand(12, generator=gen) > 0.5).float()
    for inputs in (
        {
            "old_logp": junk,
            "self_teacher_logp": junk,
            "self_teacher_entropy": junk,
            "self_teacher_mask": h,
        },
        {},
    ):
        assert torch.equal(srpo(rewards, mask, distill_coef=0.0, route=0.0, **inputs), grpo_tok)
    # no routed row: grpo whatever the knobs
    none = torch.zeros(12)
    out = srpo(
        rewards,
        mask,
        old_logp=junk,
        self_teacher_logp=junk,
        self_teacher_entropy=junk,
        self_teacher_mask=none,
    )
    assert torch.equal(out, grpo_tok)
    # routing alone (no distillation): routed rows lose their grpo advantage
    out = srpo(rewards, mask, distill_coef=0.0, self_teacher_mask=h)
    assert torch.equal(out, grpo_tok * (1 - h)[:, None])


def _loop(rewards, mask, old, teacher, ent, h, distill_coef, route, entropy_scale):
    g = rewards.shape[1]
    n, t = mask.shape
    us = [
        math.exp(-entropy_scale * float(ent[i, j]))
        for i in range(n)
        for j in range(t)
        if mask[i, j] and h[i]
    ]
    mean_u = sum(us) / len(us)
    out = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        grp = [float(x) for x in rewards[i // g]]
        mu = sum(grp) / g
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / (g - 1))
        a = 0.0 if max(grp) == min(grp) else (grp[i % g] - mu) / (sd + 1e-6)
        for j in range(t):
            if not mask[i, j]:
                continue
            v = (1 - route * float(h[i])) * a
            if h[i]:
                w = math.exp(-entropy_scale * float(ent[i, j])) / mean_u
                v += distill_coef * w * float(teacher[i, j] - old[i, j])
            out[i, j] = v
    return out.float()


def test_srpo_matches_a_plain_loop():
    gen = torch.Generator().manual_seed(11)
    rewards = (torch.rand(4, 3, generator=gen) > 0.5).float()
    mask = (torch.rand(12, 5, generator=gen) > 0.25).float()
    old, teacher = -torch.rand(12, 5, generator=gen) * 3, -torch.rand(12, 5, generator=gen) * 3
    ent = torch.rand(12, 5, generator=gen) * 2
    h = (torch.rand(12, generator=gen) > 0.4).float()
    for knobs in ((1.0, 1.0, 1.0), (0.3, 0.6, 2.5), (2.0, 0.0, 0.0)):
        got = srpo(
            rewards,
            mask,
            old_logp=old,
            self_teacher_logp=teacher,
            self_teacher_entropy=ent,
            self_teacher_mask=h,
            distill_coef=knobs[0],
            route=knobs[1],
            entropy_scale=knobs[2],
        )
        close(got, _loop(rewards, mask, old, teacher, ent, h, *knobs), rtol=1e-5, atol=1e-6)


def test_srpo_registration_errors_and_bounds():
    assert CREDIT["srpo"] is srpo
    assert CREDIT.needs("srpo") == {
        "old_logp",
        "self_teacher_logp",
        "self_teacher_entropy",
        "self_teacher_mask",
    }
    assert CREDIT.knobs("srpo") == {
        "distill_coef": 1.0,
        "route": 1.0,
        "entropy_scale": 1.0,
        "scale": "group",
        "eps": 1e-6,
    }
    for knobs in ({"distill_coef": -1.0}, {"route": 1.5}, {"entropy_scale": -0.1}, {"eps": -1.0}):
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("srpo", knobs)
    rewards, mask, old, teacher, ent, h = _batch()
    with pytest.raises(ValueError, match=r"srpo needs 'self_teacher_mask' \[N\] with N = 4"):
        srpo(rewards, mask, old_logp=old, self_teacher_logp=teacher, self_teacher_entropy=ent)
    with pytest.raises(ValueError, match="srpo needs 'self_teacher_entropy'"):
        srpo(rewards, mask, old_logp=old, self_teacher_logp=teacher, self_teacher_mask=h)
    with pytest.raises(ValueError, match="self_teacher_logp must have the shape of mask"):
        srpo(
            rewards,
            mask,
            old_logp=old,
            self_teacher_logp=teacher[:, :2],
            self_teacher_entropy=ent,
            self_teacher_mask=h,
        )
