"""Per-token surrogate objectives: -> loss [N, T], lower is better.

Shared arguments: ``logp``, ``old_logp`` [N, T] log-probabilities of the sampled tokens under the current
and the behaviour policy; ``adv`` [N] (one advantage per sequence, broadcast over T) or [N, T];
``mask`` [N, T], 1 for tokens that count. Masked positions get loss 0.

An objective may write diagnostics (for example the clipped fraction) into ``stats`` when the caller
passes a dict; the trainer logs whatever appears there.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rlvr.registry import Registry

OBJECTIVES = Registry("objective")


def _per_token(adv: Tensor, like: Tensor) -> Tensor:
    if adv.dim() == 1:
        return adv.unsqueeze(-1).expand_as(like)  # [N, T]
    if adv.shape != like.shape:
        raise ValueError(f"adv must be [N] or [N, T] = {tuple(like.shape)}, got {tuple(adv.shape)}")
    return adv


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


@OBJECTIVES.register("reinforce")
def reinforce(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, *, stats: dict | None = None
) -> Tensor:
    """REINFORCE (Williams, 1992): L_t = -A * logp_t. ``old_logp`` is unused."""
    a = _per_token(adv, logp)
    return -a * logp * mask  # [N, T]


@OBJECTIVES.register("ppo_clip", bounds={"clip_low": "[0, 1)", "clip_high": ">= 0", "dual_clip": "> 1"})
def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    stats: dict | None = None,
) -> Tensor:
    """PPO clipped surrogate ("Proximal Policy Optimization Algorithms", Schulman et al. 2017) with
    asymmetric bounds (the "clip-higher" of DAPO).

    rho_t = exp(logp_t - old_logp_t)
    L_t   = -min(rho_t * A, clip(rho_t, 1 - clip_low, 1 + clip_high) * A)
    Dual clip (c > 1, for A < 0 only): L_t = min(L_t, -c * A), which bounds the loss when rho is huge.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"ppo_clip: dual_clip must be > 1, got {dual_clip}")
    a = _per_token(adv, logp)
    ratio = torch.exp(logp - old_logp)  # [N, T]
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    loss = _clipped_surrogate(ratio, clipped, a)  # [N, T]
    if dual_clip is not None:
        loss = torch.where(a < 0, torch.minimum(loss, -a * dual_clip), loss)
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _clip_frac(ratio, clipped, a, mask)
            stats["ratio_mean"] = _masked_mean(ratio, mask).item()
    return loss * mask


# ---------------------------------------------------------------- helpers for the catalogue below


def _where_mask(x: Tensor, mask: Tensor) -> Tensor:
    """x on counted tokens, exactly 0 elsewhere (also where x is inf/nan on padding)."""
    return torch.where(mask > 0, x, torch.zeros_like(x))


def _seq_adv(adv: Tensor, mask: Tensor) -> Tensor:
    """One advantage per sequence: ``adv`` if [N], else its mean over each row's counted tokens."""
    if adv.dim() == 1:
        return adv
    a = _per_token(adv, mask)
    return (a * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]


def _group_size(group: Tensor | None, n: int, who: str) -> int:
    """G, checking that ``group`` [N] holds whole groups of equal size in contiguous rows."""
    if group is None:
        raise ValueError(f"{who} needs `group` (the prompt index of each row)")
    if group.shape != (n,):
        raise ValueError(f"{who}: group must be [N] = [{n}], got {tuple(group.shape)}")
    values, counts = torch.unique_consecutive(group, return_counts=True)
    g = int(counts[0])
    if bool((counts != g).any()) or len(torch.unique(values)) != len(values):
        raise ValueError(f"{who}: the rows of each group must be contiguous and groups of equal size")
    return g


def _seq_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """mean_t (logp - old_logp) over each row's counted tokens: log of GSPO's s_i. [N]"""
    return _where_mask(logp - old_logp, mask).sum(-1) / mask.sum(-1).clamp(min=1)


def _gspo_token_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """s_it = sg(s_i) * pi_t / sg(pi_t): value s_i on every token, d s_it / d logp_t = s_i. [N, T]"""
    log_s = _seq_log_ratio(logp, old_logp, mask).detach()  # [N]
    return torch.exp(log_s.unsqueeze(-1) + logp - logp.detach())  # [N, T]


def _clipped_surrogate(ratio: Tensor, clipped: Tensor, a: Tensor) -> Tensor:
    """-min(ratio * A, clipped * A), per token. [N, T]"""
    return torch.maximum(-a * ratio, -a * clipped)


def _clip_frac(ratio: Tensor, clipped: Tensor, a: Tensor, mask: Tensor) -> float:
    """Fraction of counted tokens where the clipped term is the one taken by the surrogate."""
    return _masked_mean((-a * clipped > -a * ratio).float(), mask).item()


def _cov_top(logp: Tensor, a: Tensor, mask: Tensor, fraction: float) -> Tensor:
    """Boolean [N, T]: the floor(fraction * n_tokens) counted tokens with the largest positive
    cov_t = (logp_t - mean(logp)) * (A_t - mean(A)), means over the counted tokens of the call."""
    m = mask > 0
    n_tok = int(m.sum())
    k = int(fraction * n_tok)
    sel = torch.zeros_like(m)
    if k == 0:
        return sel
    lp = logp.detach()
    mu_lp = _masked_mean(_where_mask(lp, mask), mask)
    mu_a = _masked_mean(a, mask)
    cov = (lp - mu_lp) * (a - mu_a)  # [N, T]
    cand = m & (cov > 0)
    k = min(k, int(cand.sum()))
    if k == 0:
        return sel
    score = torch.where(cand, cov, torch.full_like(cov, -torch.inf)).flatten()  # [N*T]
    top = torch.topk(score, k).indices
    return sel.flatten().index_fill(0, top, True).view_as(m)


# ---------------------------------------------------------------- sequence-ratio objectives


@OBJECTIVES.register("gspo", bounds={"clip_low": "[0, 1)", "clip_high": ">= 0"})
def gspo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    stats: dict | None = None,
) -> Tensor:
    """GSPO ("Group Sequence Policy Optimization", Zheng et al. 2025): one length-normalised ratio
    per response.

    s_i  = exp(mean_t (logp_it - old_logp_it))          (mean over the counted tokens of row i)
    L_i  = -min(s_i * A_i, clip(s_i, 1 - clip_low, 1 + clip_high) * A_i)

    Spread over the tokens in the "GSPO-token" form: s_it = sg(s_i) * exp(logp_t - sg(logp_t)), which
    has the value s_i on every token and d s_it / d logp_t = s_i, and L_it = -min(s_it A_it,
    clip(s_it) A_it). So every counted token of row i carries the value L_i, seq_mean_token_mean gives
    mean_i L_i (the GSPO objective), and for any aggregation that weighs the tokens of one row alike
    (all of AGGREGATIONS) value and gradient equal those of L_i placed on every token with the
    gradient through s_i; the clip decision is per sequence. An [N, T] ``adv`` is used per token
    (GSPO-token). Defaults are the paper's 3e-4 / 4e-4. With one token per row this is ppo_clip.
    """
    a = _per_token(adv, logp)
    s = _gspo_token_ratio(logp, old_logp, mask)  # [N, T]
    clipped = s.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = _clipped_surrogate(s, clipped, a)  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _clip_frac(s, clipped, a, mask)
            stats["seq_ratio_mean"] = _masked_mean(s, mask).item()
    return _where_mask(loss, mask)


