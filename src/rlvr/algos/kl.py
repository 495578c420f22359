"""KL estimators between the current and the reference policy, per token: -> [N, T].

With d = logp - ref_logp on tokens sampled from the current policy (Schulman, "Approximating KL"):
k1 = d;  k2 = d^2 / 2;  k3 = exp(-d) - 1 + d = exp(ref_logp - logp) - (ref_logp - logp) - 1.
k1 is unbiased but can be negative; k3 is unbiased and non-negative; k2 is biased, low variance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.registry import Registry

KL_ESTIMATORS = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)^2 / 2."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1 (always >= 0)."""
    log_ratio = ref_logp - logp  # [N, T]
    return torch.expm1(log_ratio) - log_ratio  # expm1: no cancellation when log_ratio ~ 0
