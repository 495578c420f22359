"""Truncated importance sampling weights for stale (asynchronous) rollouts: hand values."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos.weights import truncated_is


def test_truncated_is_hand_values():
    prox = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.3, 0.3, 0.1]]))  # [2, 3]
    behav = torch.log(torch.tensor([[0.25, 0.4, 0.3], [0.3, 0.1, 0.5]]))  # [2, 3]
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    stats: dict[str, float] = {}
    w = truncated_is(prox, behav, mask, cap=2.0, stats=stats)
    # ratios 2, 0.5, 3 | 1, 3, (masked 0.2) -> truncated at 2
    expected = torch.tensor([[2.0, 0.5, 2.0], [1.0, 2.0, 0.0]])
    assert torch.allclose(w, expected, atol=1e-6)
    assert stats["is_weight_mean"] == pytest.approx((2 + 0.5 + 3 + 1 + 3) / 5, rel=1e-6)
    assert stats["is_weight_max"] == pytest.approx(3.0, rel=1e-6)
    assert stats["is_truncated_frac"] == pytest.approx(2 / 5)


def test_truncated_is_is_one_on_policy_and_plain_is_without_cap():
    logp = torch.randn(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    assert torch.equal(truncated_is(logp, logp, mask, cap=1.0), mask)
    behav = logp - 0.7
    w = truncated_is(logp, behav, mask, cap=math.inf)
    assert torch.allclose(w, math.exp(0.7) * mask)
    with pytest.raises(ValueError, match="must be >= 1"):
        truncated_is(logp, logp, mask, cap=0.5)