@OBJECTIVES.register("luspo", bounds={"clip_low": "[0, 1)", "clip_high": ">= 0"})
def luspo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    stats: dict | None = None,
) -> Tensor:
    """LUSPO ("Length-Unbiased Sequence Policy Optimization: Revealing and Controlling Response Length
    Variation in RLVR"): GSPO with each sequence's loss scaled by its length, so that the
    sequence-mean aggregation no longer favours short responses.

    L_it = GSPO_it * |y_i| / mean_j |y_j|         (|y_i| = counted tokens of row i, mean over the call)

    With seq_mean_token_mean this gives sum_i |y_i| L_i / sum_j |y_j| (each sequence weighted by its
    length, as LUSPO does), i.e. the value of gspo aggregated by token_mean. The paper multiplies by
    |y_i|; dividing by the call's mean length is a positive constant per call that keeps the scale
    (and learning rate) of GSPO: on equal lengths luspo == gspo. Use seq_mean_token_mean (token_mean
    would weigh by |y_i|^2). The mean length is the call's (a micro-batch in the trainer).
    """
    loss = gspo(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    lengths = mask.sum(-1)  # [N]
    present = lengths > 0
    mean_len = lengths[present].mean() if bool(present.any()) else lengths.new_tensor(1.0)
    return loss * (lengths / mean_len).unsqueeze(-1)  # [N, T]


@OBJECTIVES.register(
    "dhpo",
    needs={"entropy"},
    bounds={
        "seq_weight": "[0, 1]",
        "clip_low": "[0, 1)",
        "clip_high": ">= 0",
        "seq_clip_low": "[0, 1]",
        "seq_clip_high": ">= 0",
    },
)
def dhpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    mode: Literal["average", "entropy"] = "average",
    seq_weight: float = 0.5,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    seq_clip_low: float = 3e-4,
    seq_clip_high: float = 4e-4,
    stats: dict | None = None,
) -> Tensor:
    """Dynamic Hybrid Policy Optimization (DHPO, "Orchestrating Tokens and Sequences: Dynamic Hybrid
    Policy Optimization for RLVR"): one clipped surrogate on a mix of the token ratio (GRPO) and the
    sequence ratio (GSPO), each clipped in its own trust region before mixing.

    r_t = exp(logp_t - old_logp_t);  s_it = GSPO-token sequence ratio (see gspo)
    rho_t  = w_t * s_it + (1 - w_t) * r_t
    rho~_t = w_t * clip(s_it, 1 - seq_clip_low, 1 + seq_clip_high) + (1 - w_t) * clip(r_t, 1 - clip_low,
             1 + clip_high)
    L_t = -min(rho_t * A, rho~_t * A)

    ``mode="average"``: w_t = ``seq_weight`` (0.5 is the averaged mixing; 0 gives ppo_clip, 1 gspo).
    ``mode="entropy"`` (entropy-guided; our simplest form): high-entropy tokens lean on the token
    ratio, confident ones on the sequence ratio, w_t = Hbar_i / (H_t + Hbar_i) with Hbar_i the mean
    entropy of row i (0.5 where both are 0); a row of constant entropy gets w = 0.5, the average.
    """
    a = _per_token(adv, logp)
    r = torch.exp(logp - old_logp)  # [N, T]
    s = _gspo_token_ratio(logp, old_logp, mask)  # [N, T]
    if mode == "average":
        w = torch.full_like(r, seq_weight).detach()  # [N, T]
    elif mode == "entropy":
        if entropy is None:
            raise ValueError("dhpo: mode='entropy' needs `entropy`")
        h = _where_mask(entropy.detach(), mask)  # [N, T]
        h_bar = (h.sum(-1) / mask.sum(-1).clamp(min=1)).unsqueeze(-1)  # [N, 1]
        den = h + h_bar
        w = torch.where(den > 0, h_bar / den.clamp(min=1e-30), torch.full_like(h, 0.5))  # [N, T]
    else:
        raise ValueError(f"dhpo: mode must be 'average' or 'entropy', got {mode!r}")
    rho = w * s + (1 - w) * r
    rho_c = w * s.clamp(1.0 - seq_clip_low, 1.0 + seq_clip_high) + (1 - w) * r.clamp(
        1.0 - clip_low, 1.0 + clip_high
    )
    loss = _clipped_surrogate(rho, rho_c, a)  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _clip_frac(rho, rho_c, a, mask)
            stats["seq_weight_mean"] = _masked_mean(w, mask).item()
    return _where_mask(loss, mask)


# ---------------------------------------------------------------- token-ratio variants


@OBJECTIVES.register("cispo", bounds={"clip_low": "[0, 1]", "clip_high": ">= 0"})
def cispo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 1.0,
    clip_high: float = 0.28,
    stats: dict | None = None,
) -> Tensor:
    """CISPO ("MiniMax-M1: Scaling Test-Time Compute Efficiently with Lightning Attention"): clip the
    importance weight, not the update, so no token's gradient is lost.

    L_t = -sg(clip(rho_t, 1 - clip_low, 1 + clip_high)) * A * logp_t,   rho_t = exp(logp_t - old_logp_t)

    The gradient of every token is -w_t * A * d logp_t with w_t in [1 - clip_low, 1 + clip_high];
    at rho = 1 it is REINFORCE. MiniMax-M1 imposes no lower bound (clip_low = 1, the default) and
    tunes the upper one. The loss value is, as for reinforce, meaningful only through its gradient.
    """
    a = _per_token(adv, logp)
    ratio = torch.exp(logp - old_logp).detach()  # [N, T]
    w = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = -w * a * logp
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _masked_mean((w != ratio).float(), mask).item()
            stats["ratio_mean"] = _masked_mean(_where_mask(ratio, mask), mask).item()
    return _where_mask(loss, mask)


