"""KL estimators between the current and the reference policy, per token: -> [N, T].

With d = logp - ref_logp on tokens sampled from the current policy (Schulman, "Approximating KL"):
k1 = d;  k2 = d^2 / 2;  k3 = exp(-d) - 1 + d = exp(ref_logp - logp) - (ref_logp - logp) - 1.
k1 is unbiased but can be negative; k3 is unbiased and non-negative; k2 is biased, low variance.

The forward estimators fk1, fk2, fk3 estimate KL(ref || pi) from the same tokens (sampled from pi) by
importance weighting with r = exp(ref_logp - logp) = ref / pi: fk1 = r log r, fk2 = r (log r)^2 / 2,
fk3 = r log r - (r - 1).

The chi-squared estimators chi2 and chi2_occupancy estimate chi^2(pi || ref) = E_ref[(pi/ref - 1)^2]
from the same tokens, per action and per prefix (the occupancy measure of the token MDP).

:func:`kl_convex` is not an estimator but a combination of two terms of one chosen estimator: ReMix's
KL-convex policy constraint, lam * KL(pi || ref) + (1 - lam) * KL(pi || behaviour).
"""

from __future__ import annotations

from collections.abc import Callable

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


def _ratio_and_log(logp: Tensor, ref_logp: Tensor) -> tuple[Tensor, Tensor]:
    """(r, log r) with log r = ref_logp - logp, the importance weight ref / pi of each token. [N, T]"""
    log_r = ref_logp - logp  # [N, T]
    return torch.exp(log_r), log_r


