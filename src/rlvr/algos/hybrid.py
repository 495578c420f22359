"""Objectives that learn from demonstrations beside the policy's own samples (SFT/RL hybrids).

They read the demonstration rows the collector appends to groups (``[demos]``, ``rlvr.train.demos``):
``demo`` [N] is 1 on a demonstration row (a worked solution the policy did not sample; its
``old_logp`` is the policy's own log-prob before the update) and ``demo_group`` [N] is 1 on every
row of a group that has one. On a batch without demonstration rows each reduces exactly to
``ppo_clip`` (both flags 0: the same tensor, bit for bit).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rlvr.algos.objectives import OBJECTIVES, _masked_mean, _per_token, ppo_clip

__all__ = ["hybrid", "rl_plus"]


def _flags(demo: Tensor | None, who: str, n: int, name: str = "demo") -> Tensor:
    """The [N] flag as a bool column [N, 1], or an error naming what is missing or misshapen."""
    if demo is None:
        raise ValueError(f"{who} needs `{name}` [N] (the collector's demonstration rows, [demos])")
    if demo.shape != (n,):
        raise ValueError(f"{who}: {name} must be [N] = [{n}], got {tuple(demo.shape)}")
    return (demo > 0)[:, None]  # [N, 1]


@OBJECTIVES.register(
    "hybrid",
    needs={"demo", "demo_group"},
    bounds={"rl_coef": ">= 0", "sft_coef": ">= 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def hybrid(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    demo: Tensor | None = None,
    demo_group: Tensor | None = None,
    rl_coef: float = 1.0,
    sft_coef: float = 1.0,
    sft_weight: Literal["uniform", "chord_phi"] = "uniform",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """SFT on demonstrations and RL on the policy's samples in one loss: HPT ("Towards a Unified View
    of Large Language Model Post-Training") and CHORD's weighted SFT term ("On-Policy RL Meets
    Off-Policy Experts: Harmonizing Supervised Fine-Tuning and Reinforcement Learning via Dynamic
    Weighting"). Per token of row i,

        sample of the policy:  L_t = w_i * ppo_clip_t,   w_i = rl_coef if i's group has a
                               demonstration (demo_group), else 1
        demonstration:         L_t = sft_coef * phi_t * (-log pi_theta(e_t))

    phi_t = 1 ('uniform'), or p_t (1 - p_t) with p_t = pi_theta(e_t) detached ('chord_phi', CHORD-phi:
    the SFT term weighs most the tokens the policy is unsure of). HPT's switch by the group's success
    rate P is the collector's choice of groups (``demos.max_success`` = gamma: a group with P <= gamma
    gets a demonstration) with rl_coef = 0, sft_coef = 1: such a group trains on the SFT loss alone,
    every other group on the RL loss alone. CHORD: a demonstration in every group (max_success = 1),
    rl_coef = 1 and sft_coef = mu (a constant: CHORD's schedule of mu over training is not built).
    The SFT term's tokens are aggregated with the policy's by the run's aggregation.
    """
    if sft_weight not in ("uniform", "chord_phi"):
        raise ValueError(f"hybrid: sft_weight must be 'uniform' or 'chord_phi', got {sft_weight!r}")
    n = logp.shape[0]
    is_demo = _flags(demo, "hybrid", n)  # [N, 1]
    in_demo_group = _flags(demo_group, "hybrid", n, "demo_group")  # [N, 1]
    own = mask * (~is_demo)  # [N, T] the policy's sampled tokens
    rl = ppo_clip(logp, old_logp, adv, own, clip_low=clip_low, clip_high=clip_high, stats=stats)
    rl = torch.where(in_demo_group, rl * rl_coef, rl)  # [N, T]
    nll = -logp  # [N, T]
    if sft_weight == "chord_phi":
        p = logp.detach().exp()  # [N, T]
        nll = nll * p * (1 - p)
    demo_mask = mask * is_demo  # [N, T] the demonstrations' tokens
    sft = torch.where(demo_mask > 0, sft_coef * nll, torch.zeros_like(nll))  # [N, T]
    if stats is not None and bool(demo_mask.any()):
        with torch.no_grad():
            stats["sft_nll"] = _masked_mean(-logp, demo_mask).item()
    return torch.where(is_demo, sft, rl)


@OBJECTIVES.register(
    "rl_plus",
    needs={"demo"},
    bounds={
        "explore_gamma": ">= 0",
        "demo_prob": "(0, 1]",
        "clip_low": "[0, 1)",
        "clip_high": ">= 0",
    },
)
def rl_plus(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    demo: Tensor | None = None,
    explore_gamma: float = 2.0,
    demo_prob: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """Hybrid-policy optimisation of RL-PLUS ("RL-PLUS: Countering Capability Boundary Collapse of
    LLMs in Reinforcement Learning with Hybrid-policy Optimization"): the policy's samples by PPO's
    clipped surrogate, demonstration tokens e_t through multiple importance sampling with an
    exploration-based advantage. The abstract gives no formula; this is the rule we take:

        sample of the policy:  L_t = ppo_clip_t
        demonstration:         L_t = -r_t * A_i * C_t
            r_t = pi_theta(e_t) / (1/2 pi_old(e_t) + 1/2 q)      (balance-heuristic MIS over the two
                                                                 behaviour policies)
            C_t = (1 - pi_theta(e_t))^explore_gamma, detached   (weighs up the demonstration's
                                                                 tokens the policy finds unlikely)

    A_i is the demonstration's advantage from the run's estimator (its reward among its group's,
    the mixed group). The demonstration's own policy is unknown: q = ``demo_prob`` is the
    probability it is taken to give its tokens (1: a deterministic writer, as the worked-solution
    solvers are); pi_old is the policy before the update (the collector's forward). r_t <= 1 / (q / 2)
    = 2 / q is bounded, so the demonstration term has no clip. explore_gamma = 0: plain MIS.
    """
    n = logp.shape[0]
    is_demo = _flags(demo, "rl_plus", n)  # [N, 1]
    own = mask * (~is_demo)  # [N, T]
    rl = ppo_clip(logp, old_logp, adv, own, clip_low=clip_low, clip_high=clip_high, stats=stats)
    p = logp.exp()  # [N, T] pi_theta(e_t), with gradient
    mix = 0.5 * old_logp.exp() + 0.5 * demo_prob  # [N, T] the mixture of behaviour policies
    ratio = p / mix  # [N, T] the MIS ratio
    explore = (1 - p.detach()).clamp(min=0) ** explore_gamma  # [N, T]
    a = _per_token(adv, logp)  # [N, T]
    demo_mask = mask * is_demo  # [N, T]
    off = torch.where(demo_mask > 0, -ratio * a * explore, torch.zeros_like(p))  # [N, T]
    if stats is not None and bool(demo_mask.any()):
        with torch.no_grad():
            stats["mis_ratio_mean"] = _masked_mean(ratio, demo_mask).item()
            stats["explore_weight_mean"] = _masked_mean(explore, demo_mask).item()
    return torch.where(is_demo, off, rl)