@OBJECTIVES.register(
    "gtpo",
    needs={"completion_ids", "group", "entropy"},
    bounds={"amplify": ">= 1", "entropy_threshold": ">= 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def gtpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    group: Tensor | None = None,
    entropy: Tensor | None = None,
    amplify: float = 2.0,
    entropy_threshold: float | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """GTPO (Group-relative Trajectory-based Policy Optimization, "GTPO: Trajectory-Based Policy
    Optimization in Large Language Models"): protect conflict tokens, drop high-entropy completions.

    A token (i, t) is a conflict token when another completion j of the same group has the same token
    id at the same position t (both counted) and A_jt * A_it < 0. On conflict tokens the ppo_clip loss
    is multiplied by 0 where A_it < 0 (negative update skipped) and by ``amplify`` where A_it > 0;
    a completion whose mean entropy over its counted tokens exceeds ``entropy_threshold`` gets zero
    loss (off when None). Base: ppo_clip; with no conflict tokens and no filter gtpo == ppo_clip
    (with clip_high = inf and a ratio of 1, the REINFORCE gradient).
    """
    n, t = logp.shape
    g = _group_size(group, n, "gtpo")
    if completion_ids is None:
        raise ValueError("gtpo needs `completion_ids`")
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    b = n // g
    m = (mask > 0).view(b, g, t)  # [B, G, T]
    ids = completion_ids.view(b, g, t)
    sign = torch.sign(a.detach()).reshape(b, g, t) * m  # [B, G, T]
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)) & m.unsqueeze(2) & m.unsqueeze(1)  # [B, G, G, T]
    opposite = sign.unsqueeze(2) * sign.unsqueeze(1) < 0  # [B, G, G, T]
    conflict = (same & opposite).any(dim=2).view(n, t)  # [N, T]
    sgn = sign.view(n, t)
    weight = torch.ones_like(loss)  # [N, T]
    weight = torch.where(conflict & (sgn < 0), torch.zeros_like(weight), weight)
    weight = torch.where(conflict & (sgn > 0), torch.full_like(weight, amplify), weight)
    dropped = torch.zeros(n, dtype=torch.bool, device=logp.device)  # [N]
    if entropy_threshold is not None:
        if entropy is None:
            raise ValueError("gtpo: entropy_threshold needs `entropy`")
        h = _where_mask(entropy.detach(), mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
        dropped = h > entropy_threshold
        weight = weight * (~dropped).to(weight.dtype).unsqueeze(-1)
    if stats is not None:
        stats["conflict_frac"] = _masked_mean(conflict.float(), mask).item()
        stats["dropped_frac"] = dropped.float().mean().item()
    return loss * weight


@OBJECTIVES.register(
    "clip_cov", bounds={"fraction": "[0, 1]", "clip_low": "[0, 1)", "clip_high": ">= 0"}
)
def clip_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    fraction: float = 2e-4,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """Clip-Cov ("The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models").

    cov_t = (logp_t - mean(logp)) * (A_t - mean(A)), means over the counted tokens of the call
    (logp detached). The floor(fraction * n_tokens) tokens of largest positive cov get no gradient
    (their ppo_clip loss is detached: value kept, gradient 0); the rest is ppo_clip. The paper draws
    them at random among tokens with cov in a band; we take the top ones, deterministically.
    fraction = 0 is ppo_clip.
    """
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    sel = _cov_top(logp, a.detach(), mask, fraction)  # [N, T]
    if stats is not None:
        stats["cov_frac"] = _masked_mean(sel.float(), mask).item()
    return torch.where(sel, loss.detach(), loss)


@OBJECTIVES.register(
    "kl_cov",
    bounds={"fraction": "[0, 1]", "coef": ">= 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def kl_cov(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    fraction: float = 2e-3,
    coef: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """KL-Cov ("The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models").

    L_t = ppo_clip_t + 1[t in top] * coef * (logp_t - old_logp_t)^2 / 2

    with "top" the floor(fraction * n_tokens) counted tokens of largest positive covariance cov_t (see
    clip_cov). We use a k2 penalty to the behaviour policy (the authors' code uses |logp - old_logp|,
    and no ratio clipping: clip_low = 1, clip_high = inf). fraction = 0 or coef = 0 is ppo_clip.
    """
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    sel = _cov_top(logp, a.detach(), mask, fraction)  # [N, T]
    penalty = coef * 0.5 * _where_mask(logp - old_logp, sel.to(logp.dtype)) ** 2  # [N, T]
    if stats is not None:
        stats["cov_frac"] = _masked_mean(sel.float(), mask).item()
    return loss + penalty


@OBJECTIVES.register(
    "thr",
    needs={"completion_ids", "group"},
    bounds={"p": "[-1, 1]", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def thr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    group: Tensor | None = None,
    p: float = 0.2,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """THR ("Token Hidden Reward: Steering Exploration-Exploitation in Group Relative Deep
    Reinforcement Learning"): reweight each token's ppo_clip loss by the sign of its influence on
    the likelihood of the group's correct responses.

    L_t = (1 + p * sign(THR_t)) * ppo_clip_t

    THR_it is approximated by A_it * c_it, with c_it the number of counted occurrences of the token
    id y_it in the group's correct responses (rows whose mean advantage is > 0, row i itself
    included), at any position: the hidden-state similarity of the paper is replaced by "same token
    id", and only the sign of THR is used. So
    tokens of correct responses have THR > 0; tokens of incorrect ones that also occur in a correct
    response have THR < 0; other tokens 0 (weight 1). p > 0 amplifies positive THR and weakens
    negative THR (exploitation, greedy accuracy); p < 0 the reverse (exploration, pass@k); p = 0 is
    ppo_clip. The default 0.2 is our choice, not the paper's.
    """
    n, t = logp.shape
    g = _group_size(group, n, "thr")
    if completion_ids is None:
        raise ValueError("thr needs `completion_ids`")
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    b = n // g
    m = mask > 0  # [N, T]
    correct = (_seq_adv(adv, mask).detach() > 0).unsqueeze(-1) & m  # [N, T]
    ids = completion_ids.long().clamp(min=0)
    vocab = int(ids.max()) + 1 if ids.numel() else 1
    in_correct = torch.zeros(b, vocab, device=logp.device).scatter_add_(
        1, ids.view(b, g * t), correct.view(b, g * t).float()
    )  # [B, V] count of correct-response occurrences of each id
    c = in_correct.gather(1, ids.view(b, g * t)).view(n, t)  # [N, T]
    thr_sign = torch.sign(a.detach()) * (c > 0) * m  # [N, T]
    weight = 1.0 + p * thr_sign
    if stats is not None:
        stats["thr_pos_frac"] = _masked_mean((thr_sign > 0).float(), mask).item()
        stats["thr_neg_frac"] = _masked_mean((thr_sign < 0).float(), mask).item()
    return loss * weight


# ---------------------------------------------------------------- sequence-score objectives


@OBJECTIVES.register("real", needs={"rewards", "group"}, bounds={"score_scale": "> 0"})
def real(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    score_scale: float = 1.0,
    loss: Literal["anchor", "bce"] = "anchor",
    stats: dict | None = None,
) -> Tensor:
    """REAL ("Rewards as Labels: Revisiting RLVR from a Classification Perspective"; also PACS,
    "Implicit Actor Critic Coupling via a Supervised Learning Framework for RLVR"): classify
    responses by their verifiable reward.

    score  s_i = score_scale * sum_t (logp_it - old_logp_it)   (counted tokens; 0 on-policy)
    label  y_i = 1[reward_i > 0.5]                        (binary rewards)
    "bce":    L_i = -y_i log sigmoid(s_i) - (1 - y_i) log sigmoid(-s_i)
    "anchor": per group, with one anchor logit 0 for each class,
              L_g = log(1 + sum_{j: y_j = 0} exp(s_j)) + log(1 + sum_{i: y_i = 1} exp(-s_i)),
              the positive term shared equally by the group's positives and the negative term by its
              negatives (sum over the group's rows = L_g). Gradient weights are bounded in (0, 1).
    ``adv`` is not used. Every counted token of row i carries L_i (gradient through s_i), so
    seq_mean_token_mean gives mean_i L_i. On-policy the bce gradient is
    score_scale * (sigmoid(0) - y_i) per token: REINFORCE with advantage score_scale * (y_i - 1/2).
    """
    if rewards is None:
        raise ValueError("real needs `rewards`")
    n = logp.shape[0]
    s = score_scale * _where_mask(logp - old_logp, mask).sum(-1)  # [N]
    y = (rewards.detach() > 0.5).to(s.dtype)  # [N]
    if loss == "bce":
        per_seq = y * F.softplus(-s) + (1 - y) * F.softplus(s)  # [N]
    elif loss == "anchor":
        g = _group_size(group, n, "real")
        sb, yb = s.view(-1, g), y.view(-1, g)  # [B, G]
        zero = torch.zeros_like(sb[:, :1])  # [B, 1], the anchor logit
        neg = torch.where(yb == 0, sb, torch.full_like(sb, -torch.inf))
        pos = torch.where(yb == 1, -sb, torch.full_like(sb, -torch.inf))
        neg_term = torch.logsumexp(torch.cat([zero, neg], dim=1), dim=1, keepdim=True)  # [B, 1]
        pos_term = torch.logsumexp(torch.cat([zero, pos], dim=1), dim=1, keepdim=True)  # [B, 1]
        n_pos = yb.sum(1, keepdim=True)
        n_neg = g - n_pos
        share = torch.where(
            yb == 1, pos_term / n_pos.clamp(min=1), neg_term / n_neg.clamp(min=1)
        )  # [B, G]
        per_seq = share.reshape(n)
    else:
        raise ValueError(f"real: loss must be 'anchor' or 'bce', got {loss!r}")
    if stats is not None:
        with torch.no_grad():
            stats["score_mean"] = s.mean().item()
    return _where_mask(per_seq.unsqueeze(-1).expand_as(logp), mask)


@OBJECTIVES.register("copg", needs={"ref_logp", "group"}, bounds={"reg_beta": "> 0"})
def copg(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    group: Tensor | None = None,
    reg_beta: float = 0.1,
    stats: dict | None = None,
) -> Tensor:
    """Contrastive Policy Gradient (CoPG, "Contrastive Policy Gradient: Aligning LLMs on sequence-level
    scores in a supervised-friendly fashion"): a least-squares, importance-free loss on pairs of
    responses to one prompt, whose minimiser is the KL-regularised optimum pi_ref * exp(R / reg_beta).

    l_i = sum_t (logp_it - ref_logp_it);   u_i = R_i - reg_beta * l_i;   R_i = A_i (the advantage)
    L_i = 1 / (4 reg_beta (G - 1)) * sum_{j != i, same group} (u_i - u_j)^2

    Only differences R_i - R_j enter, so any group-centred advantage works (dr_grpo gives the raw
    reward differences; an [N, T] adv is averaged over each row's tokens). The gradient of sum_i L_i
    on each token of row i is -(u_i - mean_{j != i} u_j): at pi = pi_ref the REINFORCE gradient with
    the leave-one-out (RLOO) advantage, from any sampling policy (old_logp is not used). Every counted
    token of row i carries L_i (gradient through l_i): seq_mean_token_mean gives mean_i L_i.
    """
    if ref_logp is None:
        raise ValueError("copg needs `ref_logp`")
    n = logp.shape[0]
    g = _group_size(group, n, "copg")
    if g < 2:
        raise ValueError("copg needs at least 2 samples per prompt (G >= 2)")
    r = _seq_adv(adv, mask).detach()  # [N]
    l_seq = _where_mask(logp - ref_logp, mask).sum(-1)  # [N]
    u = (r - reg_beta * l_seq).view(-1, g)  # [B, G]
    diff = u.unsqueeze(2) - u.unsqueeze(1)  # [B, G, G], diagonal 0
    per_seq = (diff**2).sum(2) / (4 * reg_beta * (g - 1))  # [B, G]
    if stats is not None:
        with torch.no_grad():
            stats["seq_log_ratio_ref"] = l_seq.mean().item()
    return _where_mask(per_seq.reshape(n).unsqueeze(-1).expand_as(logp), mask)


# ---------------------------------------------------------------- the peers' losses (issue 28)


@OBJECTIVES.register("sapo", bounds={"tau_pos": "> 0", "tau_neg": "> 0"})
def sapo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
    stats: dict | None = None,
) -> Tensor:
    """SAPO ("Soft Adaptive Policy Optimization"): a smooth sigmoid gate in place of the hard clip.

    rho_t = exp(logp_t - old_logp_t);   tau_t = tau_pos if A_t > 0 else tau_neg
    f(rho; tau) = (4 / tau) * sigmoid(tau * (rho - 1))
    L_t = -f(rho_t; tau_t) * A_t

    d f / d logp = 4 rho sigma(1 - sigma) with sigma = sigmoid(tau (rho - 1)): at rho = 1 it is 1, so
    on-policy the gradient is REINFORCE's, and it decays smoothly as rho leaves 1 (faster for larger
    tau). As TRL (``loss_type="sapo"``) and verl (``compute_policy_loss_sapo``) compute it; the log
    ratio is not clamped here (verl clamps it to [-20, 20]). Defaults are TRL's (tau_neg = 1.05 >
    tau_pos: negative updates fade sooner); verl defaults both to 1. Both peers aggregate SAPO by
    seq_mean_token_mean.
    """
    a = _per_token(adv, logp)
    ratio = torch.exp(logp - old_logp)  # [N, T]
    tau = torch.where(a > 0, torch.full_like(a, tau_pos), torch.full_like(a, tau_neg))  # [N, T]
    gate = torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau)  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["ratio_mean"] = _masked_mean(_where_mask(ratio, mask), mask).item()
            stats["gate_mean"] = _masked_mean(_where_mask(gate, mask), mask).item()
    return _where_mask(-gate * a, mask)


@OBJECTIVES.register("gmpo", bounds={"clip_low": ">= 0", "clip_high": ">= 0"})
def gmpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.4,
    clip_high: float = 0.4,
    stats: dict | None = None,
) -> Tensor:
    """Geometric-Mean Policy Optimization (GMPO; verl's ``geo_mean``): the geometric mean of the token
    ratios of a sequence, each clipped in log space, times the sequence's advantage.

    d_t  = logp_t - old_logp_t;   s = sign(A_t)
    d'_t = s * min(s * d_t, s * clip(d_t, -clip_low, clip_high))    (PPO's pessimistic clip, in logs)
    L_i  = -A_i * exp(mean_t d'_it)             (mean over row i's counted tokens; A_i its mean adv)

    Every counted token of row i carries L_i (gradient through the mean), so seq_mean_token_mean
    gives mean_i L_i, the mean verl's ``compute_policy_loss_geo_mean`` takes. The clip bounds are in
    log space: the GMPO paper's range (e^-0.4, e^0.4) is clip_low = clip_high = 0.4 (the default;
    verl reuses its clip_ratio, 0.2 unless set). With one token per row and a ratio inside the range
    this is the unclipped PPO surrogate; on-policy its gradient is REINFORCE's with the advantage
    spread evenly over the row's tokens.
    """
    a = _per_token(adv, logp)
    d = _where_mask(logp - old_logp, mask)  # [N, T]
    s = torch.sign(a)
    d_clip = torch.minimum(s * d, s * d.clamp(-clip_low, clip_high)) * s  # [N, T]
    n_tok = mask.sum(-1).clamp(min=1)  # [N]
    ratio = torch.exp(_where_mask(d_clip, mask).sum(-1) / n_tok)  # [N]
    a_seq = _seq_adv(a, mask)  # [N]
    per_seq = -a_seq * ratio  # [N]
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _masked_mean((d_clip != d).float(), mask).item()
            stats["seq_ratio_mean"] = ratio.mean().item()
    return _where_mask(per_seq.unsqueeze(-1).expand_as(logp), mask)


@OBJECTIVES.register("dppo", bounds={"clip_low": ">= 0", "clip_high": ">= 0", "ratio_cap": "> 0"})
def dppo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    divergence: Literal["tv", "kl"] = "tv",
    clip_low: float | None = None,
    clip_high: float | None = None,
    ratio_cap: float = 20.0,
    stats: dict | None = None,
) -> Tensor:
    """Divergence PPO (DPPO, "binary" form): the trust region is a divergence between the old and the
    new probability of the sampled token, not a range of their ratio.

    p_t = exp(logp_t), q_t = exp(old_logp_t), rho_t = p_t / q_t
    "tv": keep_t = (p_t - q_t <= clip_high) where A_t > 0,  (p_t - q_t >= -clip_low) elsewhere
    "kl": D_t = q log(q / p) + (1 - q) log((1 - q) / (1 - p)) (the KL of the two Bernoulli laws
          "this token or another"); keep_t = (D_t <= clip_high or p_t <= q_t) where A_t > 0,
          (D_t <= clip_low or p_t >= q_t) elsewhere
    L_t = -A_t * sg(min(rho_t, ratio_cap)) * logp_t * keep_t

    A token is dropped (no gradient) only when the update has already moved its probability past the
    divergence bound in the advantage's direction; otherwise the gradient is the truncated-IS
    REINFORCE one. Defaults: clip 0.15 for "tv" and 0.05 for "kl" (the DPPO example scripts), ratio_cap
    20 (clip_ratio_c's default there); at rho = 1 every token is kept and this is REINFORCE. The
    formula is the one of verl's ``compute_policy_loss_dppo_tv`` / ``compute_policy_loss_dppo_kl``
    (newer than the January 2026 verl we read, so read from a later copy of core_algos.py); prime-rl
    ships the same masking as its default loss. The 1e-8 inside verl's binary-KL logarithms is kept.
    """
    if divergence not in ("tv", "kl"):
        raise ValueError(f"dppo: divergence must be 'tv' or 'kl', got {divergence!r}")
    default = 0.15 if divergence == "tv" else 0.05
    lo = default if clip_low is None else clip_low
    hi = default if clip_high is None else clip_high
    a = _per_token(adv, logp)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [N, T]
    ratio = torch.exp(log_ratio)
    w = ratio.clamp(max=ratio_cap).detach()  # [N, T]
    with torch.no_grad():
        p, q = torch.exp(logp), torch.exp(old_logp)  # [N, T]
        if divergence == "tv":
            keep_pos, keep_neg = (p - q) <= hi, (p - q) >= -lo
        else:
            bkl = q * (old_logp - logp) + (1 - q) * torch.log((1 - q + 1e-8) / (1 - p + 1e-8))
            keep_pos, keep_neg = (bkl <= hi) | (p <= q), (bkl <= lo) | (p >= q)
        keep = torch.where(a > 0, keep_pos, keep_neg).to(logp.dtype)  # [N, T]
    loss = -a * w * logp * keep
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _masked_mean(1.0 - keep, mask).item()
            stats["ratio_mean"] = _masked_mean(_where_mask(ratio, mask), mask).item()
    return _where_mask(loss, mask)


@OBJECTIVES.register(
    "vespo",
    bounds={"k_pos": ">= 0", "lambda_pos": ">= 0", "k_neg": ">= 0", "lambda_neg": ">= 0"},
)
def vespo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    k_pos: float = 2.0,
    lambda_pos: float = 3.0,
    k_neg: float = 3.0,
    lambda_neg: float = 2.0,
    stats: dict | None = None,
) -> Tensor:
    """VESPO (TRL's ``loss_type="vespo"``): REINFORCE scaled by a gamma-shaped weight of the sequence
    importance ratio, which fades both for ratios far above and far below 1.

    w_i = exp(clip(sum_t clip(logp_it - old_logp_it, -20, 20), log 1e-8, 20))   (product, not mean)
    phi(w) = exp(lambda + k log w - lambda w)       (phi(1) = 1; k, lambda: _pos if A_i >= 0 else _neg)
    L_t = -sg(phi(w_i)) * A_t * logp_t

    As TRL's ``GRPOTrainer.get_gamma_weights`` computes it (non-finite phi -> 0), with TRL's
    defaults; TRL aggregates it by token_mean. TRL folds its vLLM importance ratio into w; here a
    stale-rollout correction multiplies the loss instead (``scale.is_mode``). At ratio 1 the weight
    is 1 and this is REINFORCE.
    """
    a = _per_token(adv, logp)
    with torch.no_grad():
        log_r = _where_mask((logp - old_logp).clamp(-20.0, 20.0), mask).sum(-1)  # [N]
        log_w = log_r.clamp(math.log(1e-8), 20.0)
        a_seq = _seq_adv(a, mask)  # [N]
        nonneg = a_seq >= 0
        k = torch.where(nonneg, torch.full_like(log_w, k_pos), torch.full_like(log_w, k_neg))
        lam = torch.where(nonneg, torch.full_like(log_w, lambda_pos), torch.full_like(log_w, lambda_neg))
        lam = lam.clamp(min=1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        phi = phi.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).unsqueeze(-1)  # [N, 1]
    if stats is not None:
        stats["phi_seq_mean"] = phi.mean().item()
    return _where_mask(-phi * a * logp, mask)


