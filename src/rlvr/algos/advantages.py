"""Outcome-level advantage estimators: rewards [B, G] -> advantages [B, G].

B prompts, G sampled completions per prompt. Every estimator is a pure function registered in
``ADVANTAGES`` with its knobs as keyword-only arguments.
"""

from __future__ import annotations

from typing import Literal

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
    """REINFORCE leave-one-out: A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g(r)).

    Needs G >= 2.
    """
    _check(rewards)
    g = rewards.shape[1]
    if g < 2:
        raise ValueError("rloo needs at least 2 samples per prompt (G >= 2)")
    r = rewards.float()
    loo_mean = (r.sum(dim=1, keepdim=True) - r) / (g - 1)  # [B, G]
    return r - loo_mean