@KL_ESTIMATORS.register("fk1")
def fk1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Forward KL(ref || pi), importance-weighted k1 (after Schulman 2020, "Approximating KL
    Divergence"; the forward KL penalty of RAPO, "Unlocking Reasoning Capabilities in LLMs via
    Reinforcement Learning Exploration").

    With r = ref(y) / pi(y) = exp(ref_logp - logp) on tokens y sampled from pi:
    fk1 = r * log r,   E_pi[fk1] = E_ref[log(ref / pi)] = KL(ref || pi).

    Unbiased (for tokens sampled from the policy it is evaluated under), but negative wherever
    r < 1, and of high variance: r is unbounded where pi gives a sampled token much less mass than
    the reference does. As a loss (tokens held fixed) its gradient is -r (log r + 1) grad logp.
    """
    r, log_r = _ratio_and_log(logp, ref_logp)
    return r * log_r  # [N, T]


@KL_ESTIMATORS.register("fk2")
def fk2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Forward KL(ref || pi), importance-weighted k2 (after Schulman 2020, "Approximating KL
    Divergence").

    fk2 = r * (log r)^2 / 2 with r = exp(ref_logp - logp);  E_pi[fk2] = E_ref[(log(ref / pi))^2] / 2.

    Biased: it equals KL(ref || pi) only to second order in log r (the bias is O(E_ref |log r|^3)
    when the two policies are close, and grows without bound when they are not); always >= 0.
    """
    r, log_r = _ratio_and_log(logp, ref_logp)
    return 0.5 * r * log_r**2  # [N, T]


@KL_ESTIMATORS.register("fk3")
def fk3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Forward KL(ref || pi), importance-weighted k3 (after Schulman 2020, "Approximating KL
    Divergence"; the forward KL penalty of RAPO, "Unlocking Reasoning Capabilities in LLMs via
    Reinforcement Learning Exploration").

    fk3 = r log r - (r - 1) with r = exp(ref_logp - logp) on tokens sampled from pi.

    Unbiased, since E_pi[r - 1] = 0, so E_pi[fk3] = E_pi[fk1] = KL(ref || pi); and always >= 0
    (x log x - x + 1 >= 0, equality at x = 1), with lower variance than fk1 when the policies are
    close. r is unbounded, so the variance is large where the policy has dropped a token the
    reference likes. As a loss (tokens held fixed) its gradient is -r log r grad logp, while the
    gradient of the per-position forward KL is -E_pi[(r - 1) grad logp]: the two agree to first order
    in log r (as k3's does for the reverse KL).
    """
    r, log_r = _ratio_and_log(logp, ref_logp)
    return r * log_r - torch.expm1(log_r)  # [N, T]; expm1: r - 1 without cancellation near r = 1


@KL_ESTIMATORS.register("chi2")
def chi2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Chi-squared divergence chi^2(pi || ref) per token, the action-level form of the regulariser of
    "Correlated Proxies: A New Definition and Improved Mitigation for Reward Hacking".

    With rho = pi / ref = exp(logp - ref_logp) on tokens sampled from pi:
    chi^2(pi || ref) = E_ref[(rho - 1)^2] = E_pi[rho] - 1, and E_pi[1 / rho - 1] = 0, so
    chi2 = rho + 1 / rho - 2 = (rho - 1)^2 / rho = 2 (cosh(d) - 1),   d = logp - ref_logp,

    is unbiased and >= 0 (0 only at rho = 1): the control variate 1 / rho - 1 does for chi^2 what
    k3's does for the KL. Symmetric in d, and ~ d^2 near 0 (twice k2); it grows as e^|d|, much
    faster than the KL's estimators, which is the paper's point: large ratios are punished hard. As
    a loss (tokens held fixed) its gradient is 2 sinh(d) grad logp; the per-position divergence's
    is 2 E_pi[(rho - 1) grad logp]: they agree to first order in d.
    """
    d = logp - ref_logp  # [N, T]
    return torch.expm1(d) + torch.expm1(-d)  # [N, T]; expm1: no cancellation near d = 0


@KL_ESTIMATORS.register("chi2_occupancy")
def chi2_occupancy(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Chi-squared divergence between the occupancy measures of pi and ref in the token MDP ("Correlated
    Proxies: A New Definition and Improved Mitigation for Reward Hacking": regularise the chi^2
    divergence of the policies' occupancy measures, not a KL between their action distributions).

    The state at position t is the prompt and the tokens before t, and the transitions are
    deterministic, so the occupancy ratio of the state-action pair at t is the product of the
    policies' token ratios up to t:
    W_t = prod_{s <= t} pi(y_s | y_<s) / ref(y_s | y_<s) = exp(c_t),   c_t = sum_{s <= t} d_s,
    chi2_occupancy_t = W_t + 1 / W_t - 2   (as ``chi2``, with the prefix's ratio in place of rho),

    unbiased for chi^2 of the step-t occupancy. Different positions are different states, so the
    chi^2 of the (uniform over t) occupancy measure is the mean of the per-step values: a token
    mean of this estimator, over rows of one length T, estimates it exactly. The sum runs along the
    row's positions, so it assumes the counted tokens are a prefix of each row (completions are
    right-padded; the environment tokens of a multi-turn episode would enter the product). It
    grows as e^|c_t|, and c_t over a long completion is large: of far higher variance than the
    per-token ``chi2`` (the paper estimates the ratio with a discriminator instead); use a small
    coefficient, and float32 overflows (a skipped, non-finite step) beyond |c_t| ~ 88.
    """
    c = (logp - ref_logp).cumsum(dim=-1)  # [N, T] log W_t, the prefix's log occupancy ratio
    return torch.expm1(c) + torch.expm1(-c)  # [N, T]


def kl_convex(
    logp: Tensor,
    ref_logp: Tensor,
    old_logp: Tensor,
    *,
    estimator: Callable[[Tensor, Tensor], Tensor],
    lam: float,
) -> Tensor:
    """KL-convex policy constraint of ReMix ("Squeeze the Soaked Sponge: Efficient Off-policy
    Reinforcement Finetuning for Large Language Model"), per token: -> [N, T].

    kl_convex = lam * D(logp, ref_logp) + (1 - lam) * D(logp, old_logp),   lam in [0, 1],

    with D the chosen per-token estimator (``estimator``: k1, k2, k3, ... of this module) and
    ``old_logp`` the behaviour policy's log-probs, the policy that sampled each token (for a replayed
    group, the older policy whose log-probs the replay buffer kept). The reference term keeps the
    policy near its anchor (stability), the behaviour term only near the data it learns from
    (flexibility: the anchor moves with the sampler). The abstract names the constraint and its
    trade-off, not a formula: a convex combination of the two estimates with a fixed lam is rlvr's
    reading. lam = 1 returns the reference estimate itself (the same tensor bit for bit, the
    behaviour term is not computed); lam = 0 the behaviour term alone.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"kl_convex needs lam in [0, 1], got {lam}")
    to_ref = estimator(logp, ref_logp)  # [N, T]
    if lam == 1.0:
        return to_ref
    to_behaviour = estimator(logp, old_logp)  # [N, T]
    if lam == 0.0:
        return to_behaviour
    return lam * to_ref + (1.0 - lam) * to_behaviour  # [N, T]


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
