"""Reward shaping: the combined rewards of a step [B, G] -> shaped rewards [B, G], before the advantage.

Every function in :data:`SHAPING` has the form::

    fn(rewards: Tensor [B, G], *, <needed inputs>, <knobs>) -> Tensor [B, G]

and declares with ``needs`` which of the trainer's inputs it receives (see ``INPUTS["shaping"]``):

- ``lengths`` [B, G]: completion lengths in tokens (float);
- ``correct`` [B, G]: the verifier's outcome, 0 or 1;
- ``max_len``: the generation budget in tokens (int).

The trainer applies the recipe's shapers in order, each to the output of the previous one.

Two process-reward shapers work on step rewards [N, S] instead and are plain functions, not in the
registry: :func:`prm_clip` and :func:`prm_delta` (used by the ``prm`` reward in
``rlvr.rewards.models``). :func:`preference_as_reward` is the tensor form of PAR with an explicit
reference score per sample.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from rlvr.registry import Registry

__all__ = [
    "SHAPING",
    "budget_length",
    "cosine_length",
    "drpo",
    "grpo_lambda",
    "overlong",
    "par",
    "preference_as_reward",
    "prm_clip",
    "prm_delta",
    "ssl",
    "stcr",
]

SHAPING = Registry("reward shaping")


# ---------------------------------------------------------------- checks


def _check(rewards: Tensor, name: str, **others: Tensor) -> None:
    """rewards must be [B, G]; every other tensor the same shape."""
    if rewards.dim() != 2:
        raise ValueError(f"{name}: rewards must have shape [B, G], got {tuple(rewards.shape)}")
    for key, t in others.items():
        if tuple(t.shape) != tuple(rewards.shape):
            raise ValueError(
                f"{name}: {key} must have the shape of rewards {tuple(rewards.shape)}, "
                f"got {tuple(t.shape)}"
            )
    lengths = others.get("lengths")
    if lengths is not None and bool((lengths < 0).any()):
        raise ValueError(f"{name}: lengths must be >= 0, got min {float(lengths.min())}")
    correct = others.get("correct")
    if correct is not None and not bool(((correct == 0) | (correct == 1)).all()):
        raise ValueError(f"{name}: correct must hold only 0 and 1")


def _limit(name: str, max_len: int, l_max: int) -> int:
    """The length limit L_max: ``l_max`` when set (> 0), else the generation budget ``max_len``."""
    limit = l_max if l_max > 0 else max_len
    if limit < 1:
        raise ValueError(f"{name}: the length limit must be >= 1, got max_len={max_len}, l_max={l_max}")
    return int(limit)


# ---------------------------------------------------------------- DAPO overlong penalty


@SHAPING.register(
    "overlong", needs={"lengths", "max_len"}, bounds={"buffer": ">= 1", "l_max": ">= 0", "coef": ">= 0"}
)
def overlong(
    rewards: Tensor,
    *,
    lengths: Tensor,
    max_len: int,
    buffer: int | None = None,
    l_max: int = 0,
    coef: float = 1.0,
) -> Tensor:
    """DAPO's soft overlong punishment ("DAPO: An Open-Source LLM Reinforcement Learning System at
    Scale"), added to the reward.

    With L_max the length limit and L_buf the buffer::

        p(L) = 0                          if L <= L_max - L_buf
             = (L_max - L_buf - L) / L_buf if L_max - L_buf < L <= L_max
             = -1                         if L > L_max
        r' = r + coef * p(L)

    p falls linearly from 0 at L_max - L_buf to -1 at L_max. ``l_max = 0`` uses the generation budget
    ``max_len`` as L_max (DAPO: a budget of 20480 tokens, the last 4096 of them the buffer).
    ``buffer = None`` takes L_buf = L_max // 5, DAPO's proportion; it must not exceed L_max.
    """
    _check(rewards, "overlong", lengths=lengths)
    limit = _limit("overlong", max_len, l_max)
    buf = limit // 5 if buffer is None else int(buffer)
    if not 1 <= buf <= limit:
        raise ValueError(f"overlong: buffer must be in [1, L_max={limit}], got {buf}")
    length = lengths.float()
    soft = ((limit - buf) - length) / buf  # [B, G] linear part
    penalty = torch.where(length > limit, torch.full_like(length, -1.0), soft.clamp(max=0.0))  # [B, G]
    return rewards.float() + coef * penalty


# ---------------------------------------------------------------- cosine length reward


@SHAPING.register("cosine_length", needs={"lengths", "correct", "max_len"}, bounds={"l_max": ">= 0"})
def cosine_length(
    rewards: Tensor,
    *,
    lengths: Tensor,
    correct: Tensor,
    max_len: int,
    l_max: int = 0,
    correct_short: float = 2.0,
    correct_long: float = 1.0,
    wrong_short: float = -10.0,
    wrong_long: float = 0.0,
    exceed: float = -10.0,
    coef: float = 1.0,
    mode: Literal["swap", "replace"] = "swap",
) -> Tensor:
    """Cosine length-scaled correctness reward ("Demystifying Long Chain-of-Thought Reasoning in
    LLMs", Yeo et al. 2025).

    With L clipped to [0, L_max] and (eta_long, eta_short) = (correct_long, correct_short) for a
    correct answer, (wrong_long, wrong_short) for a wrong one::

        c(L) = eta_long + (eta_short - eta_long) * (1 + cos(pi * L / L_max)) / 2
        c(L) = exceed                        if L >= L_max   (cut by the length limit)

    so c(0) = eta_short and c(L_max) = eta_long: short correct answers earn more than long ones, long
    wrong answers are punished less than short ones. Defaults are the paper's (+2 -> +1 for correct,
    -10 -> 0 for wrong, -10 for exceeding the length). ``l_max = 0`` uses the generation budget.
    A completion that reaches L_max tokens counts as exceeding (the sampler cut it; one that ended
    with EOS at exactly L_max cannot be told apart here).

    The cosine reward replaces the correctness part of the incoming reward:

    - ``mode = "swap"``: r' = r + coef * (c(L) - correct). If the verifier's 0/1 component enters
      the combined reward with weight ``coef`` (default 1), this removes it and puts c(L) (scaled
      by the same weight) in its place, keeping every other component (format, ...).
    - ``mode = "replace"``: r' = c(L), the incoming reward ignored (the paper's setting).

    Neutral: correct_short = correct_long = 1, wrong_short = wrong_long = 0, and no completion at
    L_max, gives r' = r in swap mode.
    """
    _check(rewards, "cosine_length", lengths=lengths, correct=correct)
    limit = _limit("cosine_length", max_len, l_max)
    ok = correct.float()  # [B, G]
    length = lengths.float().clamp(max=limit)  # [B, G]
    short = ok * correct_short + (1 - ok) * wrong_short  # [B, G] value at L = 0
    long_ = ok * correct_long + (1 - ok) * wrong_long  # [B, G] value at L = L_max
    cos = long_ + (short - long_) * 0.5 * (1.0 + torch.cos(math.pi * length / limit))  # [B, G]
    cos = torch.where(lengths.float() >= limit, torch.full_like(cos, exceed), cos)
    if mode == "swap":
        return rewards.float() + coef * (cos - ok)
    if mode == "replace":
        return cos
    raise ValueError(f"cosine_length: mode must be 'swap' or 'replace', got {mode!r}")


# ---------------------------------------------------------------- GRPO-lambda


def _group_length_reward(lengths: Tensor, correct: Tensor) -> Tensor:
    """Kimi k1.5 length reward within each group [B, G]:
    lam_i = 0.5 - (L_i - min_g L) / (max_g L - min_g L); lam_i for correct, min(0, lam_i) for wrong,
    0 where all lengths of the group are equal."""
    length = lengths.float()
    lo = length.min(dim=1, keepdim=True).values  # [B, 1]
    span = length.max(dim=1, keepdim=True).values - lo  # [B, 1]
    lam = 0.5 - (length - lo) / span.clamp(min=1e-12)  # [B, G]
    lam = torch.where(span > 0, lam, torch.zeros_like(lam))
    return torch.where(correct.bool(), lam, lam.clamp(max=0.0))  # [B, G]


@SHAPING.register(
    "grpo_lambda",
    needs={"lengths", "correct"},
    bounds={"threshold": "[0, 1]", "top_fraction": "(0, 1]", "coef": ">= 0"},
)
def grpo_lambda(
    rewards: Tensor,
    *,
    lengths: Tensor,
    correct: Tensor,
    threshold: float = 0.5,
    top_fraction: float = 1.0,
    coef: float = 1.0,
) -> Tensor:
    """Correctness-gated length penalty (GRPO-lambda, "Stable Reinforcement Learning for Efficient
    Reasoning", Dai et al. 2025).

    The paper's abstract says only that groups with a high correctness ratio keep a length penalty
    and the others fall back to length-agnostic 0/1 rewards; it does not give the penalty. We use
    the Kimi k1.5 length reward normalised within the group (the form the paper builds on)::

        acc_b = mean_g(correct)                                   # correctness ratio of group b
        lam_i = 0.5 - (L_i - min_g L) / (max_g L - min_g L)        # 0 if all lengths are equal
        len_i = lam_i if correct_i else min(0, lam_i)
        r'_i  = r_i + coef * len_i   if group b is selected,   r_i otherwise

    A group is selected when acc_b >= ``threshold`` and it is among the ceil(top_fraction * B)
    groups of highest acc_b in the batch (the paper's batch-wise top-lambda selection; ties keep
    batch order). The defaults (threshold 0.5, every qualifying group) are ours.
    """
    _check(rewards, "grpo_lambda", lengths=lengths, correct=correct)
    b = rewards.shape[0]
    acc = correct.float().mean(dim=1)  # [B]
    chosen = acc >= threshold  # [B]
    if top_fraction < 1.0:
        k = math.ceil(top_fraction * b)
        order = torch.sort(acc, descending=True, stable=True).indices  # [B]
        top = torch.zeros(b, dtype=torch.bool, device=acc.device)  # [B]
        top[order[:k]] = True
        chosen = chosen & top
    bonus = _group_length_reward(lengths, correct)  # [B, G]
    return rewards.float() + coef * bonus * chosen.unsqueeze(1).float()


# ---------------------------------------------------------------- DRPO


@SHAPING.register("drpo", needs={"lengths", "correct"}, bounds={"coef": ">= 0"})
def drpo(rewards: Tensor, *, lengths: Tensor, correct: Tensor, coef: float = 0.5) -> Tensor:
    """Length reward of correct answers normalised among the correct ones only (after "DRPO:
    Efficient Reasoning via Decoupled Reward Policy Optimization").

    With C_b the correct answers of group b (at least two, of different lengths)::

        r'_i = r_i + coef * (mean_{C_b} L - L_i) / (max_{C_b} L - min_{C_b} L)    for i in C_b
        r'_i = r_i                                                              otherwise

    Wrong answers are untouched and never enter the statistics, so the length signal of correct
    answers does not depend on the wrong ones. The bonus sums to zero over C_b and lies in
    (-coef, coef): with 0/1 correctness rewards and coef < 1, every correct answer keeps a higher
    reward than every wrong one (a long correct answer is never pushed below a wrong one, DRPO's aim).
    This is DRPO's decoupling as reward shaping; its full objective (a closed-form positive
    distribution with importance weights) is not implemented here.
    """
    _check(rewards, "drpo", lengths=lengths, correct=correct)
    ok = correct.bool()  # [B, G]
    length = lengths.float()
    n_ok = ok.sum(dim=1, keepdim=True)  # [B, 1]
    mean_ok = (length * ok).sum(dim=1, keepdim=True) / n_ok.clamp(min=1)  # [B, 1]
    big = torch.finfo(length.dtype).max
    hi = torch.where(ok, length, torch.full_like(length, -big)).max(dim=1, keepdim=True).values
    lo = torch.where(ok, length, torch.full_like(length, big)).min(dim=1, keepdim=True).values
    span = hi - lo  # [B, 1]; meaningful where n_ok >= 2
    usable = (n_ok >= 2) & (span > 0)  # [B, 1]
    bonus = (mean_ok - length) / torch.where(usable, span, torch.ones_like(span))  # [B, G]
    bonus = torch.where(ok & usable, bonus, torch.zeros_like(bonus))
    return rewards.float() + coef * bonus


@SHAPING.register("stcr", needs={"lengths", "correct", "max_len"}, bounds={"coef": ">= 0"})
def stcr(
    rewards: Tensor, *, lengths: Tensor, correct: Tensor, max_len: int, coef: float = 0.5
) -> Tensor:
    """Suboptimal Trajectory Complexity Regularization, the negative-sample half of APO ("APO:
    Enhancing Reasoning Ability of MLLMs via Asymmetric Policy Optimization"): a wrong answer that
    is longer than the group's other wrong answers is penalised.

    With W_b the wrong answers of group b::

        r'_i = r_i - coef * max(0, L_i - mean_{W_b} L) / max_len    for i in W_b
        r'_i = r_i                                                  otherwise

    The penalty lies in [0, coef) and never touches a correct answer, so the length of a success
    is free (APO leaves positive samples to the KL side, ``objective:dads``). The abstract says
    only that overly long negative responses are penalised; the reference length (the mean of the
    group's wrong answers) and the scale (the budget) are rlvr's. coef = 0 leaves the rewards as
    they are.
    """
    _check(rewards, "stcr", lengths=lengths, correct=correct)
    if max_len <= 0:
        raise ValueError(f"stcr: max_len must be > 0, got {max_len}")
    if coef == 0:
        return rewards.float()
    wrong = ~correct.bool()  # [B, G]
    length = lengths.float()
    n_wrong = wrong.sum(dim=1, keepdim=True)  # [B, 1]
    mean_wrong = (length * wrong).sum(dim=1, keepdim=True) / n_wrong.clamp(min=1)  # [B, 1]
    excess = (length - mean_wrong).clamp(min=0) / max_len  # [B, G]
    return rewards.float() - coef * torch.where(wrong, excess, torch.zeros_like(excess))


# ---------------------------------------------------------------- SSL tiered rewards


@SHAPING.register("ssl", bounds={"tiers": ">= 1", "amplify": ">= 1"})
def ssl(
    rewards: Tensor,
    *,
    tiers: int = 4,
    amplify: float = 2.0,
    discrete: bool = False,
    low: float = 0.0,
    high: float = 1.0,
) -> Tensor:
    """Sweet Spot Learning's tiered, progressively amplified rewards ("SSL: Sweet Spot Learning for
    Differentiated Guidance in Agentic Optimization").

    The abstract gives no formula; this is the simplest rule faithful to it. The reward's range
    [low, high] is cut into K = ``tiers`` equal tiers; tier k (k = 0 .. K-1, upward) has weight
    w_k = amplify ** k, so each tier nearer the top (the sweet spot) is worth more than the one
    below it. With x = (r - low) / (high - low) in [0, 1], k = min(floor(x K), K - 1) and
    C_k = sum_{j<k} w_j::

        s(x) = (C_k + w_k (x K - k)) / C_K                      (continuous: piecewise linear)
        s(x) = C_{k'} / C_K,  k' = floor(x K) in {0 .. K}       (``discrete``: the tier's floor)
        r'   = low + (high - low) * s(x)

    s is non-decreasing, s(0) = 0 and s(1) = 1, so the order of the rewards is kept (the abstract's
    "preserves optimal solution ordering"; strictly in the continuous form), while a unit of
    progress in a higher tier earns amplify times more than in the tier below. ``tiers = 1`` or
    ``amplify = 1`` is the identity (continuous form); ``discrete`` also flattens each tier to its
    floor (only the top of the range, x = 1, reaches 1). A reward outside [low, high] (a format
    bonus above 1, say) continues the outer tier's line (continuous) or takes the end's value
    (discrete).
    """
    _check(rewards, "ssl")
    if not high > low:
        raise ValueError(f"ssl: high must be > low, got low={low}, high={high}")
    r = rewards.float()
    span = high - low
    x = (r - low) / span  # [B, G]
    tol = 1e-6
    k_tiers = int(tiers)
    if not discrete and (k_tiers == 1 or amplify == 1):
        return r  # the identity, exactly
    w = float(amplify) ** torch.arange(k_tiers, dtype=torch.float64)  # [K] tier weights
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), w.cumsum(0)])  # [K + 1] C_0 .. C_K
    xk = x.double() * k_tiers  # [B, G]
    if discrete:
        k = torch.floor(xk + tol).clamp(0, k_tiers).long()  # [B, G] tiers passed, 0 .. K
        s = cum[k] / cum[-1]  # [B, G]
    else:
        k = torch.floor(xk).clamp(0, k_tiers - 1).long()  # [B, G] tier index, 0 .. K-1
        s = (cum[k] + w[k] * (xk - k)) / cum[-1]  # [B, G]
    return (low + span * s).to(r.dtype)


# ---------------------------------------------------------------- budget-relative length reward


@SHAPING.register(
    "budget_length", needs={"lengths", "correct", "max_len"}, bounds={"coef": ">= 0", "l_max": ">= 0"}
)
def budget_length(
    rewards: Tensor,
    *,
    lengths: Tensor,
    correct: Tensor,
    max_len: int,
    coef: float = 0.5,
    l_max: int = 0,
) -> Tensor:
    """Budget-relative length-efficiency reward for correct answers, after "Train Long, Think Short:
    Curriculum Learning for Efficient Reasoning" (Hammoud et al. 2025).

    With B the token budget (``l_max`` when > 0, else the step's generation budget ``max_len``)::

        r'_i = r_i + coef * correct_i * (1 - min(L_i, B) / B)

    The bonus lies in [0, coef): the shorter a correct answer relative to the budget, the more it
    earns; a wrong answer earns none (brevity alone is not rewarded) and an answer that uses the whole
    budget earns none. With ``max_len`` following a ``[schedule]`` of ``rollout.max_new_tokens``, the
    budget tightens with the cap, the paper's curriculum. The abstract names the signals (correctness,
    length efficiency, format) but gives no formula; this linear form is the simplest faithful one.
    coef = 0 leaves the rewards as they are.
    """
    _check(rewards, "budget_length", lengths=lengths, correct=correct)
    budget = _limit("budget_length", max_len, l_max)
    used = lengths.float().clamp(max=budget) / budget  # [B, G] share of the budget used
    return rewards.float() + coef * correct.float() * (1.0 - used)


# ---------------------------------------------------------------- PAR


def preference_as_reward(rewards: Tensor, ref_rewards: Tensor) -> Tensor:
    """Preference As Reward (PAR, "Reward Shaping to Mitigate Reward Hacking in RLHF"):
    r' = sigmoid(r - r_ref), where r_ref is the reward-model score of a reference response to the
    same prompt. Bounded in (0, 1), 0.5 at the reference. ``ref_rewards`` broadcasts against
    ``rewards`` (e.g. [B, 1] against [B, G])."""
    return torch.sigmoid(rewards.float() - ref_rewards.float())


@SHAPING.register("par")
def par(rewards: Tensor, *, ref: float | Literal["group_mean"] = 0.0) -> Tensor:
    """PAR ("Reward Shaping to Mitigate Reward Hacking in RLHF") on the combined rewards:
    r' = sigmoid(r - r_ref).

    ``ref`` is a fixed reference score, or ``"group_mean"`` for the mean reward of the prompt's G
    samples (a centred, bounded reward without a reference answer). For a reference answer's
    reward-model score, use the ``par`` option of the ``reward_model`` reward instead.
    """
    _check(rewards, "par")
    r = rewards.float()
    if ref == "group_mean":
        return preference_as_reward(r, r.mean(dim=1, keepdim=True))  # [B, G]
    if isinstance(ref, str):
        raise ValueError(f"par: ref must be a number or 'group_mean', got {ref!r}")
    return preference_as_reward(r, torch.tensor(float(ref)))


# ---------------------------------------------------------------- process-reward shaping


def _check_steps(step_rewards: Tensor, step_mask: Tensor, name: str) -> Tensor:
    if step_rewards.dim() != 2 or tuple(step_mask.shape) != tuple(step_rewards.shape):
        raise ValueError(
            f"{name}: step_rewards and step_mask must both be [N, S], got "
            f"{tuple(step_rewards.shape)} and {tuple(step_mask.shape)}"
        )
    m = step_mask.float()
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(f"{name}: step_mask must hold only 0 and 1")
    if m.shape[1] > 1 and bool((m[:, 1:] > m[:, :-1]).any()):
        raise ValueError(f"{name}: step_mask must be a prefix (1...1 0...0) in every row")
    return m


def prm_clip(step_rewards: Tensor, step_mask: Tensor, *, eta: float = 0.5) -> Tensor:
    """Clip mechanism ("On Designing Effective RL Reward at Training Time for LLM Reasoning",
    Gao et al. 2024): r'_k = min(r_k - eta, 0) on valid steps, 0 on padding.

    Every shaped step reward is <= 0, so the sum over a trajectory is bounded above by 0 and
    repeating steps cannot raise it. ``eta`` is the threshold below which a step is penalised; the
    default 0.5 suits a PRM whose scores are probabilities (sigmoid-normalised) and is our choice.
    Shapes: [N, S] -> [N, S].
    """
    m = _check_steps(step_rewards, step_mask, "prm_clip")
    return (step_rewards.float() - eta).clamp(max=0.0) * m


def prm_delta(step_rewards: Tensor, step_mask: Tensor) -> Tensor:
    """Delta mechanism (Gao et al. 2024): r'_k = r_k - r_{k+1} for every valid step but the last,
    r'_K = r_K for the last valid step, 0 on padding.

    The return from any step k telescopes to sum_{j >= k} r'_j = r_k, so it stays bounded however
    many steps follow; in particular the sum over the whole trajectory equals the first step's
    reward. ``step_mask`` must be a prefix in each row. Shapes: [N, S] -> [N, S].
    """
    m = _check_steps(step_rewards, step_mask, "prm_delta")
    r = step_rewards.float() * m
    nxt = torch.zeros_like(r)  # [N, S] r_{k+1}, 0 past the end
    nxt[:, :-1] = r[:, 1:]
    has_next = torch.zeros_like(m)  # [N, S] 1 where step k+1 is valid
    has_next[:, :-1] = m[:, 1:]
    return torch.where(has_next.bool(), r - nxt, r) * m
