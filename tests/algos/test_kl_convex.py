"""ReMix's KL-convex constraint: lam * D(pi, ref) + (1 - lam) * D(pi, behaviour), per token."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import KL_ESTIMATORS
from rlvr.algos.kl import k1, k3, kl_convex

LOGP = torch.tensor([[0.0, -1.0]])  # [N=1, T=2]
REF = torch.tensor([[-1.0, -1.0]])
OLD = torch.tensor([[0.0, 0.0]])


def test_hand_values_k3_and_k1():
    # k3(logp, ref): log r = ref - logp = [-1, 0] -> [e^-1 - 1 + 1, 0] = [e^-1, 0]
    # k3(logp, old): log r = old - logp = [0, 1] -> [0, e - 1 - 1] = [0, e - 2]
    out = kl_convex(LOGP, REF, OLD, estimator=k3, lam=0.25)
    want = torch.tensor([[0.25 * math.exp(-1.0), 0.75 * (math.e - 2.0)]])
    torch.testing.assert_close(out, want)
    # k1: logp - ref = [1, 0], logp - old = [0, -1] -> [0.25, -0.75]
    torch.testing.assert_close(
        kl_convex(LOGP, REF, OLD, estimator=k1, lam=0.25), torch.tensor([[0.25, -0.75]])
    )


@pytest.mark.parametrize("name", KL_ESTIMATORS.names())
def test_lambda_one_is_the_reference_kl_bit_for_bit(name):
    """Neutral setting: lam = 1 gives the estimator's reference KL exactly, whatever old_logp is
    (even non-finite: the behaviour term is not computed)."""
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(3, 5, generator=g) * 3, -torch.rand(3, 5, generator=g) * 3  # [3, 5]
    old = torch.full((3, 5), float("-inf"))  # [3, 5]
    est = KL_ESTIMATORS[name]
    assert torch.equal(kl_convex(logp, ref, old, estimator=est, lam=1.0), est(logp, ref))


def test_lambda_zero_is_the_behaviour_kl_and_endpoints_interpolate():
    g = torch.Generator().manual_seed(1)
    logp, ref, old = (-torch.rand(4, 6, generator=g) * 2 for _ in range(3))  # [4, 6] each
    assert torch.equal(kl_convex(logp, ref, old, estimator=k3, lam=0.0), k3(logp, old))
    a, b = k3(logp, ref), k3(logp, old)  # [4, 6]
    for lam in (0.1, 0.5, 0.9):
        mid = kl_convex(logp, ref, old, estimator=k3, lam=lam)  # [4, 6]
        torch.testing.assert_close(mid, lam * a + (1 - lam) * b)
        assert torch.all(mid >= 0)  # a convex combination of non-negative k3 terms
        assert torch.all(mid <= torch.maximum(a, b) + 1e-6)


def test_zero_when_the_policy_is_both_anchors_and_gradient_by_hand():
    logp = torch.tensor([[-0.5, -2.0]], requires_grad=True)  # [1, 2]
    same = logp.detach().clone()
    assert torch.equal(kl_convex(logp, same, same, estimator=k3, lam=0.3), torch.zeros(1, 2))
    # d k3 / d logp = 1 - exp(anchor - logp); convex: lam (1 - r_ref) + (1 - lam) (1 - r_old)
    ref, old = torch.tensor([[-1.5, -2.0]]), torch.tensor([[-0.5, -1.0]])
    kl_convex(logp, ref, old, estimator=k3, lam=0.3).sum().backward()
    want = torch.tensor(
        [[0.3 * (1 - math.exp(-1.0)) + 0.0, 0.0 + 0.7 * (1 - math.exp(1.0))]]
    )  # token 0: only the reference differs; token 1: only the behaviour policy
    torch.testing.assert_close(logp.grad, want)


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_lambda_outside_the_unit_interval_is_refused(lam):
    with pytest.raises(ValueError, match=r"lam in \[0, 1\]"):
        kl_convex(LOGP, REF, OLD, estimator=k3, lam=lam)
