"""Outcome-level advantage estimators: rewards [B, G] -> advantages [B, G].

B prompts, G sampled completions per prompt. Every estimator is a pure function registered in
``ADVANTAGES`` with its knobs as keyword-only arguments.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from rlvr.registry import Registry

ADVANTAGES = Registry("advantage estimator")


def _check(rewards: Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [B, G], got {tuple(rewards.shape)}")


@ADVANTAGES.register("grpo", bounds={"eps": ">= 0"})
def grpo(
    rewards: Tensor, *, eps: float = 1e-6, scale: Literal["group", "batch", "none"] = "group"
) -> Tensor:
    """Group-relative advantage (DeepSeekMath, GRPO).

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)

    std is the unbiased sample standard deviation (``torch.std``). ``scale`` chooses the divisor:
    ``"group"`` the std of each prompt's G rewards; ``"batch"`` the std of all B*G rewards (group mean,
    batch std, as in "Tricks or Traps"); ``"none"`` no division (Dr. GRPO).
    """
    _check(rewards)
    r = rewards.float()
    centred = r - r.mean(dim=1, keepdim=True)  # [B, G]
    # a constant group has exactly zero advantage (float32 rounding of the mean would otherwise
    # leave ~1e-8 that the division by a ~1e-8 std turns into a visible, one-signed advantage)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)  # [B, 1]
    centred = centred.masked_fill(constant, 0.0)
    if scale == "group":
        return centred / (r.std(dim=1, keepdim=True) + eps)
    if scale == "batch":
        return centred / (r.std() + eps)
    if scale == "none":
        return centred
    raise ValueError(f"grpo: scale must be 'group', 'batch' or 'none', got {scale!r}")


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: Tensor) -> Tensor:
    """Dr. GRPO ("Understanding R1-Zero-like Training"): A_i = r_i - mean_g(r), no std division."""
    _check(rewards)
    r = rewards.float()
    return r - r.mean(dim=1, keepdim=True)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out (RLOO; Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for
    Free!"; for LLMs "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
    Feedback in LLMs"): A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g(r)).

    Needs G >= 2.
    """
    _check(rewards)
    g = rewards.shape[1]
    if g < 2:
        raise ValueError("rloo needs at least 2 samples per prompt (G >= 2)")
    r = rewards.float()
    loo_mean = (r.sum(dim=1, keepdim=True) - r) / (g - 1)  # [B, G]
    return r - loo_mean


# ---------------------------------------------------------------- helpers of the catalogue below


def _constant_groups(r: Tensor) -> Tensor:
    """[B, 1] True where every reward of the group equals the first (such groups get zero advantage)."""
    return (r == r[:, :1]).all(dim=1, keepdim=True)  # [B, 1]


def _grpo_safe(rewards: Tensor, eps: float) -> Tensor:
    """``grpo`` whose constant groups are zero also with eps = 0 (grpo gives 0/0 = nan there)."""
    return grpo(rewards, eps=eps).masked_fill(_constant_groups(rewards.float()), 0.0)  # [B, G]


def _base(rewards: Tensor, base: str, eps: float) -> Tensor:
    """The base advantage of the composite estimators: ``grpo`` or ``dr_grpo``.

    ``dr_grpo`` is computed as ``grpo(scale="none")``: the same r - mean_g, with constant groups
    exactly zero.
    """
    if base == "grpo":
        return _grpo_safe(rewards, eps)
    if base == "dr_grpo":
        return grpo(rewards, scale="none")
    raise ValueError(f"base must be 'grpo' or 'dr_grpo', got {base!r}")


def _whiten(a: Tensor, eps: float) -> Tensor:
    """(a - mean) / (std + eps) over every entry of ``a`` (std unbiased); a single entry is returned
    centred only."""
    if a.numel() < 2:
        return a - a.mean()
    return (a - a.mean()) / (a.std() + eps)


# ---------------------------------------------------------------- REINFORCE++


