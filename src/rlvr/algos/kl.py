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
    """k1 = logp - ref_logp (Schulman 2020, "Approximating KL Divergence")."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)^2 / 2 (Schulman 2020, "Approximating KL Divergence")."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1 (always >= 0; Schulman 2020, "Approximating
    KL Divergence")."""
    log_ratio = ref_logp - logp  # [N, T]
    return torch.expm1(log_ratio) - log_ratio  # expm1: no cancellation when log_ratio ~ 0


def adaptive_kl_coef(coef: float, kl: float, *, target: float, horizon: int, n: int) -> float:
    """Adaptive KL coefficient ("Fine-Tuning Language Models from Human Preferences", Ziegler et al.).

    e = clip(kl / target - 1, -0.2, 0.2);   coef <- coef * (1 + e * n / horizon)

    ``kl`` is the KL observed this step (mean per token), ``n`` the number of sequences it came from:
    the coefficient grows while the policy drifts further than ``target`` from the reference and
    shrinks while it stays closer.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target}, {horizon}")
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n / horizon)