@OBJECTIVES.register("topr", bounds={"positive_weight": ">= 0", "negative_weight": ">= 0"})
def topr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    positive_weight: float = 1.0,
    negative_weight: float = 1.0,
    stats: dict | None = None,
) -> Tensor:
    """Tapered Off-Policy REINFORCE (TOPR, "Tapered Off-Policy Reinforcement Learning"; ROLL's
    ``topr``): no importance weight for positive samples, a ratio truncated to [0, 1] for negative ones.

    L_t = -positive_weight * A_t * logp_t                              where A_t > 0
    L_t = -negative_weight * sg(min(rho_t, 1)) * A_t * logp_t          elsewhere,  rho_t = pi / pi_old

    Positive samples are pushed up as in SFT, whatever their ratio; negative ones are pushed down
    only as far as the current policy still gives them mass (the weight vanishes as rho -> 0), which
    keeps the update stable off-policy. The paper truncates the ratio of the whole sequence; we
    truncate per token (our reading, not checked against ROLL's code). At rho = 1 with unit weights
    this is REINFORCE.
    """
    a = _per_token(adv, logp)
    ratio = torch.exp(logp - old_logp).detach()  # [N, T]
    w = torch.where(
        a > 0, torch.full_like(ratio, positive_weight), negative_weight * ratio.clamp(max=1.0)
    )  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["ratio_mean"] = _masked_mean(_where_mask(ratio, mask), mask).item()
    return _where_mask(-w * a * logp, mask)


@OBJECTIVES.register("dro", bounds={"dro_beta": "> 0"})
def dro(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    dro_beta: float = 0.05,
    stats: dict | None = None,
) -> Tensor:
    """Direct Reward Optimization loss (DRO; verl's ``loss_mode = "dro"``, Tinker's ``dro``):
    REINFORCE with a quadratic penalty on the log ratio to the behaviour policy, a soft trust region.

    L_t = -(A_t * logp_t - dro_beta / 2 * (logp_t - old_logp_t)^2)

    The gradient is -(A_t - dro_beta * (logp_t - old_logp_t)) * grad logp_t: REINFORCE at
    pi = pi_old, pulled back towards pi_old as the update moves away from it. As verl's
    ``compute_policy_loss_dro`` (volcengine/verl, ``verl/trainer/ppo/core_algos.py``, added August
    2026) computes it; the penalty does not depend on A, so it also acts on tokens of zero advantage
    (but not on masked ones). Default dro_beta = 0.05 (the value of verl's usage example; verl has no
    default and refuses none).
    """
    a = _per_token(adv, logp)
    log_ratio = logp - old_logp  # [N, T]
    loss = -(a * logp - 0.5 * dro_beta * log_ratio.square())  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["ppo_kl"] = _masked_mean(_where_mask(-log_ratio, mask), mask).item()
    return _where_mask(loss, mask)


