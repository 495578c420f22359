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
import torch.nn.functional as F
from torch import Tensor

from rlvr.algos.objectives import OBJECTIVES, _masked_mean, _per_token, ppo_clip

__all__ = ["calibrl", "critique_grpo", "hybrid", "rl_plus"]


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


@OBJECTIVES.register(
    "critique_grpo",
    needs={"demo"},
    bounds={"refine_gamma": "> 0", "clip_low": "[0, 1)", "clip_high": ">= 0"},
)
def critique_grpo(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    demo: Tensor | None = None,
    refine_gamma: float = 0.1,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """Critique-GRPO ("Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical
    Feedback"): the policy learns from its initial responses and its critique-guided refinements at
    once. The refinements are the ``[demos]`` rows of source 'refinement' (sampled by the policy
    after the question, a failed answer and a critique; trained as answers to the plain question),
    scored by the run's rewards, their rewards in their group's advantage statistics. Per token of
    row i,

        initial response:  L_t = ppo_clip_t
        refinement:        L_t = -f(pi_theta(y_t)) * A_i,   f(p) = p / (p + refine_gamma)

    The abstract gives no formula; the shaped refinement term is rlvr's choice, LUFFY's policy
    shaping of off-policy tokens: no clip (the refinement's behaviour policy saw the critique, so a
    ratio against it means little), and the gradient -A * refine_gamma * p / (p + refine_gamma)^2 *
    grad log p weighs up the tokens the plain-prompted policy finds unlikely, relative to the
    SFT-like p * grad log p. A wrong refinement (A < 0) is pushed down like a wrong sample, not
    imitated (which sets it apart from ``hybrid``'s SFT term). On a batch without refinement rows
    it is ``ppo_clip``, bit for bit.
    """
    n = logp.shape[0]
    is_demo = _flags(demo, "critique_grpo", n)  # [N, 1]
    own = mask * (~is_demo)  # [N, T] the initial responses' tokens
    rl = ppo_clip(logp, old_logp, adv, own, clip_low=clip_low, clip_high=clip_high, stats=stats)
    p = logp.exp()  # [N, T] pi_theta(y_t), with gradient
    shaped = p / (p + refine_gamma)  # [N, T]
    a = _per_token(adv, logp)  # [N, T]
    demo_mask = mask * is_demo  # [N, T] the refinements' tokens
    off = torch.where(demo_mask > 0, -shaped * a, torch.zeros_like(p))  # [N, T]
    if stats is not None and bool(demo_mask.any()):
        with torch.no_grad():
            stats["refine_prob_mean"] = _masked_mean(p, demo_mask).item()
    return torch.where(is_demo, off, rl)


def _demo_baseline(
    old_logp: Tensor, mask: Tensor, group: Tensor, is_demo: Tensor, rows: Tensor, who: str
) -> Tensor:
    """e [N, T]: on each row in ``rows`` [N] (bool), the old log-prob its group's demonstration row
    gave the token at the same position; past the demonstration's last counted token, that row's
    mean over its counted tokens. 0 on the other rows."""
    d = is_demo[:, 0].nonzero().squeeze(1)  # [K] the demonstration rows
    dg = group[d]  # [K] their groups
    if dg.unique().numel() != dg.numel():
        raise ValueError(f"{who}: a group has more than one demonstration row (groups {dg.tolist()})")
    match = group[:, None] == dg[None, :]  # [N, K]
    lost = rows & ~match.any(dim=1)  # [N]
    if bool(lost.any()):
        raise ValueError(
            f"{who}: rows of the demonstrated groups {group[lost].unique().tolist()} came without "
            "their demonstration row: the objective compares each sample with its group's "
            "demonstration, so a call (a micro-batch) must hold whole groups"
        )
    dm = mask[d]  # [K, T]
    de = old_logp[d].detach()  # [K, T]
    mean = (de * dm).sum(-1) / dm.sum(-1).clamp(min=1)  # [K]
    base = torch.where(dm > 0, de, mean[:, None])  # [K, T]
    which = match.float().argmax(dim=1)  # [N] each row's demonstration (0 where none: masked below)
    return torch.where(rows[:, None], base[which], torch.zeros_like(old_logp))  # [N, T]


@OBJECTIVES.register(
    "calibrl",
    needs={"demo", "demo_group", "group"},
    bounds={
        "guide_coef": ">= 0",
        "guide_slope": "[0, 1]",
        "clip_low": "[0, 1)",
        "clip_high": ">= 0",
    },
)
def calibrl(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    demo: Tensor | None = None,
    demo_group: Tensor | None = None,
    group: Tensor | None = None,
    guide_coef: float = 0.1,
    guide_slope: float = 0.5,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    stats: dict | None = None,
) -> Tensor:
    """CalibRL's expert-calibrated term ("Controllable Exploration in Hybrid-Policy RLVR for
    Multi-Modal Reasoning"): the expert's demonstration is a baseline the policy's samples are
    measured against, not a target to imitate. Per token t of row i,

        sample of the policy:  L_t = ppo_clip_t + guide_coef * |A_i| * LeakyReLU(z_t; guide_slope)
                               z_t = -sign(A_i) * (log pi_theta(y_t) - e_t)
                               (the second term only in a group with a demonstration)
        demonstration:         L_t = 0

    e_t is the policy's log-prob, before the update, of the demonstration's token at the same
    position t (past the demonstration's end: its mean over its tokens). A sample better than its
    group (A > 0) is pushed up at slope 1 while the policy is less sure of its token than of the
    expert's, and at ``guide_slope`` once it is surer (an overconfident update, moderated but kept
    in its direction); a worse one (A < 0) is pushed down at slope 1 while the policy is surer of it
    than of the expert's token, at ``guide_slope`` after. LeakyReLU(z; a) = z if z >= 0, else a z.

    Read from the authors' released code (not copied): the position-aligned baseline, |A| as the
    weight, the demonstration row left out of the loss, slope 0.5 and coefficient 0.1 are theirs.
    rlvr's own choices: the sign of A_i stands for the sample's correctness (the same for binary
    rewards in a mixed group; A = 0 leaves the term out), the demonstration's mean past its end,
    and the demonstration's reward joining its group's advantage statistics (the ``[demos]`` stage;
    the authors' estimator leaves it out). guide_coef = 0, or a batch without demonstrations, is
    ppo_clip to the bit on the policy's samples; guide_slope = 1 makes the term linear, -A (log pi -
    e), whose gradient is REINFORCE's -A grad log pi (the expert then shifts the loss, not its
    gradient).
    """
    n = logp.shape[0]
    is_demo = _flags(demo, "calibrl", n)  # [N, 1]
    in_demo_group = _flags(demo_group, "calibrl", n, "demo_group")  # [N, 1]
    if group is None:
        raise ValueError("calibrl needs `group` [N] (each row's prompt index)")
    if group.shape != (n,):
        raise ValueError(f"calibrl: group must be [N] = [{n}], got {tuple(group.shape)}")
    own = mask * (~is_demo)  # [N, T] the policy's sampled tokens
    loss = ppo_clip(logp, old_logp, adv, own, clip_low=clip_low, clip_high=clip_high, stats=stats)
    guided_rows = (in_demo_group & ~is_demo)[:, 0]  # [N] samples whose group has a demonstration
    if guide_coef != 0 and bool(guided_rows.any()):
        e = _demo_baseline(old_logp, mask, group, is_demo, guided_rows, "calibrl")  # [N, T]
        a = _per_token(adv, logp)  # [N, T]
        z = -torch.sign(a) * (logp - e)  # [N, T]
        guided = a.abs() * F.leaky_relu(z, negative_slope=guide_slope)  # [N, T]
        where = (own > 0) & guided_rows[:, None]  # [N, T]
        guided = torch.where(where, guided, torch.zeros_like(guided))  # [N, T]
        loss = loss + guide_coef * guided
        if stats is not None:
            with torch.no_grad():
                counted = where.float()  # [N, T]
                stats["guide_loss"] = _masked_mean(guided, counted).item()
                stats["guide_damped_frac"] = _masked_mean((z < 0).float(), counted).item()
    return torch.where(is_demo, torch.zeros_like(loss), loss)
