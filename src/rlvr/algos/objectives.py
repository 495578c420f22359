"""Per-token surrogate objectives: -> loss [N, T], lower is better.

Shared arguments: ``logp``, ``old_logp`` [N, T] log-probabilities of the sampled tokens under the current
and the behaviour policy; ``adv`` [N] (one advantage per sequence, broadcast over T) or [N, T];
``mask`` [N, T], 1 for tokens that count. Masked positions get loss 0.

An objective may write diagnostics (for example the clipped fraction) into ``stats`` when the caller
passes a dict; the trainer logs whatever appears there.
"""

from __future__ import annotations

import torch
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


@OBJECTIVES.register("ppo_clip", bounds={"clip_low": "[0, 1]", "clip_high": ">= 0", "dual_clip": "> 1"})
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
    """PPO clipped surrogate with asymmetric bounds (PPO; DAPO "clip-higher").

    rho_t = exp(logp_t - old_logp_t)
    L_t   = -min(rho_t * A, clip(rho_t, 1 - clip_low, 1 + clip_high) * A)
    Dual clip (c > 1, for A < 0 only): L_t = min(L_t, -c * A), which bounds the loss when rho is huge.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"ppo_clip: dual_clip must be > 1, got {dual_clip}")
    a = _per_token(adv, logp)
    ratio = torch.exp(logp - old_logp)  # [N, T]
    unclipped = -a * ratio
    clipped = -a * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)  # [N, T]
    if dual_clip is not None:
        loss = torch.where(a < 0, torch.minimum(loss, -a * dual_clip), loss)
    if stats is not None:
        with torch.no_grad():
            stats["clip_frac"] = _masked_mean((clipped > unclipped).float(), mask).item()
            stats["ratio_mean"] = _masked_mean(ratio, mask).item()
    return loss * mask