@ADVANTAGES.register("reinforce_pp", bounds={"eps": ">= 0"})
def reinforce_pp(rewards: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++ with a group baseline ("REINFORCE++: A Simple and Efficient Approach for Aligning
    Large Language Models", its REINFORCE++-baseline form for outcome rewards).

    A'_i = r_i - mean_g(r);   A_i = (A'_i - mean_batch(A')) / (std_batch(A') + eps)

    mean_batch and std_batch (unbiased) run over all B*G samples, one per completion (not weighted by
    its token count). Every group's A' sums to zero, so mean_batch(A') is zero up to rounding; a
    constant group keeps exactly zero advantage, and an all-constant batch gives zeros.
    """
    _check(rewards)
    centred = grpo(rewards, scale="none")  # [B, G] r - mean_g, constant groups exactly 0
    out = _whiten(centred, eps)  # [B, G]
    return out.masked_fill(_constant_groups(rewards.float()), 0.0)


# ---------------------------------------------------------------- BNPO


_BNPO_SLACK = 1e-6  # of the reward range: float32 rounding of a weighted sum of rewards


@ADVANTAGES.register("bnpo", bounds={"norm_alpha": "> 0", "norm_beta": "> 0", "max_weight": "> 0"})
def bnpo(
    rewards: Tensor,
    *,
    norm_alpha: float | None = None,
    norm_beta: float | None = None,
    reward_min: float = 0.0,
    reward_max: float = 1.0,
    max_weight: float = 1e6,
) -> Tensor:
    """BNPO ("BNPO: Beta Normalization Policy Optimization").

    s_i = (r_i - reward_min) / (reward_max - reward_min)   (binary rewards in the paper; in [0, 1])
    p   = mean_g(s)                                         (the prompt's success rate)
    A_i = (s_i - p) / f(p; alpha, beta),   1 / f clamped to at most ``max_weight``

    f is the Beta(alpha, beta) density. Unless set by ``norm_alpha`` / ``norm_beta``, its parameters
    come from a Beta(a, b) fitted online by the method of moments to the B success rates of the batch
    (m = mean_B(p), v = var_B(p), unbiased): a = (m(1-m)/v - 1) m, b = (m(1-m)/v - 1)(1 - m), and
    alpha = max(1 + a/3, 1), beta = max(1 + b/3, 1), the paper's variance-minimising normaliser (as in
    its released code). With B < 2 or v = 0 the fit is undefined and alpha = beta = 1 is used.

    Neutral settings: alpha = beta = 1 gives f = 1, i.e. REINFORCE with the group-mean baseline
    (``dr_grpo`` on s); alpha = beta = 3/2 gives f(p) = (8/pi) sqrt(p(1-p)), i.e. (pi/8) times GRPO
    with the population std for binary rewards. The paper's advantage decomposition for several
    reward components is not included. Constant groups get exactly zero.
    """
    _check(rewards)
    if not reward_max > reward_min:
        raise ValueError(f"bnpo: reward_max must exceed reward_min, got {reward_min}, {reward_max}")
    r = rewards.double()
    s = (r - reward_min) / (reward_max - reward_min)  # [B, G]
    # float32 rewards round: 1.0 + 0.1 (answer + format) is 1.1000000238 > 1.1; allow that much
    if (s < -_BNPO_SLACK).any() or (s > 1 + _BNPO_SLACK).any():
        raise ValueError(
            f"bnpo: rewards must lie in [reward_min, reward_max] = [{reward_min}, {reward_max}], "
            f"got values from {float(r.min())} to {float(r.max())}"
        )
    s = s.clamp(0.0, 1.0)
    p = s.mean(dim=1, keepdim=True)  # [B, 1]
    alpha, beta = _bnpo_params(p.squeeze(1))
    alpha = alpha if norm_alpha is None else float(norm_alpha)
    beta = beta if norm_beta is None else float(norm_beta)
    log_beta_fn = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    # xlogy: 0 * log(0) = 0, so alpha = 1 (or beta = 1) is finite at p = 0 (p = 1)
    log_f = torch.xlogy(alpha - 1, p) + torch.xlogy(beta - 1, 1 - p) - log_beta_fn  # [B, 1]
    weight = torch.exp(-log_f).clamp(max=max_weight)  # [B, 1] 1 / f(p)
    out = (weight * (s - p)).masked_fill(_constant_groups(r), 0.0)  # [B, G]
    return out.float()


def _bnpo_params(p: Tensor) -> tuple[float, float]:
    """BNPO's normaliser (alpha, beta) from the batch's success rates p [B]."""
    if p.numel() < 2:
        return 1.0, 1.0
    m, v = float(p.mean()), float(p.var())
    if v <= 0:
        return 1.0, 1.0
    common = m * (1 - m) / v - 1
    return max(1 + common * m / 3, 1.0), max(1 + common * (1 - m) / 3, 1.0)


# ---------------------------------------------------------------- GDPO


@ADVANTAGES.register("gdpo", needs={"reward_parts", "reward_weights"}, bounds={"eps": ">= 0"})
def gdpo(
    rewards: Tensor,
    *,
    reward_parts: Tensor | None = None,
    reward_weights: Tensor | None = None,
    eps: float = 1e-6,
    batch_norm: bool = True,
) -> Tensor:
    """GDPO ("GDPO: Group reward-Decoupled Normalization Policy Optimization for Multi-reward RL").

    A^k_i = (x^k_i - mean_g(x^k)) / (std_g(x^k) + eps)   for each reward component k (grpo on it)
    S_i   = sum_k w_k A^k_i
    A_i   = (S_i - mean_batch(S)) / (std_batch(S) + eps)   (``batch_norm``; else A_i = S_i)

    x^k = ``reward_parts[..., k]``, w = ``reward_weights`` (ones if None). Normalising each component
    in its group keeps apart reward combinations that GRPO on the summed reward maps to the same
    advantage. With K = 1 and w = 1, ``batch_norm=False`` is exactly ``grpo``. A group that is constant
    in every component gets exactly zero. ``rewards`` is only checked for its shape.
    """
    _check(rewards)
    if reward_parts is None:
        raise ValueError("gdpo needs reward_parts [B, G, K]")
    b, g = rewards.shape
    if reward_parts.dim() != 3 or tuple(reward_parts.shape[:2]) != (b, g):
        raise ValueError(
            f"gdpo: reward_parts must have shape [B, G, K] = [{b}, {g}, K], "
            f"got {tuple(reward_parts.shape)}"
        )
    k = reward_parts.shape[2]
    parts = reward_parts.float()
    w = (
        torch.ones(k, device=parts.device)
        if reward_weights is None
        else reward_weights.float().to(parts.device)
    )  # [K]
    if tuple(w.shape) != (k,):
        raise ValueError(f"gdpo: reward_weights must have shape [K] = [{k}], got {tuple(w.shape)}")
    per_part = _grpo_safe(parts.permute(0, 2, 1).reshape(b * k, g), eps)  # [B*K, G]
    per_part = per_part.reshape(b, k, g).permute(0, 2, 1)  # [B, G, K]
    summed = (per_part * w).sum(dim=-1)  # [B, G]
    if not batch_norm:
        return summed
    constant = (parts == parts[:, :1]).all(dim=2).all(dim=1, keepdim=True)  # [B, 1]
    return _whiten(summed, eps).masked_fill(constant, 0.0)


# ---------------------------------------------------------------- DGPO


@ADVANTAGES.register("dgpo", bounds={"eps": ">= 0", "hard_temperature": "> 0"})
def dgpo(
    rewards: Tensor,
    *,
    eps: float = 1e-6,
    balance: Literal["mad", "std", "none"] = "mad",
    hard_temperature: float | None = 2.0,
) -> Tensor:
    """DGPO ("Harder Is Better: Boosting Mathematical Reasoning via Difficulty-Aware GRPO and
    Multi-Aspect Question Reformulation").

    Difficulty-balanced group advantage (DGAE), ``balance="mad"``:
        A_i = (r_i - mean_g(r)) / (MAD_g(r) + eps),   MAD_g(r) = mean_g |r - mean_g(r)|
    so every non-constant group has the same total update magnitude sum_i |A_i| = G (with GRPO's std
    it is 2G sqrt(p(1-p)) for binary rewards, smaller for hard and easy prompts).
    Difficulty-aware question weight (DQW), over the V non-constant groups of the batch:
        lambda_q = V * softmax_q(-mean_g(r_q) / hard_temperature),   A_i <- lambda_q A_i
    (lower mean reward = harder = larger weight; constant groups keep weight 1 and advantage 0).

    Neutral settings: ``balance="std"`` with ``hard_temperature=None`` is ``grpo``; ``balance="none"``
    with ``hard_temperature=None`` is ``dr_grpo``. Difficulty is the mean of the combined reward (the
    paper uses the accuracy reward); its code's token-count rescalings belong to loss aggregation and
    are left out. Default temperature 2.0 as in the paper's scripts.
    """
    _check(rewards)
    r = rewards.float()
    centred = grpo(r, scale="none")  # [B, G] r - mean_g, constant groups exactly 0
    if balance == "mad":
        mad = centred.abs().mean(dim=1, keepdim=True)  # [B, 1]
        adv = (centred / (mad + eps)).masked_fill(mad == 0, 0.0)  # [B, G] (0/0 when eps = 0)
    elif balance == "std":
        adv = _grpo_safe(r, eps)
    elif balance == "none":
        adv = centred
    else:
        raise ValueError(f"dgpo: balance must be 'mad', 'std' or 'none', got {balance!r}")
    if hard_temperature is None:
        return adv
    valid = ~_constant_groups(r).squeeze(1)  # [B]
    weight = torch.ones(r.shape[0], device=r.device)  # [B]
    if valid.any():
        logits = -r.mean(dim=1)[valid] / hard_temperature  # [V]
        weight[valid] = int(valid.sum()) * torch.softmax(logits, dim=0)
    return adv * weight.unsqueeze(1)


# ---------------------------------------------------------------- ACE


@ADVANTAGES.register(
    "ace",
    needs={"seq_logp", "seq_ref_logp"},
    bounds={"eps": ">= 0", "confidence_penalty": ">= 0"},
)
def ace(
    rewards: Tensor,
    *,
    seq_logp: Tensor | None = None,
    seq_ref_logp: Tensor | None = None,
    base: Literal["grpo", "dr_grpo"] = "grpo",
    eps: float = 1e-6,
    confidence_penalty: float = 0.1,
    confidence_gate: Literal["relu", "softplus"] = "relu",
) -> Tensor:
    """ACE ("Overconfident Errors Need Stronger Correction: Asymmetric Confidence Penalties for
    Reinforcement Learning").

    c_i = log pi_old(y_i|x) - log pi_ref(y_i|x)   (``seq_logp - seq_ref_logp``, sequence sums)
    A_i = A^base_i * (1 + confidence_penalty * gate(c_i))   where A^base_i < 0,   A^base_i otherwise

    gate = relu (only errors that the policy became more confident in than the reference are
    penalised harder) or softplus (a smooth version, which the paper reports works better). Negative
    advantage stands for "incorrect" (the same for binary rewards). ``confidence_penalty = 0`` is the
    base estimator (``grpo`` or ``dr_grpo``). The abstract gives no penalty value; 0.1 is our choice.
    """
    _check(rewards)
    if seq_logp is None or seq_ref_logp is None:
        raise ValueError("ace needs seq_logp and seq_ref_logp [B, G]")
    if seq_logp.shape != rewards.shape or seq_ref_logp.shape != rewards.shape:
        raise ValueError(
            f"ace: seq_logp and seq_ref_logp must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(seq_logp.shape)} and {tuple(seq_ref_logp.shape)}"
        )
    adv = _base(rewards, base, eps)  # [B, G]
    shift = (seq_logp - seq_ref_logp).float().to(adv.device)  # [B, G] c_i
    if confidence_gate == "relu":
        gated = shift.clamp(min=0.0)  # [B, G]
    elif confidence_gate == "softplus":
        gated = torch.nn.functional.softplus(shift)  # [B, G]
    else:
        raise ValueError(f"ace: confidence_gate must be 'relu' or 'softplus', got {confidence_gate!r}")
    scale = torch.where(adv < 0, 1.0 + confidence_penalty * gated, torch.ones_like(adv))  # [B, G]
    return adv * scale


# ---------------------------------------------------------------- NSR / PSR


@ADVANTAGES.register(
    "nsr_psr", bounds={"eps": ">= 0", "positive_weight": ">= 0", "negative_weight": ">= 0"}
)
def nsr_psr(
    rewards: Tensor,
    *,
    base: Literal["grpo", "dr_grpo"] = "grpo",
    eps: float = 1e-6,
    positive_weight: float = 0.1,
    negative_weight: float = 1.0,
) -> Tensor:
    """Weighted positive / negative sample reinforcement ("The Surprising Effectiveness of Negative
    Reinforcement in LLM Reasoning", W-REINFORCE: lambda * PSR + NSR).

    A_i = positive_weight * A^base_i  where A^base_i > 0,   negative_weight * A^base_i  otherwise

    ``positive_weight = 1`` (with ``negative_weight = 1``) is the base estimator; ``positive_weight =
    0`` is pure negative sample reinforcement (NSR). The paper applies the weights to REINFORCE with
    +-1 rewards; here they apply to a ``grpo`` / ``dr_grpo`` advantage. Default 0.1 is the paper's
    recommended lambda.
    """
    _check(rewards)
    adv = _base(rewards, base, eps)  # [B, G]
    return torch.where(adv > 0, positive_weight * adv, negative_weight * adv)


# ---------------------------------------------------------------- CalibRL


@ADVANTAGES.register("calibrl", bounds={"eps": ">= 0", "rareness_power": ">= 0"})
def calibrl(
    rewards: Tensor,
    *,
    base: Literal["grpo", "dr_grpo"] = "grpo",
    eps: float = 1e-6,
    rareness_power: float = 1.0,
) -> Tensor:
    """Distribution-aware advantage weighting of CalibRL ("Controllable Exploration in Hybrid-Policy
    RLVR for Multi-Modal Reasoning").

    f_i = |{j : r_j = r_i}| / G        (frequency of sample i's outcome in its group)
    A_i = A^base_i * (1 - f_i) ** rareness_power

    The rarer an outcome in its group, the larger its weight (for binary rewards with success rate p:
    1 - p for successes, p for failures). Outcomes are compared by exact reward value, so continuous
    rewards get a nearly uniform weight (G-1)/G. ``rareness_power = 0`` is the base estimator. The
    abstract does not give the weight's form; this is the simplest one, not renormalised. CalibRL's
    expert-guided (off-policy) terms belong to the objective and are not included.
    """
    _check(rewards)
    adv = _base(rewards, base, eps)  # [B, G]
    r = rewards.float()
    freq = (r.unsqueeze(2) == r.unsqueeze(1)).float().mean(dim=2)  # [B, G]
    return adv * (1.0 - freq).pow(rareness_power)


# ---------------------------------------------------------------- pass@k


@ADVANTAGES.register("passk", bounds={"pass_k": ">= 1", "eps": ">= 0"})
def passk(
    rewards: Tensor,
    *,
    pass_k: int = 4,
    success_threshold: float = 0.5,
    normalise: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Analytic pass@k advantage ("Pass@k Training for Adaptively Balancing Exploration and
    Exploitation of Large Reasoning Models").

    Every size-k subset of the group is one "super-sample" whose reward is 1 if any member succeeds;
    a sample's advantage is the mean group-normalised advantage of the subsets that contain it. With
    G samples, N_neg failures and C(n, k) binomial coefficients:

    R    = 1 - C(N_neg, k) / C(G, k)                   (mean subset reward: unbiased pass@k)
    s    = sqrt(R (1 - R))                             (std of the subset rewards)
    A_i  = (1 - R) / (s + eps)                                    for a success
    A_i  = (1 - R - C(N_neg-1, k-1) / C(G-1, k-1)) / (s + eps)    for a failure

    Success is r > ``success_threshold`` (binary {0, 1} rewards assumed). ``normalise=False`` drops
    the division by s + eps. k = 1 gives R = p (the success rate) and A = (r - p) / (sqrt(p(1-p)) +
    eps): ``grpo`` with the population instead of the sample std, i.e. grpo * sqrt(G / (G-1)) for
    eps = 0; with ``normalise=False`` exactly ``dr_grpo``. Groups whose subsets all share one reward
    (all fail, or N_neg < k) get exactly zero. Needs k <= G.
    """
    _check(rewards)
    g = rewards.shape[1]
    if not 1 <= pass_k <= g:
        raise ValueError(f"passk: pass_k must be in [1, G] = [1, {g}], got {pass_k}")
    success = rewards.double() > success_threshold  # [B, G]
    n_neg = (~success).sum(dim=1, keepdim=True).double()  # [B, 1]
    i = torch.arange(pass_k, dtype=torch.float64, device=rewards.device)  # [k]
    # C(N_neg, k) / C(G, k) = prod_{i<k} (N_neg - i) / (G - i)  (0 when N_neg < k)
    all_fail = ((n_neg - i).clamp(min=0) / (g - i)).prod(dim=1, keepdim=True)  # [B, 1]
    mean = 1.0 - all_fail  # [B, 1]
    j = i[: pass_k - 1]  # [k-1]
    # C(N_neg-1, k-1) / C(G-1, k-1): the fraction of a failure's subsets that fail entirely
    fail_with = ((n_neg - 1 - j).clamp(min=0) / (g - 1 - j)).prod(dim=1, keepdim=True)  # [B, 1]
    num = torch.where(success, 1.0 - mean, 1.0 - fail_with - mean)  # [B, G]
    degenerate = (mean == 0) | (mean == 1)  # [B, 1] every subset has the same reward
    if normalise:
        num = num / ((mean * (1 - mean)).sqrt() + eps)
    return num.masked_fill(degenerate, 0.0).float()


# ---------------------------------------------------------------- the peers' estimators (issue 28)


@ADVANTAGES.register("gpg", bounds={"f_norm": "> 0"})
def gpg(rewards: Tensor, *, f_norm: float = 1.0) -> Tensor:
    """Group Policy Gradient (GPG, "GPG: A Simple and Strong Reinforcement Learning Baseline for
    Model Reasoning"): the group-mean baseline, rescaled by the share of samples with a reward.

    alpha = (B * G) / max(1, #{r_i != 0 in the batch});   A_i = alpha * (r_i - mean_g(r)) / f_norm

    alpha makes up for the samples that carry no signal, so the batch's gradient keeps its size when
    most rewards are zero. This follows verl's ``compute_gpg_outcome_advantage``, which counts the
    non-zero rewards (``torch.count_nonzero``) and ignores its ``alpha`` argument; GPG pairs it with
    the plain policy gradient (objective ``reinforce``, verl's ``gpg`` loss is -A * logp). Constant
    groups get exactly zero; with every reward non-zero and f_norm = 1 this is ``dr_grpo``.
    """
    _check(rewards)
    r = rewards.float()
    alpha = r.numel() / max(1, int(torch.count_nonzero(r)))
    return alpha * grpo(r, scale="none") / f_norm


@ADVANTAGES.register("opo", needs={"lengths"})
def opo(rewards: Tensor, *, lengths: Tensor | None = None) -> Tensor:
    """On-Policy RL with Optimal reward baseline (OPO, "On-Policy RL with Optimal Reward Baseline"):
    the baseline that minimises the gradient variance under a sequence-length proxy for the score's
    norm, a length-weighted group mean.

    b_g = sum_j L_j r_j / sum_j L_j   (L_j = completion length in tokens);   A_i = r_i - b_g

    As verl's ``compute_opo_outcome_advantage``. Equal lengths give ``dr_grpo``. A group whose
    lengths are all 0 uses the plain mean; constant groups get exactly zero. verl gives a group of
    one sample the baseline 0; here the formula gives it b = r, advantage 0.
    """
    _check(rewards)
    if lengths is None:
        raise ValueError("opo needs `lengths` [B, G]")
    r = rewards.float()
    w = lengths.float().to(r.device)  # [B, G]
    total = w.sum(dim=1, keepdim=True)  # [B, 1]
    weighted = (w * r).sum(dim=1, keepdim=True) / total.clamp(min=1e-12)  # [B, 1]
    base = torch.where(total > 0, weighted, r.mean(dim=1, keepdim=True))  # [B, 1]
    return (r - base).masked_fill(_constant_groups(r), 0.0)


@ADVANTAGES.register("maxrl", bounds={"eps": ">= 0"})
def maxrl(rewards: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Maximum Likelihood RL (MaxRL, Tajwar et al. 2026): the group-mean baseline divided by the
    group's mean reward instead of its std.

    A_i = (r_i - mean_g(r)) / (mean_g(r) + eps),   0 for groups with mean_g(r) <= eps

    For binary rewards with success rate p this is (1 - p) / p for a success and -1 for a failure:
    the REINFORCE estimate of grad log p (the log-likelihood of success), which weighs hard prompts
    more than GRPO. As SkyRL's and prime-rl's ``maxrl`` estimators (rewards assumed >= 0); verl and TRL
    do not ship it. Constant groups get exactly zero.
    """
    _check(rewards)
    r = rewards.float()
    mean = r.mean(dim=1, keepdim=True)  # [B, 1]
    out = (r - mean) / (mean + eps)
    out = torch.where(mean > eps, out, torch.zeros_like(out))
    return out.masked_fill(_constant_groups(r), 0.0)


@ADVANTAGES.register("reinforce_pp_baseline", needs={"lengths"}, bounds={"eps": ">= 0"})
def reinforce_pp_baseline(
    rewards: Tensor, *, lengths: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """REINFORCE++-baseline as verl computes it (``reinforce_plus_plus_baseline``): ``reinforce_pp``
    with the batch whitening taken over tokens, so that each completion weighs by its length.

    A'_i = r_i - mean_g(r);   m = sum_i L_i A'_i / sum_i L_i      (L_i = completion length)
    v    = sum_i L_i (A'_i - m)^2 / (sum_i L_i - 1);   A_i = (A'_i - m) / (sqrt(v) + eps)

    verl's ``compute_reinforce_plus_plus_baseline_outcome_advantage`` broadcasts A' over the tokens
    and applies ``masked_whiten`` (unbiased variance over the counted tokens, rsqrt(v + 1e-8)); that
    is this formula. A constant group keeps exactly zero advantage here (verl's token whitening
    gives it -m / sqrt(v)). Equal lengths give ``reinforce_pp``.
    """
    _check(rewards)
    if lengths is None:
        raise ValueError("reinforce_pp_baseline needs `lengths` [B, G]")
    centred = grpo(rewards, scale="none")  # [B, G] r - mean_g, constant groups exactly 0
    w = lengths.float().to(centred.device)  # [B, G]
    total = w.sum()
    m = (w * centred).sum() / total.clamp(min=1)
    v = (w * (centred - m) ** 2).sum() / (total - 1).clamp(min=1)
    out = (centred - m) / (v.sqrt() + eps)  # [B, G]
    return out.masked_fill(_constant_groups(rewards.float()), 0.0)


@ADVANTAGES.register("remax", needs={"greedy_rewards"})
def remax(rewards: Tensor, *, greedy_rewards: Tensor | None = None) -> Tensor:
    """ReMax (Li et al. 2023, "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method
    for Aligning Large Language Models"): REINFORCE with the reward of the policy's greedy response
    to the same prompt as the baseline.

    A_ij = r_ij - r(greedy_i),       greedy_i = the argmax-decoded completion of prompt i

    As verl's ``compute_remax_outcome_advantage`` with one outcome reward per response (the return
    r_ij on every token minus ``reward_baselines``); there the batch carries the greedy responses'
    rewards, here ``greedy_rewards`` [B, G] (the prompt's greedy reward on each of its G rows), which
    the batch collector's greedy stage supplies: one greedy rollout per prompt each step, scored by
    the run's rewards and not trained on. No normalisation; a group whose samples all score as the
    greedy response gets zero advantage. The paper samples one response per prompt; G samples share
    the prompt's one baseline here.
    """
    _check(rewards)
    if greedy_rewards is None:
        raise ValueError("remax needs `greedy_rewards` [B, G] (the greedy response's reward)")
    return rewards.float() - greedy_rewards.float().to(rewards.device).expand_as(rewards)


@ADVANTAGES.register("raft")
def raft(rewards: Tensor, *, accept_reward: float = 1.0) -> Tensor:
    """Rejection sampling as an advantage (RAFT / RAFT++, Xiong et al. 2025, "A Minimalist Approach to
    LLM Reasoning: From Rejection Sampling to Reinforce"): train on the accepted samples only.

    A_ij = 1[r_ij >= accept_reward]

    With ``ppo_clip`` and seq_mean_token_mean this is RAFT++: SFT on this step's accepted samples
    with the PPO ratio and clip of the current policy to the sampling one (RAFT++'s importance
    sampling and clipping over plain RAFT). Rejected samples get 0: no negative signal (the paper's
    point of comparison with GRPO). ROLL documents RAFT++ as a configuration (``adv_estimator =
    "grpo"`` with ``norm_mean_type`` / ``norm_std_type`` unset, ``examples/docs_examples/
    example_raft_pp.yaml``), but its ``compute_advantage`` (``roll/utils/functionals.py``) sets both
    to "group" whenever the estimator is "grpo", so as ROLL runs it that configuration is GRPO; this
    estimator follows the paper instead. ``accept_reward`` is the reward a sample must reach (1.0:
    a correct answer under the shipped recipes' ``answer`` reward).
    """
    _check(rewards)
    return (rewards.float() >= accept_reward).float()


@ADVANTAGES.register("oreal", bounds={"negative_coef": ">= 0"})
def oreal(rewards: Tensor, *, accept_reward: float = 1.0, negative_coef: float = 1.0) -> Tensor:
    """OREAL's outcome advantage ("Exploring the Limit of Outcome Reward for Learning Mathematical
    Reasoning", Lyu et al. 2025): behaviour cloning on the group's positives, and the negatives'
    reward reshaped by the group's success rate so that their gradient points the positives' way.

    c_ij = 1[r_ij >= accept_reward]                (a positive: accepted, as in ``raft``)
    p_i  = mean_j c_ij                             (the group's success rate)
    A_ij = 1                                       if c_ij = 1   (BC on the positive)
    A_ij = -negative_coef * p_i / (1 - p_i)        if c_ij = 0   (the reshaped negative)

    Why this form: Σ_y π(y) ∇log π(y) = 0 splits into p E+[∇log π] + (1 - p) E-[∇log π] = 0, so a
    negative pushed down with weight w adds w p/(1 - p) E+[∇log π] in expectation: the positives'
    own direction (gradient consistency), whatever w. w = p/(1 - p) is GRPO's ratio of negative to
    positive advantage, (r - p) / (1 - p): the mean subtraction applied to the negatives only while
    the positives keep BC's weight 1, which is how the paper contrasts its shaping with GRPO's;
    negative_coef = 1 makes each group's advantages sum to zero. The paper's exact reshaping
    function is not reproduced here (its text was not available to us): the p/(1 - p) form and the
    ``negative_coef`` knob are rlvr's. ``negative_coef = 0`` is ``raft`` exactly. A group with no
    positive has p = 0 and zero advantage; one with no negative is all 1 (raft's BC). The paper's
    token-level importance weights, from a trained token-level reward model, are not part of it.
    """
    _check(rewards)
    pos = rewards.float() >= accept_reward  # [B, G]
    adv = pos.float()  # [B, G] raft's BC weight on the positives
    if negative_coef == 0:
        return adv
    p = adv.mean(dim=1, keepdim=True)  # [B, 1] success rate
    # (1 - p) >= 1/G wherever a negative exists; the clamp only guards the groups without one
    neg = -negative_coef * p / (1.0 - p).clamp(min=1.0 / rewards.shape[1])  # [B, 1]
    return torch.where(pos, adv, neg.expand_as(adv))  # [B, G]


# ---------------------------------------------------------------- exploration: selection and blending


def max_variance_subset(a: Tensor, k: int) -> Tensor:
    """Boolean [B, G]: in each row, k entries whose population variance is the largest of any k.

    Such a subset is the j smallest and the k - j largest entries for some j (moving an inner entry
    outwards never lowers the variance), so each row tries the k + 1 splits of its sorted values by
    prefix sums and keeps the best (the first on ties: the fewest from the bottom).
    """
    b, g = a.shape
    if k >= g:
        return torch.ones_like(a, dtype=torch.bool)
    s, order = a.double().sort(dim=1)  # [B, G] ascending
    zero = s.new_zeros(b, 1)
    c1 = torch.cat([zero, s.cumsum(1)], dim=1)  # [B, G + 1] prefix sums
    c2 = torch.cat([zero, (s * s).cumsum(1)], dim=1)  # [B, G + 1] prefix sums of squares
    j = torch.arange(k + 1, device=a.device)  # [k + 1] entries taken from the bottom
    top = g - (k - j)  # [k + 1] first sorted position taken from the top
    s1 = c1[:, j] + c1[:, g : g + 1] - c1[:, top]  # [B, k + 1]
    s2 = c2[:, j] + c2[:, g : g + 1] - c2[:, top]  # [B, k + 1]
    var = s2 / k - (s1 / k) ** 2  # [B, k + 1]
    best = var.argmax(dim=1, keepdim=True)  # [B, 1]
    pos = torch.arange(g, device=a.device).unsqueeze(0)  # [1, G] sorted position
    take = (pos < best) | (pos >= g - (k - best))  # [B, G] in sorted order
    return torch.zeros_like(take).scatter(1, order, take)  # [B, G] in the rows' order


@ADVANTAGES.register("d3s", bounds={"eps": ">= 0", "d3s_rollouts": "(0, 1]"})
def d3s(
    rewards: Tensor,
    *,
    d3s_rollouts: float = 0.5,
    eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> Tensor:
    """The rollout level of D^3S ("Learning More with Less: A Dynamic Dual-Level Down-Sampling
    Framework for Efficient Policy Optimization"): keep the rollouts that maximise Var(A).

    A      = grpo(rewards)                                        [B, G]
    k      = ceil(d3s_rollouts * G)
    S_b    = argmax over subsets S of k rollouts of group b of Var_{i in S}(A_bi)   (population var)
    A'_bi  = A_bi if i in S_b, else 0

    The advantages are those of the whole group; the selection keeps the extremes (see
    ``max_variance_subset``), which the paper ties to a larger policy-gradient norm. A rollout
    left out gets advantage 0: no policy-gradient term, but it is still in the batch (its tokens
    count in the aggregation's denominator and in any KL or entropy term), where the paper removes
    it. The paper's schedule (aggressive down-sampling early, relaxed later) is not built: the
    fraction is fixed. d3s_rollouts = 1 is ``grpo``. The token level is ``objective:d3s``.
    """
    a = grpo(rewards, eps=eps, scale=scale)  # [B, G]
    if d3s_rollouts >= 1:
        return a
    k = max(1, math.ceil(d3s_rollouts * rewards.shape[1]))
    keep = max_variance_subset(a, k)  # [B, G]
    return torch.where(keep, a, torch.zeros_like(a))


@ADVANTAGES.register("copo", bounds={"eps": ">= 0", "copo_global": "[0, 1]"})
def copo(
    rewards: Tensor, *, copo_global: float = 1.0, success_reward: float = 1.0, eps: float = 1e-6
) -> Tensor:
    """Consistency-aware advantage (COPO, "COPO: Consistency-Aware Policy Optimization"): a global
    signal for groups whose outcomes agree, blended with the local one by the outcome entropy.

    A_loc_bi  = grpo(rewards)_bi                       (group mean / std; 0 in a constant group)
    A_glob_bi = (r_bi - mean(r)) / (std(r) + eps)       (mean and std over the whole batch, B * G)
    p_b       = mean_i 1[r_bi >= success_reward]        (the group's success rate)
    H_b       = -(p_b ln p_b + (1 - p_b) ln(1 - p_b)) / ln 2    in [0, 1] (0 ln 0 = 0)
    w_b       = copo_global * (1 - H_b)
    A_bi      = (1 - w_b) * A_loc_bi + w_b * A_glob_bi

    A group whose samples all succeed (or all fail) has H_b = 0: its local advantage is zero, and
    the global one still rewards it against the rest of the batch (positive for a consistently
    correct group, negative for a consistently wrong one). A group split half and half (H_b = 1)
    keeps its local advantage. The abstract names a global reward from outcome consistency and an
    entropy-based soft blend without formulas; these forms (the batch-normalised reward as the
    global signal, the binary outcome entropy as the blend) are rlvr's. copo_global = 0 is
    ``grpo``. A batch whose rewards are all equal gets A_glob = 0.
    """
    _check(rewards)
    local = grpo(rewards, eps=eps)  # [B, G]
    if copo_global == 0:
        return local
    r = rewards.float()
    constant = bool((r == r.flatten()[0]).all())  # also a batch of one sample
    glob = torch.zeros_like(r) if constant else _whiten(r, eps)  # [B, G]
    p = (r >= success_reward).float().mean(dim=1, keepdim=True)  # [B, 1]
    h = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)) / math.log(2.0)  # [B, 1]
    w = copo_global * (1.0 - h)  # [B, 1]
    return (1.0 - w) * local + w * glob


# ---------------------------------------------------------------- sample utility and duration weights


@ADVANTAGES.register("adora", needs={"lengths"}, bounds={"eps": ">= 0", "adora_lambda": "[0, 1]"})
def adora(
    rewards: Tensor,
    *,
    lengths: Tensor | None = None,
    adora_lambda: float = 0.1,
    success_reward: float = 1.0,
    eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> Tensor:
    """ADORA ("ADORA: Training Reasoning Models with Dynamic Advantage Estimation on Reinforcement
    Learning"): the advantage of each group weighted by whether the group is, at this step, a
    temporarily advantageous sample or a disadvantageous one.

    C_b  = {i : r_bi >= success_reward},  W_b = the rest          (correct / wrong samples of group b)
    adv_b = C_b and W_b both non-empty and max_{i in C_b} L_bi >= max_{i in W_b} L_bi
    w_b  = 1 if adv_b or C_b or W_b is empty, else adora_lambda
    A_bi = w_b * grpo(rewards)_bi                                   (L = completion length in tokens)

    The abstract gives no formula: it sorts samples into temporarily advantageous and disadvantageous
    ones by their utility during online rollouts and reweights their advantages. This is the simplest
    rule of that kind on the inputs rlvr has (the authors' code computes its weights from each
    group's rewards and response lengths, with one knob, `adora_lamda`): a group whose longest
    correct answer is at least as long as its longest wrong one rewards the longer reasoning the paper
    aims at and keeps its advantage; a group where only short answers are correct is down-weighted.
    Groups with no correct or no wrong sample have zero grpo advantage either way. The utility is
    re-measured each step from the current rollouts (no tracker across steps). adora_lambda = 1 is
    ``grpo``.
    """
    _check(rewards)
    if lengths is None:
        raise ValueError("adora needs `lengths` [B, G]")
    if lengths.shape != rewards.shape:
        raise ValueError(
            f"adora: lengths must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(lengths.shape)}"
        )
    a = grpo(rewards, eps=eps, scale=scale)  # [B, G]
    if adora_lambda == 1:
        return a
    r = rewards.float()
    length = lengths.float().to(r.device)  # [B, G]
    ok = r >= success_reward  # [B, G]
    lo = torch.finfo(length.dtype).min
    right = torch.where(ok, length, lo).amax(dim=1)  # [B] longest correct (lo if none)
    wrong = torch.where(~ok, length, lo).amax(dim=1)  # [B] longest wrong (lo if none)
    mixed = ok.any(dim=1) & (~ok).any(dim=1)  # [B]
    down = mixed & (right < wrong)  # [B] disadvantageous groups
    w = torch.where(down, adora_lambda, 1.0).unsqueeze(1)  # [B, 1]
    return a * w


@ADVANTAGES.register("duration", needs={"lengths"}, bounds={"eps": ">= 0", "duration_power": ">= 0"})
def duration(
    rewards: Tensor,
    *,
    lengths: Tensor | None = None,
    duration_power: float = 1.0,
    eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> Tensor:
    """Duration-aware weighting ("Reinforcement Learning for Machine Learning Engineering Agents"):
    samples whose actions take longer are up-weighted, so that the fast ones that finish first do not
    dominate the updates.

    d_bi = L_bi / mean_batch(L)                 (L = completion length in tokens; mean over B * G)
    A_bi = d_bi^duration_power * grpo(rewards)_bi

    The paper weighs each sample's gradient by its action's duration in asynchronous RL; rlvr has no
    per-sample execution time, so the completion length stands in for the duration (generation time
    grows with the tokens generated), normalised by the batch mean so that the weights average about
    1. A batch of empty completions gets weight 1. duration_power = 0 is ``grpo``.
    """
    _check(rewards)
    if lengths is None:
        raise ValueError("duration needs `lengths` [B, G]")
    if lengths.shape != rewards.shape:
        raise ValueError(
            f"duration: lengths must have the shape of rewards {tuple(rewards.shape)}, "
            f"got {tuple(lengths.shape)}"
        )
    a = grpo(rewards, eps=eps, scale=scale)  # [B, G]
    if duration_power == 0:
        return a
    length = lengths.float().to(a.device)  # [B, G]
    mean = length.mean()
    if not bool(mean > 0):
        return a
    return a * (length / mean) ** duration_power  # [B, G]


# ---------------------------------------------------------------- group-free: one rollout per prompt


@ADVANTAGES.register("mssr", bounds={"eps": ">= 0"}, group_free=True)
def mssr(rewards: Tensor, *, eps: float = 1e-6) -> Tensor:
    """The group-free advantage of MSSR ("Stable and Efficient Single-Rollout RL for Multimodal
    Reasoning"): with one rollout per prompt there is no group to compare with, so the baseline is
    the batch.

    A_bi = (r_bi - mean(r)) / (std(r) + eps)          (mean and unbiased std over all B * G rewards)

    It never compares a prompt's samples with each other, so it works for G = 1. A batch whose
    rewards are all equal (or a batch of one sample) gets zeros. MSSR's entropy-based shaping of the
    advantage works per token and is ``objective:mssr``. The abstract names no baseline; the batch
    mean and std (the whitening REINFORCE++ applies) are rlvr's choice.
    """
    _check(rewards)
    r = rewards.float()
    if bool((r == r.flatten()[0]).all()):
        return torch.zeros_like(r)
    return _whiten(r, eps)  # [B, G]


# ---------------------------------------------------------------- SPO's self-play win rate


@ADVANTAGES.register("win_rate")
def win_rate(rewards: Tensor) -> Tensor:
    """Self-Play Preference Optimization's reward, the win rate of a sample against the other samples
    of its group ("A Minimaximalist Approach to Reinforcement Learning from Human Feedback": sample
    several trajectories from the policy, compare them, and use the proportion of wins as each
    one's reward), centred.

    With a verifiable reward the preference is the comparison of rewards (a win 1, a tie 1/2):
    w_i = 1/(G-1) * sum_{j != i} (1[r_i > r_j] + 1/2 * 1[r_i = r_j])
    A_i = w_i - 1/2 = 1/(2 (G-1)) * sum_{j != i} sign(r_i - r_j)

    Each pair's wins add up to 1, so the group's win rates average exactly 1/2: A sums to zero in
    every group and is 0 in a constant one. Only the order of the rewards matters (any increasing
    transform of r gives the same A), and |A| <= 1/2. For 0/1 rewards A = rloo / 2. A group of one
    sample has no opponent and gets 0. No preference model: the preference is transitive, the one
    a pointwise reward induces.
    """
    _check(rewards)
    r = rewards.float()
    g = r.shape[1]
    if g < 2:
        return torch.zeros_like(r)
    signs = torch.sign(r.unsqueeze(2) - r.unsqueeze(1))  # [B, G, G] sign(r_i - r_j), 0 on i = j
    return signs.sum(dim=2) / (2 * (g - 1))  # [B, G]


# ---------------------------------------------------------------- PF-PPO's policy filtration


@ADVANTAGES.register("pf_ppo", bounds={"eps": ">= 0"})
def pf_ppo(
    rewards: Tensor,
    *,
    pf_strategy: Literal["best_of_n", "best_random", "best_worst", "range"] = "best_worst",
    pf_low: float = 0.0,
    pf_high: float = 1.0,
    eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> Tensor:
    """Policy filtration of PF-PPO ("Policy Filtration in RLHF to Fine-Tune LLM for Code Generation"):
    train only on the samples whose rewards are reliable, chosen from each group by their rewards.

    A     = grpo(rewards)                              (the whole group's baseline)    [B, G]
    keep  = best_of_n:   the best sample (argmax, first of equals)
            best_random: the best and one other sample, the first of the rest by position
            best_worst:  the best and the worst (argmin, first of equals)
            range:       the samples with r <= pf_low or r >= pf_high (the middle band dropped)
    A'_bi = A_bi if kept, else 0

    The samples of a group are drawn independently, so the first of the others is a uniformly random
    one of them: best_random needs no random numbers. The abstract names the strategies and no
    formula; the paper chooses one by the R^2 between the reward model's scores and the true scores
    on the kept samples, which needs true scores and is left to the user (choose ``pf_strategy``).
    A filtered sample gets advantage 0: no policy-gradient term, but it stays in the batch (its
    tokens count in the aggregation's denominator), where the paper removes it; a constant group
    gets 0 whatever is kept. ``pf_strategy = "range"`` with pf_low = pf_high keeps every sample:
    ``grpo``.
    """
    _check(rewards)
    if pf_low > pf_high:
        raise ValueError(f"pf_ppo: pf_low must be <= pf_high, got pf_low={pf_low}, pf_high={pf_high}")
    a = grpo(rewards, eps=eps, scale=scale)  # [B, G]
    r = rewards.float()
    b, g = r.shape
    rows = torch.arange(b, device=r.device)
    best = r.argmax(dim=1)  # [B]
    keep = torch.zeros_like(r, dtype=torch.bool)  # [B, G]
    if pf_strategy == "range":
        keep = (r <= pf_low) | (r >= pf_high)
    elif pf_strategy in ("best_of_n", "best_random", "best_worst"):
        keep[rows, best] = True
        if pf_strategy == "best_worst":
            keep[rows, r.argmin(dim=1)] = True
        elif pf_strategy == "best_random" and g > 1:
            keep[rows, (best == 0).long()] = True  # the first sample that is not the best
    else:
        raise ValueError(
            f"pf_ppo: pf_strategy must be 'best_of_n', 'best_random', 'best_worst' or 'range', "
            f"got {pf_strategy!r}"
        )
    return torch.where(keep, a, torch.zeros_like(a))


# ---------------------------------------------------------------- representation-based exploration


def rep_bonus_of(seq_hidden: Tensor, *, kind: str = "elliptical", ridge: float = 1.0) -> Tensor:
    """Each sample's novelty within its group from its pooled hidden state, seq_hidden [B, G, D] ->
    bonus [B, G]. phi_i = h_i / ||h_i|| (unit length), the others of sample i are j != i:

        elliptical:  bonus_i = sqrt(phi_i^T (ridge * I + sum_{j != i} phi_j phi_j^T)^{-1} phi_i)
        distance:    bonus_i = || phi_i - mean_{j != i} phi_j ||

    The elliptical form is computed in the G x G Gram space (Woodbury: no D x D matrix), with
    K = Phi Phi^T, q_i = (K_ii - k_io^T (ridge * I + K_oo)^{-1} k_io) / ridge. A group of one
    sample gets bonus 0.
    """
    if seq_hidden.dim() != 3:
        raise ValueError(f"seq_hidden must have shape [B, G, D], got {tuple(seq_hidden.shape)}")
    b, g, _ = seq_hidden.shape
    if g == 1:
        return seq_hidden.new_zeros((b, g))
    phi = torch.nn.functional.normalize(seq_hidden.double(), dim=-1)  # [B, G, D]
    eye = torch.eye(g, dtype=torch.bool, device=phi.device)  # [G, G]
    others = torch.arange(g, device=phi.device).expand(g, g)[~eye].view(g, g - 1)  # [G, G-1]
    if kind == "distance":
        rest = phi[:, others].mean(dim=2)  # [B, G, D] the mean of the others
        return (phi - rest).norm(dim=-1).float()  # [B, G]
    if kind != "elliptical":
        raise ValueError(f"rep_bonus: rep_kind must be 'elliptical' or 'distance', got {kind!r}")
    k = phi @ phi.transpose(1, 2)  # [B, G, G]
    k_oo = k[:, others[:, :, None], others[:, None, :]]  # [B, G, G-1, G-1]
    k_io = k[:, torch.arange(g, device=phi.device)[:, None], others]  # [B, G, G-1]
    reg = ridge * torch.eye(g - 1, dtype=phi.dtype, device=phi.device)  # [G-1, G-1]
    inner = torch.linalg.solve(reg + k_oo, k_io.unsqueeze(-1)).squeeze(-1)  # [B, G, G-1]
    q = (k.diagonal(dim1=1, dim2=2) - (k_io * inner).sum(-1)) / ridge  # [B, G]
    return q.clamp(min=0).sqrt().float()  # [B, G]


@ADVANTAGES.register(
    "rep_bonus",
    needs={"seq_hidden"},
    bounds={"rep_coef": ">= 0", "rep_ridge": "> 0", "eps": ">= 0"},
)
def rep_bonus(
    rewards: Tensor,
    *,
    seq_hidden: Tensor | None = None,
    rep_coef: float = 0.0,
    rep_kind: Literal["elliptical", "distance"] = "elliptical",
    rep_ridge: float = 1.0,
    eps: float = 1e-6,
    scale: Literal["group", "batch", "none"] = "group",
) -> Tensor:
    """GRPO plus a representation-based exploration bonus ("Representation-Based Exploration for
    Language Models: From Test-Time to Post-Training"):

        A_i = grpo(r)_i + rep_coef * (bonus_i - mean_g(bonus))

    bonus_i is :func:`rep_bonus_of` of the group's pooled hidden states (``seq_hidden`` [B, G, D]:
    the policy's last hidden state averaged over each completion's tokens, from a no-grad forward
    before the update): by default the elliptical bonus of sample i against the other samples of its
    group, large for a sample whose representation the others do not span. The abstract gives no
    formula; this is the simplest form faithful to it: the bonus is centred in its group (the
    group's advantages still sum to 0) and added after grpo's normalisation, so a small bonus
    difference in a constant group is not blown up by a near-zero std. rep_coef = 0 is ``grpo``.
    """
    _check(rewards)
    base = grpo(rewards, eps=eps, scale=scale)  # [B, G]
    if rep_coef == 0:
        return base
    if seq_hidden is None:
        raise ValueError("rep_bonus needs seq_hidden [B, G, D] (the trainer supplies it)")
    if seq_hidden.shape[:2] != rewards.shape:
        raise ValueError(
            f"rep_bonus: seq_hidden {tuple(seq_hidden.shape)} does not match rewards "
            f"{tuple(rewards.shape)} (expected [B, G, D])"
        )
    bonus = rep_bonus_of(seq_hidden.to(base.device), kind=rep_kind, ridge=rep_ridge)  # [B, G]
    return base + rep_coef * (bonus - bonus.mean(dim=1, keepdim=True))