@OBJECTIVES.register(
    "fipo",
    bounds={
        "clip_low": "[0, 1)",
        "clip_high": ">= 0",
        "delta": "> 1",
        "fipo_decay_rate": "> 0",
        "fipo_clip_range": ">= 0",
        "fipo_safety_threshold": "> 0",
    },
)
def fipo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    delta: float | None = None,
    fipo_decay_rate: float = 32.0,
    fipo_clip_range: float = 0.2,
    fipo_clip_high_only: bool = True,
    fipo_safety_threshold: float | None = 4.0,
    stats: dict | None = None,
) -> Tensor:
    """Future-KL Influenced Policy Optimization (FIPO, arXiv 2603.19835; ms-swift's
    ``loss_type = "fipo"``): the PPO clip, each token's loss weighted by how much the update already
    moves the rest of its sequence.

    d_t = logp_t - old_logp_t  (0 on padding; 0 where rho_t > delta, when delta is set)
    F_t = sum_{k >= t} gamma^(k - t) d_k,     gamma = 2^(-1 / fipo_decay_rate)    (Future-KL)
    f_t = sg(clip(exp(F_t), lo, 1 + fipo_clip_range)),  lo = 1 if fipo_clip_high_only else 1 - range
    f_t = clip(f_t, 0.8, 1.0) where A_t < 0 and rho_t > fipo_safety_threshold
    L_t = f_t * -min(min(rho_t, delta) * A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) * A_t)

    As ms-swift computes it (``swift/rlhf_trainers/grpo_trainer.py``,
    ``GRPOTrainer._compute_fipo_influence`` and the ``fipo`` branch of ``_compute_loss_and_metrics``:
    ``delta`` is TRL's upper bound of the unclipped ratio, inactive when None), with its defaults;
    ms-swift aggregates FIPO as DAPO does, by token_mean. At rho = 1 every d_t = 0, f_t = 1 and this
    is PPO's clip (REINFORCE's gradient). A future that the update reinforces (F_t > 0) raises the
    token's weight up to 1 + range; with ``fipo_clip_high_only`` (the default) it is never lowered.
    """
    a = _per_token(adv, logp)
    log_ratio = logp - old_logp  # [N, T]
    ratio = torch.exp(log_ratio)  # [N, T]
    with torch.no_grad():
        d = _where_mask(log_ratio, mask)  # [N, T]
        if delta is not None:
            d = torch.where(ratio > delta, torch.zeros_like(d), d)
        t = logp.shape[1]
        gamma = 2.0 ** (-1.0 / fipo_decay_rate)
        dist = torch.arange(t, device=logp.device).unsqueeze(0) - torch.arange(
            t, device=logp.device
        ).unsqueeze(1)  # [T, T] k - t
        decay = torch.where(dist >= 0, gamma ** dist.clamp(min=0).to(logp.dtype), 0.0)  # [T, T]
        future = _where_mask(d @ decay.t(), mask)  # [N, T] F_t = sum_k decay[t, k] d_k
        w = torch.exp(future)
        if fipo_clip_range:
            lo = 1.0 if fipo_clip_high_only else 1.0 - fipo_clip_range
            w = w.clamp(min=lo, max=1.0 + fipo_clip_range)
        safe = torch.ones_like(mask, dtype=torch.bool)
        if fipo_safety_threshold is not None:
            safe = ~((a < 0) & (ratio > fipo_safety_threshold))
            w = torch.where(safe, w, w.clamp(min=0.8, max=1.0))  # [N, T]
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [N, T]
    capped = ratio if delta is None else ratio.clamp(max=delta)
    loss = _clipped_surrogate(capped, clipped, a) * w  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _clip_frac(capped, clipped, a, mask)
            stats["future_kl_mean"] = _masked_mean(future, mask).item()
            stats["influence_weight_mean"] = _masked_mean(_where_mask(w, mask), mask).item()
            stats["safety_keep_frac"] = _masked_mean(safe.to(mask.dtype), mask).item()
    return _where_mask(loss, mask)


@OBJECTIVES.register("online_dpo", needs={"ref_logp", "rewards", "group"}, bounds={"dpo_beta": "> 0"})
def online_dpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    dpo_beta: float = 0.1,
    stats: dict | None = None,
) -> Tensor:
    """Online DPO ("Direct Language Model Alignment from Online AI Feedback", Guo et al. 2024; the DPO
    loss of "Direct Preference Optimization: Your Language Model is Secretly a Reward Model") on the
    pair each group makes of its best and its worst sample.

    w = argmax_j r_j, l = argmin_j r_j (first of equals) in each group; no pair when r_w = r_l
    h_g = dpo_beta * [(l_w - ref_w) - (l_l - ref_l)],   l_i / ref_i = sum_t logp_it / ref_logp_it
    L_g = -log sigmoid(h_g) = softplus(-h_g)

    L_g / 2 is placed on every counted token of rows w and l (gradient through h_g), 0 on the
    group's other rows, so seq_mean_token_mean gives sum_g L_g / N. ``adv`` and ``old_logp`` are not
    used: the verifier's rewards pick the pair (TRL's OnlineDPOTrainer asks a judge or a reward
    model; the pair and the sigmoid loss are the same). At pi = pi_ref, L_g = log 2 and the gradient
    is -dpo_beta / 2 * (grad l_w - grad l_l) per pair.
    """
    return _best_worst_pair(logp, mask, ref_logp, rewards, group, dpo_beta, "online_dpo", stats)


def _best_worst_pair(
    logp: Tensor,
    mask: Tensor,
    ref_logp: Tensor | None,
    rewards: Tensor | None,
    group: Tensor | None,
    dpo_beta: float,
    who: str,
    stats: dict | None,
    *,
    xpo_alpha: float = 0.0,
    rpo_eta: float = 0.0,
    treg_coef: float = 0.0,
    token_rewards: Tensor | None = None,
) -> Tensor:
    """DPO's sigmoid loss on each group's (best, worst) pair, plus xpo_alpha * l_l (XPO),
    rpo_eta * (-l_w) (RPO) and treg_coef * (R_w + R_l) (T-REG, ``token_rewards`` u [N, T]), l_i the
    sample's summed log-prob under the policy; half of the pair's loss on each of the two rows'
    tokens. [N, T]"""
    if ref_logp is None or rewards is None:
        raise ValueError(f"{who} needs `ref_logp` and `rewards`")
    n = logp.shape[0]
    g = _group_size(group, n, who)
    seq = _where_mask(logp - ref_logp, mask).sum(-1).view(-1, g)  # [B, G] l_i - ref_i
    r = rewards.detach().float().view(-1, g)  # [B, G]
    win, lose = r.argmax(dim=1), r.argmin(dim=1)  # [B]
    has_pair = (r.max(dim=1).values > r.min(dim=1).values).to(seq.dtype)  # [B]
    rows = torch.arange(seq.shape[0], device=seq.device)
    h = dpo_beta * (seq[rows, win] - seq[rows, lose])  # [B]
    dpo = F.softplus(-h) * has_pair  # [B]
    pair_loss = dpo  # [B]
    if xpo_alpha or rpo_eta:
        seq_pi = _where_mask(logp, mask).sum(-1).view(-1, g)  # [B, G] l_i = sum_t logp_it
    if xpo_alpha:
        explore = xpo_alpha * seq_pi[rows, lose] * has_pair  # [B]
        pair_loss = pair_loss + explore
    if rpo_eta:
        nll = -seq_pi[rows, win] * has_pair  # [B] -log pi(y_w | x), the chosen sample's NLL
        pair_loss = pair_loss + rpo_eta * nll
    if treg_coef:
        if token_rewards is None:
            raise ValueError(f"{who} needs token-level rewards for treg_coef != 0")
        u = _where_mask(token_rewards.detach(), mask)  # [N, T] u_t, no gradient
        z = dpo_beta * (logp - ref_logp)  # [N, T] per-token implicit rewards
        agree = _where_mask(F.softplus(-u * z) - math.log(2.0), mask)  # [N, T]
        reg = (agree.sum(-1) / mask.sum(-1).clamp(min=1)).view(-1, g)  # [B, G] R_i
        token_reg = (reg[rows, win] + reg[rows, lose]) * has_pair  # [B]
        pair_loss = pair_loss + treg_coef * token_reg
    per_seq = torch.zeros_like(seq)  # [B, G]
    per_seq = per_seq.index_put((rows, win), pair_loss / 2, accumulate=True)
    per_seq = per_seq.index_put((rows, lose), pair_loss / 2, accumulate=True)
    if stats is not None:
        with torch.no_grad():
            kept = has_pair > 0
            stats["dpo_pairs"] = float(has_pair.sum())
            stats["dpo_margin_mean"] = float(h[kept].mean()) if bool(kept.any()) else 0.0
            if xpo_alpha:
                stats["xpo_loss_mean"] = float(explore[kept].mean()) if bool(kept.any()) else 0.0
            if rpo_eta:
                stats["rpo_nll_mean"] = float(nll[kept].mean()) if bool(kept.any()) else 0.0
            if treg_coef:
                stats["treg_reg_mean"] = float(token_reg[kept].mean()) if bool(kept.any()) else 0.0
    return _where_mask(per_seq.reshape(n).unsqueeze(-1).expand_as(logp), mask)


