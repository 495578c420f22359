"""Token weights: mask [N, T] -> nonnegative weights [N, T] that multiply ANY objective's per-token loss.

The trainer computes ``loss_tok = objective(...) * weights`` before the aggregation. Weights carry no
gradient. Optional inputs a weighting may declare (``needs``): ``entropy`` [N, T] (the current policy's
token entropy), ``logp`` [N, T] (current log-probs of the sampled tokens), ``group`` [N] (prompt index,
whole groups, contiguous), ``completion_ids`` [N, T] and ``rewards`` [N] (each sequence's reward).
Statistics that normalise ("mean over the counted tokens") are taken over the call, which is a
micro-batch in the trainer. Positions outside the mask get weight 1 (their loss is 0 anyway). At its
neutral setting every weighting equals ``none``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from rlvr.registry import Registry

TOKEN_WEIGHTS = Registry("token weighting")


def _on_mask(w: Tensor, mask: Tensor) -> Tensor:
    """w on counted tokens, 1 elsewhere; detached."""
    return torch.where(mask > 0, w, torch.ones_like(w)).detach()


def _normalise(w: Tensor, mask: Tensor) -> Tensor:
    """w / mean(w over counted tokens); all ones if that mean is 0."""
    m = mask > 0
    mean = w[m].mean() if bool(m.any()) else w.new_tensor(0.0)
    if not bool(mean > 0):
        return torch.ones_like(w)
    return w / mean


def _require(x: Tensor | None, name: str, who: str) -> Tensor:
    if x is None:
        raise ValueError(f"token weighting {who!r} needs `{name}`")
    return x.detach()


@TOKEN_WEIGHTS.register("none")
def none(mask: Tensor) -> Tensor:
    """All ones: the objective's loss unchanged (the standard, unweighted loss)."""
    return torch.ones_like(mask, dtype=torch.float32 if not mask.is_floating_point() else mask.dtype)


@TOKEN_WEIGHTS.register("empg", needs={"entropy"}, bounds={"k": ">= 0"})
def empg(mask: Tensor, *, entropy: Tensor | None = None, k: float = 1.0) -> Tensor:
    """EMPG ("Harnessing Uncertainty: Entropy-Modulated Policy Gradients for Long-Horizon LLM
    Agents"): confident tokens weigh more, uncertain ones less.

    Hn_t = (H_t - min H) / (max H - min H)          (min, max over the counted tokens; 0 if all equal)
    w_t  = exp(-k * Hn_t) / mean(exp(-k * Hn))      (mean over the counted tokens: mean weight 1)

    Multiplying the loss by w_t scales the update of A_t * grad logp_t: confident correct tokens are
    amplified, confident errors penalised harder, uncertain tokens attenuated. EMPG works per agent
    step; we apply it per token. Its "future clarity" bonus is an advantage term, not a weight: it is
    in ``objective:empg``. k = 0 is ``none``.
    """
    h = _require(entropy, "entropy", "empg").float()
    if not bool((mask > 0).any()):
        return none(mask)
    w = torch.exp(-k * minmax_entropy(h, mask))
    return _on_mask(_normalise(w, mask), mask)


def minmax_entropy(h: Tensor, mask: Tensor) -> Tensor:
    """[N, T] Hn_t = (H_t - min H) / (max H - min H), min and max over the counted tokens; all 0
    when they are equal or no token counts (EMPG's normalised entropy)."""
    m = mask > 0
    if not bool(m.any()):
        return torch.zeros_like(h)
    lo = h[m].min()
    span = h[m].max() - lo
    return (h - lo) / span if bool(span > 0) else torch.zeros_like(h)


