"""vps_progress: GRPO's outcome advantage plus each segment's normalised progress."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import CREDIT
from rlvr.algos.advantages import grpo
from rlvr.algos.credit import vps_progress


def _loop(rewards, mask, p, coef=1.0, eps=1e-6):
    """Plain loops: per group the step ends' mean and unbiased std, per token its step's z."""
    b, g = rewards.shape
    n, t = mask.shape
    out = torch.zeros(n, t)
    base = grpo(rewards, eps=eps)
    for gi in range(b):
        vals = [
            float(p[gi * g + j, s])
            for j in range(g)
            for s in range(t)
            if p[gi * g + j, s] != 0 and mask[gi * g + j, s]
        ]
        mean = sum(vals) / len(vals) if vals else 0.0
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        for j in range(g):
            i = gi * g + j
            for s in range(t):
                if not mask[i, s]:
                    continue
                z = 0.0
                for u in range(s, t):
                    if p[i, u] != 0 and mask[i, u]:
                        z = (float(p[i, u]) - mean) / (std + eps) if std > 0 else 0.0
                        break
                out[i, s] = float(base[gi, j]) + coef * z
    return out


def test_hand_values():
    rewards = torch.tensor([[1.0, 0.0]])  # grpo: +-1/sqrt(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    p = torch.tensor([[0.0, 2.0, 4.0, 9.0], [0.0, 0.0, 0.0, -3.0]])  # 9.0 is padding: no step
    adv = vps_progress(rewards, mask, process_rewards=p, coef=0.5, eps=0.0)
    # step ends 2, 4, -3: mean 1, unbiased std sqrt((1 + 9 + 16) / 2) = sqrt(13)
    z = [1 / math.sqrt(13), 3 / math.sqrt(13), -4 / math.sqrt(13)]
    a = 1 / math.sqrt(2)
    expected = torch.tensor(
        [
            [a + 0.5 * z[0], a + 0.5 * z[0], a + 0.5 * z[1], 0.0],
            [-a + 0.5 * z[2]] * 4,
        ]
    )
    assert torch.allclose(adv, expected, atol=1e-6)


def test_neutral_coef_zero_is_grpo_and_vectorised_equals_loop():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (3, 4), generator=gen).float()
    mask = (torch.rand(12, 7, generator=gen) > 0.1).long().cummin(1).values
    p = torch.where(torch.rand(12, 7, generator=gen) > 0.6, torch.randn(12, 7, generator=gen), 0.0)
    adv0 = vps_progress(rewards, mask, process_rewards=p, coef=0.0)
    assert torch.allclose(adv0, (grpo(rewards).reshape(-1, 1) * mask).float())
    for coef in (0.3, 1.0):
        adv = vps_progress(rewards, mask, process_rewards=p, coef=coef)
        assert torch.allclose(adv, _loop(rewards, mask, p, coef), atol=1e-5)
    assert bool((adv[mask == 0] == 0).all())


def test_one_step_groups_add_nothing_and_errors():
    rewards = torch.tensor([[1.0, 0.0]])
    mask = torch.ones(2, 3)
    p = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])  # one step end in the group
    adv = vps_progress(rewards, mask, process_rewards=p)
    assert torch.allclose(adv, grpo(rewards).reshape(-1, 1).expand(2, 3))
    assert CREDIT.needs("vps_progress") == {"process_rewards"}
    with pytest.raises(ValueError, match="needs 'process_rewards'"):
        vps_progress(rewards, mask)
    with pytest.raises(ValueError, match="shape of mask"):
        vps_progress(rewards, mask, process_rewards=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="scale"):
        vps_progress(rewards, mask, process_rewards=p, scale="batch")