@OBJECTIVES.register(
    "xpo", needs={"ref_logp", "rewards", "group"}, bounds={"dpo_beta": "> 0", "xpo_alpha": ">= 0"}
)
def xpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    dpo_beta: float = 0.1,
    xpo_alpha: float = 1e-5,
    stats: dict | None = None,
) -> Tensor:
    """Exploratory Preference Optimization (XPO, Xie et al. 2024; TRL's ``XPOTrainer``): online DPO
    plus an exploration term, alpha times the log-likelihood of the rejected sample under the policy.

    w, l, h_g as in ``online_dpo`` (each group's best and worst sample by the verifier's reward)
    L_g = softplus(-h_g) + xpo_alpha * l_l,    l_l = sum_t logp_lt (the policy's, not a ratio)

    Minimising alpha * l_l lowers the probability of the rejected sample, pushing the policy away
    from what it already does (XPO's optimism bonus). TRL (``trl/experimental/xpo/xpo_trainer.py``,
    ``XPOTrainer._compute_losses``) pairs one policy sample with one sample of the *reference* model
    and puts the term on the reference's sample, ``alpha * model_logprobs_ref_data_sum``; rlvr
    generates from the policy only, so both samples of the pair are the policy's and the term is on
    the rejected one (TRL's formula when its reference sample is the one that loses). Placement and
    aggregation as ``online_dpo``: L_g / 2 on each counted token of rows w and l, so
    seq_mean_token_mean gives sum_g L_g / N. Default alpha = 1e-5 (TRL's); ``xpo_alpha = 0`` is
    ``online_dpo``.
    """
    return _best_worst_pair(
        logp, mask, ref_logp, rewards, group, dpo_beta, "xpo", stats, xpo_alpha=xpo_alpha
    )


@OBJECTIVES.register(
    "rpo", needs={"ref_logp", "rewards", "group"}, bounds={"dpo_beta": "> 0", "rpo_eta": ">= 0"}
)
def rpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    dpo_beta: float = 0.1,
    rpo_eta: float = 0.01,
    stats: dict | None = None,
) -> Tensor:
    """Regularized Preference Optimization (RPO, "Provably Mitigating Overoptimization in RLHF: Your
    SFT Loss is Implicitly an Adversarial Regularizer"): online DPO plus an SFT loss, the negative
    log-likelihood of the chosen sample, which keeps the policy imitating a baseline distribution
    (the preferred responses) and so against responses with spurious high proxy rewards.

    w, l, h_g as in ``online_dpo`` (each group's best and worst sample by the verifier's reward)
    L_g = softplus(-h_g) + rpo_eta * (-l_w),    l_w = sum_t logp_wt (the policy's, not a ratio)

    The abstract gives no formula; this is its "DPO loss + SFT loss" with the SFT loss on the
    pair's chosen sample, summed over its tokens (-log pi(y_w | x), the sequence likelihood of the
    paper's theory; TRL's ``rpo_alpha`` takes the per-token mean instead). The paper's weight on
    the SFT term is a knob here, ``rpo_eta`` (rlvr's default 0.01: the summed NLL of a completion is
    tens of nats, DPO's loss about log 2). A group without a pair (all rewards equal) gets no SFT
    term either. Placement and aggregation as ``online_dpo``; ``rpo_eta = 0`` is ``online_dpo``.
    """
    return _best_worst_pair(
        logp, mask, ref_logp, rewards, group, dpo_beta, "rpo", stats, rpo_eta=rpo_eta
    )


@OBJECTIVES.register(
    "treg",
    needs={"ref_logp", "rewards", "group", "self_teacher_logp"},
    bounds={"dpo_beta": "> 0", "treg_coef": ">= 0"},
)
def treg(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    self_teacher_logp: Tensor | None = None,
    dpo_beta: float = 0.1,
    treg_coef: float = 1.0,
    stats: dict | None = None,
) -> Tensor:
    """Token-level reward regularisation of online DPO (T-REG, "T-REG: Preference Optimization with
    Token-Level Reward Regularization"): the sequence-level DPO loss plus a term that makes the
    per-token implicit rewards of the pair follow token-level rewards the policy generates itself
    by contrastive prompting.

    w, l, h_g as in ``online_dpo`` (each group's best and worst sample by the verifier's reward)
    u_it = sg(self_teacher_logp_it - old_logp_it)     (token reward: the policy before its update,
           the row's token after a prompt with a correct solution appended, minus after the plain one)
    z_it = dpo_beta * (logp_it - ref_logp_it)          (the token's implicit reward, as in DPO)
    R_i  = (1 / n_i) sum_t [softplus(-u_it * z_it) - log 2]     (n_i the row's counted tokens)
    L_g  = softplus(-h_g) + treg_coef * (R_w + R_l)

    The source of u is rlvr's ``[self_teacher]`` forward (``self_teacher_logp``, SRPO's): the
    policy scoring its own tokens under two prompts, with and without a correct solution, is the
    nearest rlvr has to the paper's self-generated contrastive-prompting rewards (no second model,
    no trained credit model, no annotator); the paper's own prompts (a revision instruction to do
    better / worse) are not built. A row gets a hint only when it failed and its group has a
    correct sample (or its problem a worked solution), so u is 0 on the other rows (their
    self_teacher_logp is old_logp) and the term acts mostly on the rejected sample: tokens the
    hinted policy finds likelier (u > 0) get their implicit reward raised, those it avoids lowered.
    The abstract gives no formula; this logistic agreement of sign(z_t) with u_t, weighted by |u_t|
    and averaged over the row's tokens (so it does not grow with length; DPO's term is about
    log 2), is rlvr's form: R_i = 0 and its gradient is -u_it dpo_beta / (2 n_i) per token at
    pi = pi_ref, and it saturates once the implicit reward agrees. A group without a pair gets no
    term. Placement and aggregation as ``online_dpo``; ``treg_coef = 0`` is ``online_dpo`` bit for
    bit (the term is not computed).
    """
    if self_teacher_logp is None and treg_coef:
        raise ValueError("treg needs `self_teacher_logp` (the [self_teacher] forward)")
    u = None if self_teacher_logp is None else self_teacher_logp - old_logp  # [N, T]
    return _best_worst_pair(
        logp,
        mask,
        ref_logp,
        rewards,
        group,
        dpo_beta,
        "treg",
        stats,
        treg_coef=treg_coef,
        token_rewards=u,
    )


@OBJECTIVES.register("p3o", needs={"group"}, bounds={"clip_low": "[0, 1)", "clip_high": ">= 0"})
def p3o(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    group: Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    p3o_clip: Literal["joint", "separate"] = "joint",
    stats: dict | None = None,
) -> Tensor:
    """Pairwise Proximal Policy Optimization (P3O, "Pairwise Proximal Policy Optimization: Harnessing
    Relative Feedback for LLM Alignment"): a trajectory-wise clipped policy gradient on the reward
    differences of the pairs each group makes.

    For every pair i, j of a group with A_i > A_j (A_i the sequence's advantage; with
    ``advantage = "dr_grpo"`` A_i - A_j = r_i - r_j, the relative feedback itself):
    delta_ij = A_i - A_j > 0,   s_i = sum_t (logp_it - old_logp_it)   (trajectory-wise log ratio)
    joint:     L_ij = -min(rho_ij delta_ij, clip(rho_ij, 1 - clip_low, 1 + clip_high) delta_ij),
               rho_ij = exp(s_i - s_j)   (the winner's ratio relative to the loser's)
    separate:  L_ij = ppo(rho_i, +delta_ij) + ppo(rho_j, -delta_ij),   rho_i = exp(s_i),
               ppo(rho, a) = -min(rho a, clip(rho, 1 - clip_low, 1 + clip_high) a)
    L_g = sum_{pairs of g} L_ij / (G - 1)

    The abstract gives no formula; this is the simplest clipped pairwise rule faithful to it, with
    two choices of what is clipped (the ratio of the pair's ratios, or each trajectory's own
    ratio). Only differences of rewards enter, so any per-prompt shift of the reward changes
    nothing (the abstract's invariance to equivalent rewards). Pairs of equal advantage add 0. Half
    of each pair's loss is placed on every counted token of each of its two rows, so
    seq_mean_token_mean gives sum_g L_g / N (use that aggregation). At rho = 1 the gradient of that
    sum is -(1/N) sum_i A_i^RLOO grad sum_t logp_it, A_i^RLOO = A_i - mean_{j != i} A_j: the
    vanilla pairwise policy gradient is REINFORCE with RLOO's baseline on the summed log-prob
    (hence the 1 / (G - 1)). The log ratios are clamped to [-20, 20] before exp (far outside any
    clip range), so a long completion's ratio cannot overflow.
    """
    n = logp.shape[0]
    g = _group_size(group, n, "p3o")
    if p3o_clip not in ("joint", "separate"):
        raise ValueError(f"p3o: p3o_clip must be 'joint' or 'separate', got {p3o_clip!r}")
    if g < 2:
        return torch.zeros_like(logp)
    a = _seq_adv(adv, mask).detach().float().view(-1, g)  # [B, G]
    s = _where_mask(logp - old_logp, mask).sum(-1).view(-1, g)  # [B, G] trajectory-wise log ratios
    delta = a.unsqueeze(2) - a.unsqueeze(1)  # [B, G, G] A_i - A_j
    win = delta > 0  # [B, G, G] each unequal pair once, winner first
    d = torch.where(win, delta, torch.zeros_like(delta)).to(logp.dtype)  # [B, G, G]
    lo, hi = 1.0 - clip_low, 1.0 + clip_high

    def surrogate(log_rho: Tensor, adv_: Tensor) -> tuple[Tensor, Tensor]:
        rho = torch.exp(log_rho.clamp(-20.0, 20.0))
        clipped = rho.clamp(lo, hi)
        return _clipped_surrogate(rho, clipped, adv_), (-adv_ * clipped > -adv_ * rho)

    if p3o_clip == "joint":
        pair, cut = surrogate(s.unsqueeze(2) - s.unsqueeze(1), d)  # [B, G, G]
    else:
        s_i = s.unsqueeze(2).expand_as(d)  # [B, G, G] the winner's log ratio
        s_j = s.unsqueeze(1).expand_as(d)  # [B, G, G] the loser's
        up, cut_i = surrogate(s_i, d)
        down, cut_j = surrogate(s_j, -d)
        pair, cut = up + down, cut_i | cut_j
    pair = torch.where(win, pair, torch.zeros_like(pair)) / (g - 1)  # [B, G, G]
    per_seq = (pair.sum(dim=2) + pair.sum(dim=1)) / 2  # [B, G] half of each pair on each row
    if stats is not None:
        with torch.no_grad():
            pairs = float(win.sum())
            stats["p3o_pairs"] = pairs
            stats["clip_frac"] = float((cut & win).sum()) / pairs if pairs else 0.0
    return _where_mask(per_seq.reshape(n).unsqueeze(-1).expand_as(logp), mask)