@TOKEN_WEIGHTS.register("tw_grpo", needs={"logp", "group"}, bounds={"alpha": "[0, 1]"})
def tw_grpo(
    mask: Tensor, *, logp: Tensor | None = None, group: Tensor | None = None, alpha: float = 0.5
) -> Tensor:
    """TW-GRPO token weighting ("Reinforcing Video Reasoning with Focused Thinking"): tokens at which
    the group's responses disagree (high intra-group variance) carry more information.

    v_{g,t} = population variance over the responses of group g that have a counted token at
              position t of their sampled-token probability p_it = exp(logp_it) (0 if only one has)
    w_it    = (1 - alpha) + alpha * v_{g(i),t} / mean(v over the counted tokens)

    so the weights have mean 1 over the counted tokens; alpha = 0 is ``none``, alpha = 1 pure variance
    weighting. All ones if every variance is 0 (e.g. G = 1).
    """
    lp = _require(logp, "logp", "tw_grpo")
    grp = _require(group, "group", "tw_grpo")
    n, t = mask.shape
    values, counts = torch.unique_consecutive(grp, return_counts=True)
    g = int(counts[0])
    if bool((counts != g).any()) or len(torch.unique(values)) != len(values):
        raise ValueError("tw_grpo: the rows of each group must be contiguous and groups of equal size")
    m = (mask > 0).view(n // g, g, t).float()  # [B, G, T]
    p = torch.where(m > 0, lp.view(n // g, g, t).exp(), torch.zeros_like(m))  # [B, G, T]
    cnt = m.sum(1, keepdim=True).clamp(min=1)  # [B, 1, T]
    mean = p.sum(1, keepdim=True) / cnt
    var = ((p - mean) ** 2 * m).sum(1, keepdim=True) / cnt  # [B, 1, T]
    v = var.expand(n // g, g, t).reshape(n, t)  # [N, T]
    w = (1 - alpha) + alpha * _normalise(v, mask)
    return _on_mask(w, mask)


@TOKEN_WEIGHTS.register("entropy_filter", needs={"entropy"}, bounds={"threshold": ">= 0"})
def entropy_filter(
    mask: Tensor,
    *,
    entropy: Tensor | None = None,
    threshold: float | None = None,
    level: Literal["completion", "token"] = "completion",
) -> Tensor:
    """Entropy filter of GTPO ("GTPO: Trajectory-Based Policy Optimization in Large Language
    Models"): weight 0 above an entropy threshold, 1 otherwise.

    level = "completion": w_it = 1[mean_t H_it <= threshold] (mean over row i's counted tokens), GTPO's
    filter of high-entropy completions; level = "token": w_it = 1[H_it <= threshold]. The threshold is
    in nats (GTPO derives one from the vocabulary; here it is a knob). threshold = None is ``none``.
    """
    if threshold is None:
        return none(mask)
    h = _require(entropy, "entropy", "entropy_filter").float()
    if level == "token":
        keep = h <= threshold  # [N, T]
    elif level == "completion":
        h_seq = torch.where(mask > 0, h, torch.zeros_like(h)).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
        keep = (h_seq <= threshold).unsqueeze(-1).expand_as(h)  # [N, T]
    else:
        raise ValueError(f"entropy_filter: level must be 'completion' or 'token', got {level!r}")
    return _on_mask(keep.float(), mask)


@TOKEN_WEIGHTS.register("rorecomp", needs={"group", "rewards"}, bounds={"priority_frac": "(0, 1]"})
def rorecomp(
    mask: Tensor,
    *,
    group: Tensor | None = None,
    rewards: Tensor | None = None,
    priority_frac: float = 0.5,
) -> Tensor:
    """The priority batch of RoRecomp ("RoRecomp: Enhancing Reasoning Efficiency via Rollout Response
    Recomposition in Reinforcement Learning"): of each group's responses, the update keeps the short
    successes and the long failures, a clear signal for brevity.

    In group g, with r_i the rewards and L_i the lengths (counted tokens of row i)::

        P_g = {i : r_i > mean_g r}   (above the group's mean: the successes of 0/1 rewards)
        W_g = {i : r_i < mean_g r}   (below it: the failures)
        kept = the ceil(priority_frac |P_g|) shortest of P_g and the ceil(priority_frac |W_g|) longest
               of W_g (ties: the earlier row), and every response at the mean (zero group advantage)
        w_it = 1 if i is kept, 0 otherwise, on every token of row i

    so long successes and short failures do not enter the update (their loss is 0; a token-mean
    aggregation still counts their tokens). The abstract gives no selection rule; per-group
    selection by the reward's side of the mean and the fraction are rlvr's. The paper's compensation
    batch (the remaining responses, trained later from a replay buffer) is not built.
    priority_frac = 1 keeps every response: ``none``. Groups must be contiguous and of equal size.
    """
    grp = _require(group, "group", "rorecomp")
    r = _require(rewards, "rewards", "rorecomp").float()
    n, t = mask.shape
    values, counts = torch.unique_consecutive(grp, return_counts=True)
    g = int(counts[0])
    if bool((counts != g).any()) or len(torch.unique(values)) != len(values):
        raise ValueError("rorecomp: the rows of each group must be contiguous and groups of equal size")
    b = n // g
    rg = r.view(b, g)  # [B, G]
    length = (mask > 0).sum(-1).float().view(b, g)  # [B, G]
    centred = rg - rg.mean(dim=1, keepdim=True)  # [B, G]
    tol = 1e-6 * rg.abs().amax(dim=1, keepdim=True).clamp(min=1.0)  # [B, 1] float rounding of the mean
    pos, neg = centred > tol, centred < -tol  # [B, G]
    inf = torch.full_like(length, math.inf)
    keep = torch.ones_like(length, dtype=torch.bool)  # [B, G]
    for side, key in ((pos, length), (neg, -length)):  # successes: shortest first; failures: longest
        order = torch.sort(torch.where(side, key, inf), dim=1, stable=True).indices  # [B, G]
        rank = torch.argsort(order, dim=1)  # [B, G] place of each response on its side
        k = torch.ceil(priority_frac * side.sum(dim=1, keepdim=True).float())  # [B, 1]
        keep &= ~side | (rank < k)
    w = keep.float().reshape(n, 1).expand(n, t)  # [N, T]
    return _on_mask(w, mask)


# ---------------------------------------------------------------- corrections of stale rollouts

IS_CORRECTIONS = Registry("importance-sampling correction")
"""Weights [N, T] (no gradient) for tokens sampled by an older (behaviour) policy: ``(prox_logp,
behav_logp, mask, *, cap, low, stats) -> w``. The learner multiplies each token's loss by w and uses
``prox_logp`` as the objective's ``old_logp`` (decoupled PPO). ``scale.is_mode`` picks one, ``cap``
is ``scale.is_cap`` (upper bound) and ``low`` ``scale.is_low`` (lower bound, None: none). Per token
the ratio is rho_t = exp(prox_logp_t - behav_logp_t); per sequence rho_i = prod_t rho_it (TRL's
``sequence_*`` modes, verl's ``rollout_is = "sequence"``). Equal policies give w = mask in every
mode. ``stats`` receives ``is_weight_mean`` / ``is_weight_max`` of the raw ratio over counted tokens
(per-sequence modes: of each token's sequence ratio) and ``is_truncated_frac``, the fraction of
counted tokens whose weight was truncated or masked."""


def _is_stats(raw: Tensor, changed: Tensor, mask: Tensor, stats: dict[str, float] | None) -> None:
    if stats is None:
        return
    counted = mask > 0
    k = counted.sum().clamp(min=1)
    stats["is_weight_mean"] = float(raw[counted].sum() / k)
    stats["is_weight_max"] = float(raw[counted].max()) if bool(counted.any()) else 0.0
    stats["is_truncated_frac"] = float(changed[counted].sum() / k)


def _dropped(raw: Tensor, out: Tensor, mask: Tensor, stats: dict[str, float] | None) -> Tensor:
    """``raw`` with the tokens in ``out`` set to 0, on counted tokens; records the stats. [N, T]"""
    _is_stats(raw, out, mask, stats)
    return torch.where(out, torch.zeros_like(raw), raw) * mask


def _clipped(raw: Tensor, lo: float, cap: float, mask: Tensor, stats: dict[str, float] | None) -> Tensor:
    """``raw`` clipped to [lo, cap] on counted tokens; records the stats. [N, T]"""
    _is_stats(raw, (raw > cap) | (raw < lo), mask, stats)
    return raw.clamp(min=lo, max=cap) * mask


def _check_bounds(cap: float, low: float | None) -> float:
    if cap < 1:
        raise ValueError(f"cap = {cap}: the truncation of importance weights must be >= 1")
    if low is not None and not 0 <= low <= 1:
        raise ValueError(f"low = {low}: the lower bound of importance weights must be in [0, 1]")
    return 0.0 if low is None else low


def _seq_ratio(prox_logp: Tensor, behav_logp: Tensor, mask: Tensor, mean: bool = False) -> Tensor:
    """exp(sum_t (prox - behav)) per row (``mean``: exp of the mean, the geometric mean), on every
    token of the row. [N, T]"""
    d = torch.where(mask > 0, prox_logp - behav_logp, torch.zeros_like(prox_logp)).sum(-1)  # [N]
    if mean:
        d = d / mask.sum(-1).clamp(min=1)
    return torch.exp(d.clamp(max=80.0)).unsqueeze(-1).expand_as(prox_logp)  # [N, T]


@IS_CORRECTIONS.register("token_truncate")
def truncated_is(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Truncated importance sampling (TIS) for tokens sampled by an older (behaviour) policy.

    w_t = min(pi_prox(y_t) / pi_behav(y_t), C) = min(exp(prox_logp_t - behav_logp_t), C) on counted
    tokens (``mask`` = 1), 0 elsewhere. The learner multiplies each token's loss by w_t and uses
    ``prox_logp`` as the objective's ``old_logp``, so the trust region is around the proximal policy
    (the current weights when the step starts) while w corrects for the data's staleness (decoupled
    PPO); truncating at C bounds the variance. C = inf is plain importance sampling; equal policies
    give w = 1. ``low`` (optional) also raises weights below it to ``low``: w_t = clip(rho_t, low, C),
    TRL's ``vllm_importance_sampling_mode = "token_truncate"`` and OpenRLHF's ``tis``. ``stats``
    (optional) receives ``is_weight_mean`` / ``is_weight_max`` before truncation and
    ``is_truncated_frac``, over counted tokens.
    """
    lo = _check_bounds(cap, low)
    raw = torch.exp(prox_logp - behav_logp) * mask  # [N, T]
    return _clipped(raw, lo, cap, mask, stats)


@IS_CORRECTIONS.register("token_mask")
def masked_is(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Masked importance sampling per token (IcePop): w_t = rho_t if low <= rho_t <= C, else 0.

    A token whose ratio leaves the band is dropped instead of truncated. TRL's ``token_mask`` mode,
    OpenRLHF's ``is_correction_type = "icepop"`` (its band [0.5, 5]: ``scale.is_low = 0.5``,
    ``scale.is_cap = 5``) and verl's token-level rejection sampling with IS weights.
    """
    lo = _check_bounds(cap, low)
    raw = torch.exp(prox_logp - behav_logp) * mask  # [N, T]
    out = (raw > cap) | (raw < lo)
    return _dropped(raw, out, mask, stats)


@IS_CORRECTIONS.register("sequence_truncate")
def sequence_truncated_is(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Truncated importance sampling per sequence: w_it = clip(prod_t rho_it, low, C) on every token
    of row i (TRL's ``sequence_truncate``, verl's ``rollout_is = "sequence"``). Unbiased for a
    sequence-level objective before truncation, but its variance grows with the length."""
    lo = _check_bounds(cap, low)
    raw = _seq_ratio(prox_logp, behav_logp, mask) * mask  # [N, T]
    return _clipped(raw, lo, cap, mask, stats)


@IS_CORRECTIONS.register("sequence_mask")
def sequence_masked_is(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Masked importance sampling per sequence: w_it = rho_i = prod_t rho_it if low <= rho_i <= C,
    else 0 for the whole row (TRL's ``sequence_mask``, its default; verl's sequence-level rejection
    sampling)."""
    lo = _check_bounds(cap, low)
    raw = _seq_ratio(prox_logp, behav_logp, mask) * mask  # [N, T]
    out = (raw > cap) | (raw < lo)
    return _dropped(raw, out, mask, stats)


@IS_CORRECTIONS.register("seq_mask_tis")
def seq_mask_tis(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Masked sequence TIS (OpenRLHF's ``is_correction_type = "seq-mask-tis"``): keep a row when the
    geometric mean of its ratios lies in the band, and weight its tokens by their own ratios.

    g_i = exp(mean_t log rho_it);   w_it = rho_it * 1[low <= g_i <= C]

    The geometric mean does not grow with the length as the product does (verl's ``rollout_rs =
    "geometric"``). As OpenRLHF's code computes it, the kept tokens' ratios are not truncated."""
    lo = _check_bounds(cap, low)
    raw = torch.exp(prox_logp - behav_logp) * mask  # [N, T]
    g = _seq_ratio(prox_logp, behav_logp, mask, mean=True)  # [N, T]
    out = (g > cap) | (g < lo)
    return _dropped(raw, out, mask, stats)


@IS_CORRECTIONS.register("m2po", bounds={"m2_threshold": "> 0"})
def m2po(
    prox_logp: Tensor,
    behav_logp: Tensor,
    mask: Tensor,
    *,
    cap: float = 2.0,
    low: float | None = None,
    m2_threshold: float = 0.04,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """Second-Moment Trust Policy Optimization (M2PO, Zheng et al. 2025; AReaL's
    ``actor.m2_threshold``): drop the tokens whose log ratio to the behaviour policy has the largest
    square, as few as needed for the mean square of the rest to fall below the threshold.

    m_t = (behav_logp_t - prox_logp_t)^2 on the counted tokens;  sort them, m_(1) >= m_(2) >= ...
    k = the smallest k with mean(m_(k+1), ..., m_(n)) < m2_threshold  (n - 1 if none: one is kept)
    M_t = 0 on the k tokens of largest m_t, 1 on the others
    w_t = M_t * rho_t * 1[low <= rho_t <= C]        (AReaL's example adds a ratio mask, upper 5)

    As AReaL's ``_apply_m2po_masking`` / ``_get_m2po_loss_mask`` (``areal/trainer/ppo/actor.py``)
    compute M (ties in the sort are broken as torch.sort breaks them), with AReaL's example
    threshold 0.04 (``examples/math/gsm8k_m2po.yaml``, which also masks tokens whose ratio exceeds
    5: ``scale.is_cap = 5``). The second moment is taken over all the step's stale tokens (AReaL: over
    one loss call's); a masked token still counts in the aggregation's denominator. In a synchronous
    run prox = behav, every m_t = 0 and w = mask.
    """
    lo = _check_bounds(cap, low)
    raw = torch.exp(prox_logp - behav_logp) * mask  # [N, T]
    counted = mask > 0
    m2 = (behav_logp - prox_logp).square()[counted]  # [n] counted tokens, row-major
    keep = torch.ones_like(m2, dtype=torch.bool)  # [n]
    if m2.numel():
        ordered, idx = torch.sort(m2, descending=True)
        tail_mean = ordered.flip(0).cumsum(0).flip(0) / torch.arange(
            m2.numel(), 0, -1, device=m2.device, dtype=m2.dtype
        )  # [n] mean of ordered[i:]
        below = torch.nonzero(tail_mean < m2_threshold)
        k = int(below[0]) if below.numel() else m2.numel() - 1
        keep[idx[:k]] = False
    m = torch.zeros_like(counted)
    m[counted] = keep  # [N, T]
    out = ~m | (raw > cap) | (raw < lo)
    if stats is not None:
        stats["m2po_masked_frac"] = float((~keep).sum() / max(m2.numel(), 1))
    return _dropped(raw, out, mask, stats)
