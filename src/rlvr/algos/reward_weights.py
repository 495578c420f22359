"""Reward-weight controllers: the weights of the reward components, adapted from step to step.

Every function in :data:`REWARD_WEIGHTS` has the form::

    fn(state: dict[str, Tensor], means: Tensor [K], *, base: Tensor [K], names: tuple[str, ...],
       <knobs>) -> dict[str, Tensor]

``state["weights"]`` [K] are the weights the step just used (``base``, the recipe's
``rewards.NAME.weight``, at the first step); ``means`` [K] are the step batch's mean of each
unweighted component, in the order of ``names`` (the recipe's ``[rewards]``). The result is the state
of the next step, its ``weights`` included; a controller may keep more tensors in it. The trainer
keeps the state in every checkpoint, so a resumed run continues with the same weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.registry import Registry

__all__ = ["REWARD_WEIGHTS", "lagrange", "readiness"]

REWARD_WEIGHTS = Registry("reward-weight controller")


def _thresholds(names: tuple[str, ...], given: dict[str, float] | None, who: str) -> Tensor:
    """[K] the threshold of each named component, NaN for the others."""
    out = torch.full((len(names),), float("nan"))
    for name, value in (given or {}).items():
        if name not in names:
            raise ValueError(f"{who}: {name!r} is not a reward component ({', '.join(names)})")
        out[names.index(name)] = float(value)
    return out


@REWARD_WEIGHTS.register("lagrange", needs={"base", "names"}, bounds={"lr": "> 0"})
def lagrange(
    state: dict[str, Tensor],
    means: Tensor,
    *,
    base: Tensor,
    names: tuple[str, ...],
    at_most: dict[str, float] | None = None,
    at_least: dict[str, float] | None = None,
    lr: float = 0.1,
) -> dict[str, Tensor]:
    """Lagrange multipliers as dynamic reward weights ("Confronting Reward Model Overoptimization
    with Constrained RLHF", Moskovitz et al. 2023): each constrained component's mean is kept below
    (``at_most``) or above (``at_least``) its threshold by projected dual ascent.

    With m_k the batch mean of component k, theta_k its threshold and lambda_k >= 0 its multiplier::

        at_most k:   w_k = base_k - lambda_k,   lambda_k <- max(0, lambda_k + lr (m_k - theta_k))
        at_least k:  w_k = base_k + lambda_k,   lambda_k <- max(0, lambda_k + lr (theta_k - m_k))
        otherwise:   w_k = base_k

    A component past its threshold of usefulness (at_most) loses weight, down to negative weights,
    until its mean is back below the threshold; the multiplier then decays to 0 and the recipe's
    weight returns. ``base_k = 0`` makes the weight the multiplier itself (a pure constraint). The
    state is the weights (lambda_k = |w_k - base_k|). The paper's gradient-free search for the
    thresholds within one run is not built: they are knobs. No constraint: the weights stay ``base``.
    """
    w, m, base = state["weights"].float(), means.float(), base.float()  # [K]
    upper = _thresholds(names, at_most, "lagrange at_most")  # [K] NaN: no constraint
    lower = _thresholds(names, at_least, "lagrange at_least")  # [K]
    both = ~torch.isnan(upper) & ~torch.isnan(lower)
    if bool(both.any()):
        twice = [n for n, b in zip(names, both.tolist(), strict=True) if b]
        raise ValueError(f"lagrange: {', '.join(twice)} both at_most and at_least")
    lam_up = (base - w).clamp(min=0) + lr * (m - upper)  # [K] NaN where unconstrained
    lam_lo = (w - base).clamp(min=0) + lr * (lower - m)  # [K]
    new = torch.where(~torch.isnan(upper), base - lam_up.clamp(min=0), base)  # [K]
    new = torch.where(~torch.isnan(lower), base + lam_lo.clamp(min=0), new)  # [K]
    return {"weights": new}


@REWARD_WEIGHTS.register("readiness", needs={"base", "names"}, bounds={"window": ">= 1"})
def readiness(
    state: dict[str, Tensor],
    means: Tensor,
    *,
    base: Tensor,
    names: tuple[str, ...],
    stages: list[dict[str, float]] | None = None,
    track: str = "",
    threshold: float = 0.5,
    window: int = 5,
) -> dict[str, Tensor]:
    """Performance-aware curriculum of the reward weights, after MedLoc-R1 ("MedLoc-R1:
    Performance-Aware Curriculum Reward Scheduling for GRPO-Based Medical Visual Grounding"): the
    weights move from dense, easy components to strict ones when the policy is ready, not at fixed
    steps.

    Stage 0 is the recipe's weights (``base``); ``stages[j - 1]`` gives the weights that stage j
    changes (the others keep their weight of the stage before). A sliding window holds the last
    ``window`` batch means of component ``track`` seen in the current stage; the run moves to the next
    stage when all of these hold:

        the window is full                          (``window`` steps in this stage)
        mean(window) >= threshold                   (the policy meets the current criterion)
        mean(newer half) >= mean(older half)        (its performance is not falling)

    and the window restarts empty in the new stage. The abstract names a sliding-window tracker and
    a multi-condition rule without giving them; these three conditions are rlvr's. The state holds
    ``weights`` [K], ``window`` [W] (NaN where empty) and ``stage`` [1]. No stages: the recipe's weights.
    """
    if not stages:
        return {"weights": base.float().clone()}
    if track not in names:
        raise ValueError(f"readiness: track = {track!r} is not a reward component ({', '.join(names)})")
    for j, stage in enumerate(stages):
        for name, value in stage.items():
            if name not in names:
                raise ValueError(
                    f"readiness: stages[{j}] names {name!r}, not a reward component ({', '.join(names)})"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"readiness: stages[{j}].{name} = {value!r} is not a number")
    w = state["weights"].float()  # [K]
    win = state.get("window", torch.full((window,), float("nan")))  # [W] oldest first
    stage = int(state.get("stage", torch.zeros(1))[0])
    win = torch.cat([win[1:], means[names.index(track)].float().view(1)])  # [W] the newest last
    full = not bool(torch.isnan(win).any())
    if full and stage < len(stages):
        half = window // 2
        older, newer = win[: window - half], win[window - half :]  # [W - W//2], [W//2]
        rising = half == 0 or float(newer.mean()) >= float(older.mean())
        if float(win.mean()) >= threshold and rising:
            stage += 1
            w = w.clone()
            for name, value in stages[stage - 1].items():
                w[names.index(name)] = float(value)
            win = torch.full((window,), float("nan"))
    return {"weights": w, "window": win, "stage": torch.tensor([stage])}