# ---------------------------------------------------------------- exploration, entropy and KL


@OBJECTIVES.register(
    "dads",
    needs={"ref_logp", "rewards", "group"},
    bounds={"clip_low": "[0, 1)", "clip_high": ">= 0", "dads_beta": ">= 0", "dads_power": ">= 0"},
)
def dads(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    rewards: Tensor | None = None,
    group: Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dads_beta: float = 0.05,
    dads_power: float = 1.0,
    success_reward: float = 1.0,
    dads_kl: Literal["k1", "k2", "k3", "fk1", "fk2", "fk3"] = "k3",
    stats: dict | None = None,
) -> Tensor:
    """Difficulty-Adaptive Divergence Shaping, the positive-sample half of APO ("APO: Enhancing
    Reasoning Ability of MLLMs via Asymmetric Policy Optimization"): the PPO clip plus a KL penalty
    whose weight depends on the sample's sign and its prompt's difficulty.

    p_g    = mean_{j in g} 1[r_j >= success_reward]          the success rate of the prompt's group
    beta_i = dads_beta * p_g ** dads_power   if A_i > 0 (a positive sample),   0 otherwise
    L_t    = ppo_clip_t + beta_i * KL_t(logp, ref_logp)      (KL_t: the estimator ``dads_kl``)

    A_i is the sequence's advantage (the mean over its counted tokens when ``adv`` is [N, T]). The
    abstract says only that the KL weight of positive samples adapts to their difficulty; the form
    and its direction are rlvr's: a success on an easy prompt (p_g near 1) is held near the
    reference, where the model's existing knowledge lies, and a rare success on a hard prompt is
    free to move the policy. dads_power = 0 gives every positive sample dads_beta; dads_beta = 0 is
    ``ppo_clip`` (and then ``ref_logp`` is not read). Use it with ``algo.beta = 0``: the trainer's
    own KL term is one global coefficient on every sample.
    """
    base = ppo_clip(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if dads_beta == 0:
        return base
    if ref_logp is None or rewards is None:
        raise ValueError("dads needs `ref_logp` and `rewards`")
    from rlvr.algos.kl import KL_ESTIMATORS

    n = logp.shape[0]
    g = _group_size(group, n, "dads")
    success = (rewards.detach().float() >= success_reward).view(-1, g)  # [B, G]
    p = success.float().mean(1, keepdim=True).expand(-1, g).reshape(n)  # [N]
    positive = _seq_adv(adv, mask).detach() > 0  # [N]
    beta = torch.where(positive, dads_beta * p.pow(dads_power), torch.zeros_like(p))  # [N]
    kl = _where_mask(KL_ESTIMATORS[dads_kl](logp, ref_logp.detach()), mask)  # [N, T]
    if stats is not None:
        with torch.no_grad():
            stats["dads_beta_mean"] = beta.mean().item()
    return base + beta.to(kl.dtype).unsqueeze(-1) * kl


def _top_fraction(score: Tensor, mask: Tensor, fraction: float) -> Tensor:
    """Boolean [N, T]: the ceil(fraction * n) counted tokens with the largest score (n: the counted
    tokens of the call; ties broken by torch.topk)."""
    m = mask > 0
    n_tok = int(m.sum())
    k = math.ceil(fraction * n_tok)
    keep = torch.zeros_like(m)
    if k == 0:
        return keep
    s = torch.where(m, score, torch.full_like(score, -torch.inf)).flatten()  # [N * T]
    idx = torch.topk(s, k).indices
    return keep.flatten().index_fill(0, idx, True).view_as(m)


@OBJECTIVES.register(
    "d3s", needs={"entropy"}, bounds={"clip_low": "[0, 1)", "clip_high": ">= 0", "d3s_tokens": "(0, 1]"}
)
def d3s(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    d3s_tokens: float = 0.5,
    stats: dict | None = None,
) -> Tensor:
    """The token level of D^3S ("Learning More with Less: A Dynamic Dual-Level Down-Sampling
    Framework for Efficient Policy Optimization"): train on the tokens where the policy is both
    uncertain and impactful.

    s_t    = |A_t| * H_t                                   (H_t: the policy's entropy, detached)
    keep_t = 1 for the ceil(d3s_tokens * n) counted tokens of the call with the largest s_t
    L_t    = keep_t * ppo_clip_t

    n is the number of counted tokens the call sees (a micro-batch in the trainer, where the paper
    ranks across the batch's groups). Dropped tokens weigh 0 but still count in the aggregation's
    denominator, which scales the gradient by about d3s_tokens (an Adam step is nearly invariant to
    that). The paper's schedule (aggressive down-sampling first, relaxed later) is not built: the
    fraction is fixed for the run. d3s_tokens = 1 is ``ppo_clip``. The rollout level is
    ``advantage:d3s``.
    """
    base = ppo_clip(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if d3s_tokens >= 1:
        return base
    if entropy is None:
        raise ValueError("d3s needs `entropy`")
    a = _per_token(adv, logp).detach()
    keep = _top_fraction(a.abs() * entropy.detach(), mask, d3s_tokens)  # [N, T]
    if stats is not None:
        stats["d3s_kept_frac"] = _masked_mean(keep.to(mask.dtype), mask).item()
    return torch.where(keep, base, torch.zeros_like(base))


def planning_mask(completion_ids: Tensor, mask: Tensor, grams: list[list[int]]) -> Tensor:
    """Boolean [N, T]: the tokens that lie in an occurrence of any of ``grams`` (token-id sequences)
    made of counted tokens only."""
    n, t = completion_ids.shape
    counted = mask > 0
    out = torch.zeros(n, t, dtype=torch.bool, device=completion_ids.device)
    for gram in grams:
        width = len(gram)
        if width == 0 or width > t:
            continue
        want = torch.tensor(gram, dtype=completion_ids.dtype, device=completion_ids.device)  # [L]
        windows = completion_ids.unfold(1, width, 1)  # [N, T - L + 1, L]
        starts = (windows == want).all(-1) & counted.unfold(1, width, 1).all(-1)  # [N, T - L + 1]
        for j in range(width):  # an occurrence starting at s covers s, ..., s + L - 1
            out[:, j : j + t - width + 1] |= starts
    return out


@OBJECTIVES.register(
    "hicra",
    needs={"completion_ids"},
    bounds={"clip_low": "[0, 1)", "clip_high": ">= 0", "hicra_alpha": "[0, 1]"},
)
def hicra(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    planning_grams: list[list[int]] | None = None,
    hicra_alpha: float = 0.2,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """HIerarchy-aware Credit Assignment (HICRA, "Emergent Hierarchical Reasoning in LLMs through
    Reinforcement Learning"): concentrate the update on planning tokens.

    P_t  = 1 if token t lies in an occurrence of one of ``planning_grams`` (token-id sequences of
           the model's tokenizer, e.g. the ids of " let me check" or " alternatively"), else 0
    A'_t = A_t + hicra_alpha * |A_t| * P_t
    L_t  = ppo_clip_t with A'_t

    so a planning token of a positive sample weighs 1 + alpha and that of a negative one 1 - alpha
    (alpha <= 1 keeps the sign). The abstract gives no formula; this additive form is the paper's as
    public re-implementations write it. Missing: the paper's mining of "strategic grams" from the
    rollouts (the grams are a knob here) and its semantic-entropy metric. hicra_alpha = 0 or no
    grams is ``ppo_clip``.
    """
    if hicra_alpha == 0 or not planning_grams:
        return ppo_clip(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if completion_ids is None:
        raise ValueError("hicra needs `completion_ids`")
    a = _per_token(adv, logp)
    plan = planning_mask(completion_ids, mask, planning_grams)  # [N, T]
    boosted = a + hicra_alpha * a.abs() * plan.to(a.dtype)  # [N, T]
    if stats is not None:
        stats["planning_frac"] = _masked_mean(plan.to(mask.dtype), mask).item()
    return ppo_clip(logp, old_logp, boosted, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)


@OBJECTIVES.register(
    "empg",
    needs={"entropy"},
    bounds={"clip_low": "[0, 1)", "clip_high": ">= 0", "k": ">= 0", "k_future": ">= 0", "zeta": ">= 0"},
)
def empg(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    k: float = 1.0,
    k_future: float = 1.0,
    zeta: float = 0.1,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """EMPG's modulated advantage with its future-clarity bonus ("Harnessing Uncertainty:
    Entropy-Modulated Policy Gradients for Long-Horizon LLM Agents").

    Hn_t = (H_t - min H) / (max H - min H)          (over the counted tokens of the call; 0 if equal)
    g_t  = exp(-k Hn_t) / mean(exp(-k Hn))           (``token_weights:empg``: mean 1)
    f_t  = exp(-k_future Hn_{t+1})   if token t + 1 is counted,   0 at a row's last counted token
    A'_t = g_t * A_t + zeta * f_t
    L_t  = ppo_clip_t with A'_t

    g amplifies confident steps and attenuates uncertain ones; the bonus f rewards a step whose
    successor is predictable (low entropy), "more predictable solution paths". EMPG works per agent
    step; here a step is a token. Unlike ``token_weights:empg``, which multiplies the whole loss, g
    scales only the advantage, so the bonus is not modulated; do not combine the two (``k`` reaches
    both). k = 0 and zeta = 0 is ``ppo_clip``; zeta = 0 alone gives the token weights' update at
    ratio 1.
    """
    if k == 0 and zeta == 0:
        return ppo_clip(logp, old_logp, adv, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if entropy is None:
        raise ValueError("empg needs `entropy`")
    from rlvr.algos.weights import empg as empg_weights
    from rlvr.algos.weights import minmax_entropy

    h = entropy.detach().float()
    counted = mask > 0
    a = _per_token(adv, logp)
    gain = empg_weights(mask, entropy=h, k=k).to(a.dtype)  # [N, T], 1 off the mask
    hn = minmax_entropy(h, mask)  # [N, T]
    nxt = torch.cat([hn[:, 1:], torch.zeros_like(hn[:, :1])], dim=1)  # [N, T] Hn_{t+1}
    has_next = torch.cat([counted[:, 1:], torch.zeros_like(counted[:, :1])], dim=1)  # [N, T]
    bonus = torch.where(has_next & counted, torch.exp(-k_future * nxt), torch.zeros_like(nxt))
    modulated = gain * a + zeta * bonus.to(a.dtype)  # [N, T]
    if stats is not None:
        stats["clarity_bonus_mean"] = _masked_mean(bonus, mask).item()
    return ppo_clip(logp, old_logp, modulated, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)


# ---------------------------------------------------------------- entropy-aware advantages per token


@OBJECTIVES.register(
    "mssr",
    needs={"entropy"},
    bounds={"mssr_alpha": ">= 0", "mssr_kappa": "> 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def mssr(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    mssr_alpha: float = 0.4,
    mssr_kappa: float = 2.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """MSSR's entropy-based advantage shaping ("Stable and Efficient Single-Rollout RL for Multimodal
    Reasoning"), on ppo_clip.

    psi_t = min(mssr_alpha * H_t, |A_t| / mssr_kappa)          (H_t the token's entropy, detached)
    A'_t  = A_t + psi_t;     L_t = ppo_clip(logp, old_logp, A', mask)_t

    The abstract names an entropy-based advantage shaping that adaptively regularises the advantage
    magnitudes, without a formula. This is the clipped entropy term of "Reasoning with Exploration: An
    Entropy Perspective", the form used in group-based RLVR that the abstract refers to: the bonus is
    at most |A_t| / kappa (kappa > 1 keeps the sign of A_t), so uncertain tokens of a correct answer
    are pushed harder and those of a wrong answer softer, and a token with zero advantage gets none.
    Pair it with ``advantage:mssr`` (the batch baseline) for one rollout per prompt. mssr_alpha = 0 is
    ppo_clip.
    """
    a = _per_token(adv, logp)
    if mssr_alpha == 0:
        return ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if entropy is None:
        raise ValueError("mssr needs `entropy`")
    a = a.detach()
    psi = torch.minimum(mssr_alpha * entropy.detach(), a.abs() / mssr_kappa)  # [N, T]
    shaped = a + psi  # [N, T]
    if stats is not None:
        stats["entropy_bonus_mean"] = _masked_mean(_where_mask(psi, mask), mask).item()
    return ppo_clip(logp, old_logp, shaped, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)


def entropy_change(logp: Tensor, entropy: Tensor, adv: Tensor) -> Tensor:
    """[N, T] the first-order change of the policy's entropy that a token's update causes, up to the
    step size: dH_t = -A_t * (log pi(y_t) + H_t).

    A softmax policy whose logits move along A * grad log pi(y_t) changes its entropy at state s_t by
    -Cov_{y ~ pi}(log pi(y), A(y)) ("The Entropy Mechanism of Reinforcement Learning for Reasoning
    Language Models"); the sampled token's share of that covariance is (log pi(y_t) - E log pi) * A_t,
    and E_{y ~ pi} log pi(y) = -H_t. All inputs are detached."""
    return -adv.detach() * (logp.detach() + entropy.detach())


@OBJECTIVES.register(
    "steer",
    needs={"entropy"},
    bounds={"steer_coef": ">= 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def steer(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    steer_coef: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """STEER ("Rethinking Entropy Interventions in RLVR: An Entropy Change Perspective"): reweight
    each token's ppo_clip loss by the entropy change its update is predicted to cause.

    dH_t = -A_t * (logp_t + H_t)                             (``entropy_change``: first order)
    D    = mean |dH| over the counted tokens of the call
    w_t  = 1 / (1 + steer_coef * max(0, -dH_t) / D)          (1 where dH_t >= 0, or D = 0)
    L_t  = w_t * ppo_clip_t                                  (w detached)

    The abstract gives no formula: STEER stabilises the token-level entropy change by reweighting,
    curbing over-exploitation while keeping exploration. This is rlvr's simplest rule of that kind:
    tokens whose update would lower the entropy (a confident token reinforced, an unlikely one
    punished) are damped in proportion to the predicted drop, relative to the call's mean |dH|; tokens
    that raise it keep weight 1. steer_coef = 0 is ppo_clip.
    """
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if steer_coef == 0:
        return loss
    if entropy is None:
        raise ValueError("steer needs `entropy`")
    dh = _where_mask(entropy_change(logp, entropy, a), mask)  # [N, T]
    scale = _masked_mean(dh.abs(), mask)
    if not bool(scale > 0):
        return loss
    w = 1.0 / (1.0 + steer_coef * (-dh).clamp(min=0) / scale)  # [N, T]
    if stats is not None:
        stats["steer_weight_mean"] = _masked_mean(w, mask).item()
    return loss * w.detach()


def _top_positive(score: Tensor, mask: Tensor, fraction: float) -> Tensor:
    """Boolean [N, T]: the floor(fraction * n_tokens) counted tokens with the largest positive score
    (fewer if fewer are positive)."""
    m = mask > 0
    k = int(fraction * int(m.sum()))
    cand = m & (score > 0)
    k = min(k, int(cand.sum()))
    sel = torch.zeros_like(m)
    if k == 0:
        return sel
    flat = torch.where(cand, score, torch.full_like(score, -torch.inf)).flatten()  # [N*T]
    return sel.flatten().index_fill(0, torch.topk(flat, k).indices, True).view_as(m)


@OBJECTIVES.register(
    "capo", bounds={"capo_fraction": "[0, 1]", "clip_low": "[0, 1)", "clip_high": ">= 0"}
)
def capo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    capo_fraction: float = 0.05,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """Curvature-aware masking after CAPO ("Stabilizing Policy Gradients for Sample-Efficient
    Reinforcement Learning in LLM Reasoning"): the tokens behind the most curved, least stable part
    of the update get no gradient.

    d_t = logp_t - old_logp_t;   c_t = |A_t| * d_t^2               (detached)
    the floor(capo_fraction * n_tokens) counted tokens of largest c_t > 0: ppo_clip loss detached
    (value kept, gradient 0); the rest: ppo_clip

    CAPO tracks second-order information of the policy-gradient objective and masks the samples that
    make an update unstable. rlvr tracks no Hessian or Fisher; the proxy is each token's second-order
    term of the surrogate: rho_t A_t = A_t (1 + d_t + d_t^2 / 2 + ...), whose curvature part grows
    as |A_t| d_t^2, the token's advantage-weighted squared log-ratio (its share of the KL moved along
    the update). It is zero while the policy still equals the sampling one (the first mini-batch of a
    step), so it acts from the second mini-batch or epoch on, or on stale rollouts. capo_fraction = 0
    is ppo_clip.
    """
    a = _per_token(adv, logp)
    loss = ppo_clip(logp, old_logp, a, mask, clip_low=clip_low, clip_high=clip_high, stats=stats)
    if capo_fraction == 0:
        return loss
    d = _where_mask(logp.detach() - old_logp.detach(), mask)  # [N, T]
    curv = a.detach().abs() * d**2  # [N, T]
    sel = _top_positive(curv, mask, capo_fraction)  # [N, T]
    if stats is not None:
        stats["capo_masked_frac"] = _masked_mean(sel.float(), mask).item()
    return torch.where(sel, loss.detach(), loss)
