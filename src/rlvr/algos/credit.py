"""Token-level credit assignment: scores of a step -> per-token advantages [N, T].

B prompts, G samples each, N = B*G sequences in group-major order (row i*G + j is sample j of prompt
i), T completion tokens. Every assigner is a pure function registered in ``CREDIT``:

    assigner(rewards, mask, *, <needed inputs>, <knobs>) -> adv [N, T]

``rewards`` is the outcome score of each completion, [B, G] (``gae`` and ``reinforce_pp_token`` also
take [N], and ``gae`` per-token rewards [N, T]); ``mask`` [N, T] is 1 on the tokens that count, right
padded. A sequence spans positions 0 .. L-1, L = 1 + the last position where ``mask`` is 1; masked
positions inside that span (tool output) are part of the history but get no credit. Inputs taken from
the rollout are keyword arguments declared in ``needs``: ``values``, ``kl``, ``old_logp``,
``completion_ids``, ``process_rewards``, ``sum_pi_sq``, ``teacher_logp`` (all [N, T]). The output is 0
on masked positions and carries no gradient. ``gae`` returns the pair (advantages, returns).

The tree-based assigners (``tree_td``, ``gigpo``, ``rover``, ``spo_segment(estimator="tree")``) read
the prefix tree of each group's G completions (:func:`prefix_tree`): node = a prefix y_<=t shared by
the completions whose first t+1 tokens are equal; the group's root is the prompt. With G independent
samples that share no prefix the tree is G chains under the root and these assigners fall back to an
outcome advantage; their token-level signal appears where completions share a prefix and then split
(common opening tokens, or tree-structured sampling).

The turn-level assigners (``gigpo_turns``, ``turn_grpo``, ``gated_turns``, ``hiper``) are for
multi-turn episodes: one row is one episode whose tokens interleave model turns and environment
turns. They read ``turn`` [N, T] (k >= 1 on the tokens of the k-th model turn, 0 on environment tokens
and padding), ``turn_rewards`` [N, K] (the environment's reward after model turn k, column k-1) and
``turn_states`` [N, K] (the anchor-state id of the observation seen before model turn k), and credit
each model turn as one step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rlvr.algos.advantages import grpo
from rlvr.registry import Registry

__all__ = [
    "CREDIT",
    "PrefixTree",
    "aligndistil",
    "cutpoints",
    "gae",
    "gated_turns",
    "gigpo",
    "gigpo_turns",
    "hiper",
    "implicit_prm_dpo_loss",
    "implicit_prm_loss",
    "opd",
    "oprl",
    "oprl_turns",
    "optimal_token_baseline",
    "prefix_tree",
    "prime",
    "pure_min",
    "reinforce_pp_token",
    "rover",
    "rto",
    "scope",
    "segment_ids",
    "spo_segment",
    "srpo",
    "step_ids",
    "tree_td",
    "turn_grpo",
    "value_loss",
    "vps_progress",
]

CREDIT = Registry("credit assigner")


# ---------------------------------------------------------------- shared helpers


def _check_mask(mask: Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must have shape [N, T], got {tuple(mask.shape)}")


def _check_groups(rewards: Tensor, mask: Tensor) -> None:
    _check_mask(mask)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [B, G], got {tuple(rewards.shape)}")
    if rewards.numel() != mask.shape[0]:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} has {rewards.numel()} completions but mask has "
            f"{mask.shape[0]} rows"
        )


def _need(name: str, fn: str, x: Tensor | None, mask: Tensor) -> Tensor:
    if x is None:
        raise ValueError(f"{fn} needs {name!r} [N, T]")
    if x.shape != mask.shape:
        raise ValueError(
            f"{fn}: {name} must have the shape of mask {tuple(mask.shape)}, got {tuple(x.shape)}"
        )
    return x.detach()


def _lengths(mask: Tensor) -> Tensor:
    """[N] L = 1 + the last position where mask is 1 (0 for a row without counted tokens)."""
    pos = torch.arange(1, mask.shape[1] + 1, device=mask.device)  # [T]
    return (mask.bool() * pos).amax(dim=1) if mask.shape[1] else mask.new_zeros(mask.shape[0]).long()


def _token_rewards(rewards: Tensor, mask: Tensor) -> Tensor:
    """[N, T] float64 rewards per token: [N, T] as given (zeroed on masked positions), or an outcome per
    sequence ([B, G] or [N]) placed on its last counted token."""
    m = mask.bool()
    if rewards.shape == mask.shape:
        return rewards.detach().double() * m
    r = rewards.detach().double().reshape(-1)  # [N]
    if r.numel() != mask.shape[0]:
        raise ValueError(
            f"rewards must be [N, T] = {tuple(mask.shape)} or hold one score per sequence "
            f"(N = {mask.shape[0]}), got {tuple(rewards.shape)}"
        )
    lengths = _lengths(mask)  # [N]
    out = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)  # [N, T]
    has = lengths > 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has]
    out[rows, lengths[has] - 1] = r[has]
    return out


def _backward_gae(rew: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """[N, T] A_t = sum_k (gamma lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t over the counted
    tokens of each row (a masked position is skipped: it is not a time step), V = 0 after the last."""
    m = mask.bool()
    if gamma == 1.0 and lam == 1.0:  # telescoped: A_t = sum_{k >= t} r_k - V_t, one reverse cumsum
        future = (rew * m).flip(1).cumsum(1).flip(1)  # [N, T]
        return torch.where(m, future - values, 0.0)
    n, t_max = rew.shape
    adv = torch.zeros_like(rew)  # [N, T]
    next_v = rew.new_zeros(n)  # [N]
    last = rew.new_zeros(n)  # [N]
    for t in range(t_max - 1, -1, -1):
        a = rew[:, t] + gamma * next_v - values[:, t] + gamma * lam * last  # [N]
        mt = m[:, t]
        last = torch.where(mt, a, last)
        next_v = torch.where(mt, values[:, t], next_v)
        adv[:, t] = torch.where(mt, a, 0.0)
    return adv


def _whiten_tokens(x: Tensor, mask: Tensor, eps: float) -> Tensor:
    """(x - mean) / (std + eps) over the counted tokens of the batch (std unbiased); 0 elsewhere.
    Equal values everywhere (or fewer than two tokens) give zeros."""
    m = mask.bool()
    vals = x[m]  # [K]
    if vals.numel() < 2 or bool(vals.max() == vals.min()):
        return torch.zeros_like(x)
    return torch.where(m, (x - vals.mean()) / (vals.std() + eps), 0.0)


def _constant(r: Tensor) -> Tensor:
    """[B, 1] True where every reward of the group equals the first."""
    return (r == r[:, :1]).all(dim=1, keepdim=True)


def _outcome(rewards: Tensor, scale: str, eps: float) -> Tensor:
    """[B, G] the outcome advantage: grpo's (r - mean_g) / (std_g + eps), or r - mean_g for
    scale="none"; constant groups exactly 0 (also with eps = 0)."""
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    r = rewards.detach().float()
    return grpo(r, eps=eps, scale=scale).masked_fill(_constant(r), 0.0)


def _centred(rewards: Tensor) -> Tensor:
    """[N] float64 r - mean_g(r), exactly 0 in constant groups."""
    r = rewards.detach().double()
    c = (r - r.mean(dim=1, keepdim=True)).masked_fill(_constant(r), 0.0)  # [B, G]
    return c.reshape(-1)


def _row_scale(rewards: Tensor, scale: str, eps: float) -> Tensor:
    """[N, 1] float64 divisor per row: std_g + eps for scale="group", 1 for "none"."""
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    b, g = rewards.shape
    if scale == "none" or g < 2:
        return torch.ones(b * g, 1, dtype=torch.float64, device=rewards.device)
    std = rewards.detach().double().std(dim=1) + eps  # [B]
    return std.repeat_interleave(g).unsqueeze(1)  # [N, 1]


def _div(x: Tensor, d: Tensor) -> Tensor:
    """x / d with 0 where d is 0 (numerators there are 0: a constant group or a single sample)."""
    return torch.where(d > 0, x / torch.where(d > 0, d, 1.0), 0.0)


def _out(adv: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), adv, 0.0).float()  # [N, T]


# ---------------------------------------------------------------- GAE


@CREDIT.register(
    "gae",
    needs={"values"},
    bounds={"gamma": "[0, 1]", "lam": "[0, 1]", "eps": ">= 0"},
    group_free=True,  # the baseline is the critic's values: one sample per prompt is enough
)
def gae(
    rewards: Tensor,
    mask: Tensor,
    *,
    values: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = False,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation for a PPO critic (Schulman et al., "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation"; PPO).

    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = sum_{k >= 0} (gamma * lam)^k * delta_{t+k},
    returns_t = A_t + V_t (the value head's target)

    over the counted tokens of each sequence; the value after the last token is 0 (no bootstrap). A
    masked position inside a sequence is not a time step: it is skipped, and its reward and value are
    ignored. ``rewards`` is [N, T] per-token rewards, or one outcome per sequence ([B, G] or [N]) placed
    on its last counted token. gamma = lam = 1 gives A_t = sum_{k >= t} r_k - V_t. ``whiten``
    normalises the advantages over the batch's counted tokens (returns are not whitened).

    Returns (advantages [N, T], returns [N, T]), both 0 on masked positions.
    """
    _check_mask(mask)
    v = _need("values", "gae", values, mask).double()
    rew = _token_rewards(rewards, mask)  # [N, T]
    adv = _backward_gae(rew, v, mask, gamma, lam)  # [N, T]
    returns = torch.where(mask.bool(), adv + v, 0.0)  # [N, T]
    if whiten:
        adv = _whiten_tokens(adv, mask, eps)
    return _out(adv, mask), _out(returns, mask)


# ---------------------------------------------------------------- REINFORCE++


@CREDIT.register(
    "reinforce_pp_token", needs={"kl"}, bounds={"kl_coef": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"}
)
def reinforce_pp_token(
    rewards: Tensor,
    mask: Tensor,
    *,
    kl: Tensor | None = None,
    kl_coef: float = 0.01,
    gamma: float = 1.0,
    group_baseline: bool = False,
    eps: float = 1e-8,
) -> Tensor:
    """REINFORCE++ with the KL penalty inside the reward ("REINFORCE++: A Simple and Efficient Approach
    for Aligning Large Language Models").

    r_t = 1[t = L-1] * R - kl_coef * kl_t,    G_t = sum_{k >= t} gamma^(k-t) * r_k,
    A_t = (G_t - mean(G)) / (std(G) + eps)

    R is the sequence's outcome (``rewards`` [B, G] or [N]); with ``group_baseline`` it is
    R - mean_g(R) (REINFORCE++-baseline; needs [B, G]). ``kl`` [N, T] is the trainer's per-token KL
    estimate to the reference policy (e.g. k1 = old_logp - ref_logp); it may be None only when
    kl_coef = 0. mean and std (unbiased) run over every counted token of the batch (global whitening,
    no critic); masked positions are skipped in the sums.
    """
    _check_mask(mask)
    r = rewards.detach().double()
    if group_baseline:
        if r.dim() != 2:
            raise ValueError("reinforce_pp_token: group_baseline needs rewards of shape [B, G]")
        r = _centred(r)  # [N]
    r = r.reshape(-1)  # [N]
    if r.numel() != mask.shape[0]:
        raise ValueError(
            f"reinforce_pp_token: rewards must hold one outcome per sequence (N = {mask.shape[0]}), "
            f"got {tuple(rewards.shape)}"
        )
    rew = _token_rewards(r, mask)  # [N, T]
    if kl_coef != 0:
        rew = rew - kl_coef * _need("kl", "reinforce_pp_token", kl, mask).double() * mask.bool()
    ret = _backward_gae(rew, torch.zeros_like(rew), mask, gamma, 1.0)  # [N, T] discounted return
    return _out(_whiten_tokens(ret, mask, eps), mask)


# ---------------------------------------------------------------- PURE: min-form credit


@CREDIT.register("pure_min", needs={"process_rewards"}, bounds={"vr_coef": ">= 0"})
def pure_min(
    rewards: Tensor,
    mask: Tensor,
    *,
    process_rewards: Tensor | None = None,
    vr_coef: float = 0.0,
) -> Tensor:
    """Min-form credit assignment for process rewards (PURE, "Stop Summation: Min-Form Credit Assignment
    Is All Process Reward Model Needs for Reasoning").

    The value of a token is the minimum of the step rewards still ahead instead of their sum:

    G_{i,t} = min { p_{i,k} : k >= t, k a step end }     (0 if no step end is left)
    b_i     = mean_{j != i in the group} G_{j,0}          (leave-one-out, as PURE's RLOO baselines)
    A_{i,t} = G_{i,t} - b_i + vr_coef * (R_i - mean_{j != i} R_j)

    ``process_rewards`` [N, T] holds each step's PRM score on the step's last token and 0 elsewhere;
    step ends are the counted positions where it is nonzero (a step scored exactly 0 cannot be told
    from a non-step token and is ignored). G_{i,0} is the sequence's worst step. ``rewards`` [B, G]
    are the verifiable outcomes, mixed in with ``vr_coef`` (0 = PRM only). Needs G >= 2.

    Exact form, not PURE's released approximation: that code reweights the steps by
    softmax(-p / 0.1) over the sequence and sums the weighted rewards ahead, which matches the min
    up to the worst step and gives about 0 after it, where the exact form keeps the min of the
    remaining steps.
    """
    _check_groups(rewards, mask)
    b, g = rewards.shape
    if g < 2:
        raise ValueError("pure_min needs at least 2 samples per prompt (G >= 2)")
    p = _need("process_rewards", "pure_min", process_rewards, mask).double()
    step = (p != 0) & mask.bool()  # [N, T]
    ahead = torch.where(step, p, math.inf).flip(1).cummin(1).values.flip(1)  # [N, T]
    ahead = torch.where(torch.isinf(ahead), 0.0, ahead)  # no step end left
    v0 = ahead[:, 0].view(b, g) if ahead.shape[1] else p.new_zeros(b, g)  # [B, G] worst step
    loo = (v0.sum(1, keepdim=True) - v0) / (g - 1)  # [B, G]
    adv = ahead - loo.reshape(-1, 1)  # [N, T]
    if vr_coef != 0:
        r = rewards.detach().double()
        vr = r - (r.sum(1, keepdim=True) - r) / (g - 1)  # [B, G]
        adv = adv + vr_coef * vr.reshape(-1, 1)
    return _out(adv, mask)


@CREDIT.register("vps_progress", needs={"process_rewards"}, bounds={"coef": ">= 0", "eps": ">= 0"})
def vps_progress(
    rewards: Tensor,
    mask: Tensor,
    *,
    process_rewards: Tensor | None = None,
    coef: float = 1.0,
    eps: float = 1e-6,
    scale: Literal["group", "none"] = "group",
) -> Tensor:
    """GRPO's outcome advantage refined by each segment's progress ("GRPO-VPS: Enhancing Group Relative
    Policy Optimization with Verifiable Process Supervision for Effective Reasoning").

    ``process_rewards`` [N, T] holds each step's progress on its last token (0 elsewhere; with the
    ``likelihood_steps`` reward, the gain of the probe log p(correct answer | prefix) over the step),
    as for ``pure_min``. The abstract gives no formula; this is the simplest rule faithful to it::

        z_{i,k}  = (p_{i,k} - mean_g p) / (std_g p + eps)  over all step ends of the group's G samples
        A_{i,t}  = A_i^GRPO + coef * z_{i,k(t)},   k(t) = the step that token t belongs to (its first
                   step end at or after t); 0 progress where no step end is left

    ``A^GRPO`` is grpo's (r - mean_g) / (std_g + eps) (``scale = "none"``: no division), so coef = 0
    is GRPO exactly. A group with fewer than two step ends, or with equal ones, adds nothing. A step
    scored exactly 0 cannot be told from a non-step token and joins the next step.
    """
    _check_groups(rewards, mask)
    b, g = rewards.shape
    p = _need("process_rewards", "vps_progress", process_rewards, mask).double()
    n, t = mask.shape
    outcome = _outcome(rewards, scale, eps).double().reshape(-1, 1)  # [N, 1]
    if coef == 0 or t == 0:
        return _out(outcome.expand(n, t), mask)
    step = (p != 0) & mask.bool()  # [N, T]
    sp, sm = p.reshape(b, g * t), step.reshape(b, g * t).double()  # [B, G*T]
    cnt = sm.sum(1, keepdim=True)  # [B, 1]
    mean = (sp * sm).sum(1, keepdim=True) / cnt.clamp(min=1)  # [B, 1]
    var = (((sp - mean) * sm) ** 2).sum(1, keepdim=True) / (cnt - 1).clamp(min=1)  # [B, 1]
    z = ((sp - mean) / (var.sqrt() + eps)).masked_fill((cnt < 2) | (var == 0), 0.0)  # [B, G*T]
    z = torch.where(step, z.reshape(n, t), 0.0)  # [N, T] on step ends
    pos = torch.arange(t, device=mask.device).expand(n, t)  # [N, T]
    end = torch.where(step, pos, t).flip(1).cummin(1).values.flip(1)  # [N, T] next step end (t: none)
    ahead = torch.where(end < t, z.gather(1, end.clamp(max=t - 1)), 0.0)  # [N, T]
    return _out(outcome + coef * ahead, mask)


# ---------------------------------------------------------------- prefix tree of a group


@dataclass(frozen=True)
class PrefixTree:
    """The prefix tree of each group's completions (P2T).

    ``node[i, t]`` is the id of the prefix y_i[0..t] (rows of one group with equal first t+1 tokens
    share it), ``parent[i, t]`` the id of y_i[0..t-1], the state from which token t was chosen; for
    t = 0 that is the group's root, ids 0 .. B-1. Both are -1 at t >= L_i. ``num_nodes`` counts the
    roots too.
    """

    node: Tensor  # [N, T] long
    parent: Tensor  # [N, T] long
    lengths: Tensor  # [N] L_i
    num_nodes: int


def prefix_tree(completion_ids: Tensor, mask: Tensor, group_size: int) -> PrefixTree:
    """Build the prefix tree of every group (rows i*G .. i*G + G-1) from the sampled token ids.

    Vectorised: sort each group's rows lexicographically, take the common-prefix length of every row
    with the row before it; in column t a row opens a new node unless that length exceeds t.
    """
    _check_mask(mask)
    if completion_ids.shape != mask.shape:
        raise ValueError(
            f"completion_ids must have the shape of mask {tuple(mask.shape)}, "
            f"got {tuple(completion_ids.shape)}"
        )
    n, t_max = mask.shape
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} rows do not split into groups of {group_size}")
    dev = mask.device
    b = n // group_size
    lengths = _lengths(mask)  # [N]
    pos = torch.arange(t_max, device=dev)  # [T]
    alive = pos < lengths[:, None]  # [N, T]
    tok = completion_ids.detach().long().masked_fill(~alive, -1)  # [N, T]; -1 sorts before tokens
    if bool((tok[alive] < 0).any()):
        raise ValueError("completion_ids must be >= 0 on the tokens of a sequence")
    grp = torch.arange(n, device=dev) // group_size  # [N]
    _, rank = torch.unique(torch.cat([grp[:, None], tok], 1), dim=0, return_inverse=True)  # [N]
    order = torch.argsort(rank, stable=True)  # [N] group-major, lexicographic within a group
    s, sg, salive = tok[order], grp[order], alive[order]  # [N, T], [N], [N, T]
    first = torch.ones(n, dtype=torch.bool, device=dev)  # [N]
    first[1:] = sg[1:] != sg[:-1]
    lcp = torch.zeros(n, dtype=torch.long, device=dev)  # [N] common prefix with the row before
    if n > 1 and t_max:
        lcp[1:] = (s[1:] == s[:-1]).long().cumprod(1).sum(1)
    new = (first[:, None] | (lcp[:, None] <= pos)) & salive  # [N, T] row opens a node in column t
    per_col = new.sum(0)  # [T]
    offset = b + per_col.cumsum(0) - per_col  # [T] first id of each column
    node_s = torch.where(salive, new.cumsum(0) - 1 + offset, -1)  # [N, T]
    node = torch.empty_like(node_s)
    node[order] = node_s
    parent = torch.full_like(node, -1)  # [N, T]
    if t_max:
        parent[:, 0] = grp
        parent[:, 1:] = node[:, :-1]
        parent = parent.masked_fill(~alive, -1)
    return PrefixTree(node=node, parent=parent, lengths=lengths, num_nodes=b + int(per_col.sum()))


def _node_mean(tree: PrefixTree, vals: Tensor, group_size: int) -> Tensor:
    """[num_nodes] mean of the rows' ``vals`` [N] over the completions through each node (the root:
    all G of its group)."""
    alive = tree.node >= 0  # [N, T]
    idx = tree.node[alive]  # [K]
    src = vals[:, None].expand_as(tree.node)[alive]  # [K]
    tot = vals.new_zeros(tree.num_nodes).index_add_(0, idx, src)  # [M]
    cnt = vals.new_zeros(tree.num_nodes).index_add_(0, idx, torch.ones_like(src))  # [M]
    b = tree.node.shape[0] // group_size
    tot[:b] = vals.view(b, group_size).sum(1)
    cnt[:b] = group_size
    return tot / cnt.clamp(min=1)


def _tree(fn: str, completion_ids: Tensor | None, mask: Tensor, g: int) -> PrefixTree:
    return prefix_tree(_need("completion_ids", fn, completion_ids, mask), mask, g)


def _gather(table: Tensor, idx: Tensor) -> Tensor:
    """table[idx] with idx = -1 read as 0 (masked later)."""
    return table[idx.clamp(min=0)]


# ---------------------------------------------------------------- TEMPO: tree TD


@CREDIT.register("tree_td", needs={"completion_ids"}, bounds={"td_coef": ">= 0", "eps": ">= 0"})
def tree_td(
    rewards: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    td_coef: float = 1.0,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
    root_td: bool = False,
) -> Tensor:
    """Outcome advantage plus TD corrections along the group's prefix tree (TEMPO, "Exploiting Tree
    Structure for Credit Assignment in RL Training of LLMs").

    V(s)      = mean outcome of the group's completions through prefix s (P2T; V(root) = mean_g)
    delta_t   = V(y_<=t) - V(y_<t)
    A_{i,t}   = A_i + td_coef * delta_{i,t} / d

    A_i is the outcome advantage ``grpo`` with the same ``scale`` ("group": (R - mean_g)/(std_g + eps),
    d = std_g + eps, i.e. V of the normalised rewards as in TEMPO; "none": R - mean_g, d = 1). delta
    is 0 wherever the prefix does not branch (one continuation, no completion ending there): it is
    branch-gated by construction, so tokens after a sequence's last branch point get A_i alone.
    Along a sequence whose full text is unique the deltas telescope to R_i - V(s_0).

    The root (the prompt) is a branch point as soon as two first tokens differ; its delta
    V(y_0) - V(root) repeats the comparison from the prompt that A_i already makes, so it is left out
    unless ``root_td``. With that default, completions that share no prefix get exactly A_i.
    """
    _check_groups(rewards, mask)
    g = rewards.shape[1]
    tree = _tree("tree_td", completion_ids, mask, g)
    v = _node_mean(tree, _centred(rewards), g)  # [M]
    alive = tree.node >= 0  # [N, T]
    delta = torch.where(alive, _gather(v, tree.node) - _gather(v, tree.parent), 0.0)  # [N, T]
    if not root_td and delta.shape[1]:
        delta[:, 0] = 0.0
    delta = _div(delta, _row_scale(rewards, scale, eps))
    adv = _outcome(rewards, scale, eps).reshape(-1, 1).double() + td_coef * delta  # [N, T]
    return _out(adv, mask)


# ---------------------------------------------------------------- GiGPO


@CREDIT.register(
    "gigpo", needs={"completion_ids"}, bounds={"omega": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"}
)
def gigpo(
    rewards: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    omega: float = 1.0,
    gamma: float = 1.0,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Episode-level plus step-level group advantage (GiGPO, "Group-in-Group Policy Optimization for
    LLM Agent Training"), with tokens as steps.

    A^E_i     = (R_i - mean_g R) / F                      (episode level: the group of G completions)
    R_{i,t}   = gamma^(L_i - 1 - t) * R_i                 (return from step t; outcome at the end)
    A^S_{i,t} = (R_{i,t} - mean_{S(i,t)} R) / F_S          (step level: the anchor-state group)
    A_{i,t}   = A^E_i + omega * A^S_{i,t}

    The anchor state of token t of completion i is its prefix y_i[0..t-1] (same position, same
    history); S(i,t) = the completions of the group that reach that state and take an action there
    (this one included). ``scale`` "group": F = std_g + eps, F_S = std_S + eps (unbiased std, as
    GiGPO); "none": F = F_S = 1 (GiGPO's mean-only variant). Anchor groups with one member, or with
    equal returns, give A^S = 0.

    The prompt is the anchor state of token 0 and every completion reaches it, so for gamma = 1 its
    A^S equals A^E: completions that share no prefix get (1 + omega) * A^E on token 0 and A^E on the
    rest. omega = 0 gives the outcome advantage on every token (grpo, or dr_grpo for "none").
    """
    _check_groups(rewards, mask)
    g = rewards.shape[1]
    tree = _tree("gigpo", completion_ids, mask, g)
    alive = tree.node >= 0  # [N, T]
    n, t_max = mask.shape
    pos = torch.arange(t_max, device=mask.device)  # [T]
    steps_left = (tree.lengths[:, None] - 1 - pos).clamp(min=0).double()  # [N, T]
    ret = rewards.detach().double().reshape(-1, 1) * gamma**steps_left  # [N, T] R_{i,t}
    anchor = tree.parent[alive]  # [K]
    x = ret[alive]  # [K]
    m = tree.num_nodes
    cnt = x.new_zeros(m).index_add_(0, anchor, torch.ones_like(x))  # [M]
    mean = x.new_zeros(m).index_add_(0, anchor, x) / cnt.clamp(min=1)  # [M]
    hi = x.new_full((m,), -math.inf).scatter_reduce_(0, anchor, x, "amax")  # [M]
    lo = x.new_full((m,), math.inf).scatter_reduce_(0, anchor, x, "amin")  # [M]
    dev_ = torch.where(hi[anchor] == lo[anchor], 0.0, x - mean[anchor])  # [K]
    if scale == "group":
        ss = x.new_zeros(m).index_add_(0, anchor, dev_**2)  # [M]
        std = torch.where(cnt > 1, (ss / (cnt - 1).clamp(min=1)).sqrt() + eps, 0.0)  # [M]
        dev_ = _div(dev_, std[anchor])
    elif scale != "none":
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")
    step = torch.zeros(n, t_max, dtype=torch.float64, device=mask.device)  # [N, T]
    step[alive] = dev_
    adv = _outcome(rewards, scale, eps).reshape(-1, 1).double() + omega * step  # [N, T]
    return _out(adv, mask)


# ---------------------------------------------------------------- ROVER


def _uniform_q(tree: PrefixTree, vals: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
    """Q-values of the uniformly random policy on the sampled tree.

    Returns (q [M], q_tok [N, T], branch [M]): q[s] = V^U(s) = the uniform mean over the children of s
    (each distinct next token, plus "stop" when a completion ends at s, worth the mean outcome of those
    that end there); q_tok[i, t] = Q^U(s_t, a_t) = V^U(y_i[0..t]); branch[s] marks the prompts and the
    nodes with two or more children (elsewhere V^U(s) = the one child's value).
    """
    n, t_max = tree.node.shape
    b = n // g
    m = tree.num_nodes
    dev = vals.device
    alive = tree.node >= 0  # [N, T]
    rows = torch.arange(n, device=dev)
    grp = rows // g
    # end children: completion i stops at its last node (the root when it has no token)
    last = grp.clone()  # [N]
    has = tree.lengths > 0
    last[has] = tree.node[rows[has], tree.lengths[has] - 1]
    end_cnt = vals.new_zeros(m).index_add_(0, last, torch.ones_like(vals))  # [M]
    end_val = vals.new_zeros(m).index_add_(0, last, vals) / end_cnt.clamp(min=1)  # [M]
    # token children: every non-root node is the child of its parent
    par_of = torch.full((m,), -1, dtype=torch.long, device=dev)  # [M]
    par_of[tree.node[alive]] = tree.parent[alive]
    is_child = par_of >= 0  # [M]
    n_tok = vals.new_zeros(m).index_add_(0, par_of[is_child], vals.new_ones(int(is_child.sum())))  # [M]
    n_children = n_tok + (end_cnt > 0)  # [M]
    is_root = torch.zeros(m, dtype=torch.bool, device=dev)
    is_root[:b] = True
    branch = is_root | (n_children >= 2)  # [M]
    leaf = (n_tok == 0) & ~is_root  # [M] only "stop" below
    key = branch | leaf  # [M] nodes whose value is computed; the rest copy their one child
    q = torch.where(leaf, end_val, 0.0)  # [M]
    # next key node at or below each position of a row
    pos = torch.arange(t_max, device=dev)
    key_tok = alive & _gather(key, tree.node)  # [N, T]
    nxt = torch.where(key_tok, pos, t_max).flip(1).cummin(1).values.flip(1).clamp(max=max(t_max - 1, 0))
    nk = tree.node.gather(1, nxt) if t_max else tree.node  # [N, T]
    # edges from a key node to its distinct children, each child valued by its next key node
    edge = alive & _gather(key, tree.parent)  # [N, T]
    child_nk = torch.full((m,), -1, dtype=torch.long, device=dev)  # [M]
    child_nk[tree.node[edge]] = nk[edge]
    children = (child_nk >= 0).nonzero().squeeze(1)  # [E]
    e_par, e_nk = par_of[children], child_nk[children]  # [E]
    end_term = torch.where(end_cnt > 0, end_val, 0.0)  # [M]
    n_ch = n_children.clamp(min=1)
    levels = int(key_tok.sum(1).max()) + 1 if t_max else 1  # key nodes on the longest path + root
    for _ in range(levels):  # each pass settles one more level of branch nodes, bottom up
        tot = end_term.index_add(0, e_par, q[e_nk])  # [M]
        q = torch.where(branch, tot / n_ch, q)
    q_tok = torch.where(alive, _gather(q, nk), 0.0)  # [N, T]
    return q, q_tok, branch


@CREDIT.register("rover", needs={"completion_ids"})
def rover(
    rewards: Tensor,
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    baseline: Literal["root", "parent"] = "root",
) -> Tensor:
    """Q-values of the uniformly random policy, read off the group's prefix tree (ROVER, "Random Policy
    Valuation is Enough for LLM Reasoning with Verifiable Rewards").

    In the tree MDP of a prompt (deterministic transitions, reward R at the end) the uniform policy's
    values satisfy V^U(s) = mean over the actions a at s of Q^U(s, a), Q^U(s, a) = V^U(s + a), and
    Q^U = R at the end. Here the actions at s are the ones the group sampled there (each distinct
    next token once, whatever its count, plus "stop" when a completion ends at s); unsampled tokens
    are unknown and left out. Then

    baseline "root":   A_{i,t} = Q^U(s_t, a_t) - V^U(root)    (Q of the action, centred per prompt)
    baseline "parent": A_{i,t} = Q^U(s_t, a_t) - V^U(s_t)     (the uniform policy's own advantage)

    "root" mirrors ROVER's practical rule, which regresses each token's Q onto the group-centred
    outcome plus the next state's uniform value; here both come from the sampled tree, and
    completions that share no prefix get R_i - mean_g R on every token (dr_grpo). "parent" is nonzero
    only at branch points. With 0/1 rewards Q^U(s, a) > 0 exactly when a correct completion was
    sampled below (s, a), so acting greedily on Q^U follows a sampled correct completion whenever one
    exists, the property ROVER builds on. Not done here: the parametrisation Q = rho * (logp -
    old_logp) trained by regression (an objective, not an advantage), and with it the paper's
    sampling from the softmax over Q: under that parametrisation softmax(Q / rho) with prior pi_old is
    pi_theta itself, so the paper's sampling is ordinary sampling from the trained policy. Here the
    policy is trained by policy gradient on these advantages, not to be that softmax, and a softmax
    over this Q^U at a branch point would need rewards in the middle of a rollout (Q^U exists once
    the group is sampled and scored). The next state's value over the whole vocabulary is replaced
    by the sampled tree's.
    """
    _check_groups(rewards, mask)
    g = rewards.shape[1]
    tree = _tree("rover", completion_ids, mask, g)
    q, q_tok, branch = _uniform_q(tree, _centred(rewards), g)
    alive = tree.node >= 0
    if baseline == "root":
        rows = torch.arange(mask.shape[0], device=mask.device)
        adv = q_tok - q[rows // g][:, None]  # [N, T]
    elif baseline == "parent":
        adv = torch.where(alive & _gather(branch, tree.parent), q_tok - _gather(q, tree.parent), 0.0)
    else:
        raise ValueError(f"baseline must be 'root' or 'parent', got {baseline!r}")
    return _out(torch.where(alive, adv, 0.0), mask)


# ---------------------------------------------------------------- SPO


def cutpoints(old_logp: Tensor, mask: Tensor, *, threshold: float = 0.9) -> Tensor:
    """[N, T] bool: SPO's cutpoints, the counted tokens sampled with probability exp(old_logp) <
    ``threshold`` (the segment cuts of :func:`segment_ids`, and the branch points of
    ``rlvr.rollout.branch_points.low_prob``)."""
    return (old_logp.detach().exp() < threshold) & mask.bool()  # [N, T]


def segment_ids(
    old_logp: Tensor, mask: Tensor, *, threshold: float = 0.9, max_segments: int = 8
) -> Tensor:
    """[N, T] long: the segment of each token, SPO's cutpoint-based partition.

    A cutpoint is a counted token sampled with probability exp(old_logp) < ``threshold``. A sequence
    with K cutpoints is cut into ceil(K / c) <= ``max_segments`` segments of c = ceil(K /
    max_segments) cutpoints each; a segment starts right before its first cutpoint (the state where
    the low-probability choice was made), and tokens before the first cutpoint belong to segment 0.
    -1 on positions past the sequence's end.
    """
    _check_mask(mask)
    if max_segments < 1:
        raise ValueError("max_segments must be >= 1")
    cut = cutpoints(old_logp, mask, threshold=threshold)  # [N, T]
    k = cut.sum(1)  # [N]
    per = ((k + max_segments - 1) // max_segments).clamp(min=1)  # [N] cutpoints per segment
    seen = cut.long().cumsum(1)  # [N, T] cutpoints up to and including t
    seg = (seen - 1).clamp(min=0) // per[:, None]  # [N, T]
    alive = torch.arange(mask.shape[1], device=mask.device) < _lengths(mask)[:, None]
    return torch.where(alive, seg, -1)


@CREDIT.register(
    "spo_segment",
    needs={"old_logp", "completion_ids"},
    bounds={"threshold": "(0, 1]", "max_segments": ">= 1", "eps": ">= 0"},
)
def spo_segment(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    completion_ids: Tensor | None = None,
    threshold: float = 0.9,
    max_segments: int = 8,
    estimator: Literal["outcome", "tree"] = "outcome",
    prob_mask: bool = True,
    scale: Literal["group", "none"] = "none",
    eps: float = 1e-6,
) -> Tensor:
    """Segment-level Monte-Carlo advantages (SPO, "Segment Policy Optimization: Effective Segment-Level
    Credit Assignment in RL for Large Language Models").

    Segments come from :func:`segment_ids` (cut at low-probability tokens, at most ``max_segments``).
    The advantage of segment k, from state s_k to s_{k+1}, is A_k = V(s_{k+1}) - V(s_k), with

    estimator "outcome": V(s_{k+1}) ~ R_i (the completion's own outcome) and V(s_k) ~ V(s_0) =
                         mean_g R for every k, so A_k = R_i - mean_g R on every segment;
    estimator "tree":    V(s) = mean outcome of the group's completions through prefix s (as in
                         SPO-tree, which reads V off a tree of samples); V(s_0) = mean_g R.

    ``prob_mask`` (SPO's probability mask) gives the segment's advantage to its cutpoint tokens
    only; the other tokens get 0. ``scale`` "group" divides by std_g + eps. With prob_mask off, the
    "outcome" estimator is the outcome advantage on every token whatever the partition, and one
    segment gives it for "tree" too (when the completion's text is unique in its group).

    Not done, because it needs extra rollouts: SPO-chain estimates each V(s_k) by sampling M new
    completions from the prefix s_k, and SPO-tree samples a tree of completions on purpose. Here
    V(s_k) comes only from the G completions already sampled: with i.i.d. samples that share no
    prefix, "tree" credits the first segment with R_i - mean_g R and the later ones with 0.
    """
    _check_groups(rewards, mask)
    g = rewards.shape[1]
    lp = _need("old_logp", "spo_segment", old_logp, mask)
    seg = segment_ids(lp, mask, threshold=threshold, max_segments=max_segments)  # [N, T]
    alive = seg >= 0  # [N, T]
    if estimator == "outcome":
        adv = _outcome(rewards, scale, eps).reshape(-1, 1).double().expand(mask.shape)  # [N, T]
    elif estimator == "tree":
        tree = _tree("spo_segment", completion_ids, mask, g)
        v = _node_mean(tree, _centred(rewards), g)  # [M]
        t_max = mask.shape[1]
        pos = torch.arange(t_max, device=mask.device)
        prev = torch.cat([seg.new_full((seg.shape[0], 1), -2), seg[:, :-1]], 1)  # [N, T]
        nxt = torch.cat([seg[:, 1:], seg.new_full((seg.shape[0], 1), -2)], 1)  # [N, T]
        is_start = alive & (seg != prev)
        is_end = alive & (seg != nxt)
        start = torch.where(is_start, pos, 0).cummax(1).values  # [N, T] first token of the segment
        end = torch.where(is_end, pos, t_max).flip(1).cummin(1).values.flip(1).clamp(max=t_max - 1)
        v_start = _gather(v, tree.parent.gather(1, start))  # [N, T] V(s_k)
        v_end = _gather(v, tree.node.gather(1, end))  # [N, T] V(s_{k+1})
        adv = _div(torch.where(alive, v_end - v_start, 0.0), _row_scale(rewards, scale, eps))
    else:
        raise ValueError(f"estimator must be 'outcome' or 'tree', got {estimator!r}")
    if prob_mask:
        adv = torch.where(lp.exp() < threshold, adv, 0.0)
    return _out(torch.where(alive, adv, 0.0), mask)


# ---------------------------------------------------------------- OTB: optimal token baseline


@CREDIT.register("optimal_token_baseline", needs={"old_logp", "sum_pi_sq"}, bounds={"eps": ">= 0"})
def optimal_token_baseline(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    sum_pi_sq: Tensor | None = None,
    handle_zero_tail: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """The optimal token baseline (OTB, arXiv 2602.07078; verl's ``optimal_token_baseline``
    estimator): a baseline per position, the group's returns weighted by each path's accumulated
    score-function variance.

    G_{i,t} = sum_{k >= t} r_{i,k}        (reward-to-go: R_i on every counted token for an outcome)
    w_{i,t} = 1 - 2 pi_{i,t} + S_{i,t} = ||e_y - pi(.|s_t)||^2,  pi_{i,t} = exp(old_logp_{i,t}),
              S_{i,t} = sum_v pi(v|s_t)^2 (``sum_pi_sq``)
    W_{i,t} = sum_{k <= t} m_{i,k} w_{i,k}               (cumulative path-variance proxy)
    B_t     = sum_i G_{i,t} W_{i,t} m_{i,t} / (sum_i W_{i,t} m_{i,t} + eps)   over the group's rows
    A_{i,t} = (G_{i,t} - B_t) m_{i,t}

    B_t is per position index t of the right-padded rows (as verl computes it), and a row's
    history enters only through its W. ``rewards`` is the outcome [B, G], placed on each row's last
    counted token. ``old_logp`` and ``sum_pi_sq`` [N, T] must come from the same policy (the trainer
    computes ``sum_pi_sq`` with one no-grad forward of the policy before the update, at the sampling
    temperature). w is clamped at 0: it is a squared norm, and only inputs from slightly different
    forwards (the sampler's log-probs, the learner's S) can make it negative.

    ``handle_zero_tail`` (verl's default): where a group's longest row is unique and strictly longer
    than the second longest (lengths L = 1 + the last counted position), that row is alone in
    the positions from the second-longest length on, where B_t would equal its own G_t; its
    baseline there is set to 0 instead (A = G). A group of one row gets baseline 0 (A = G). Not
    done: verl's optional scaling of w by the squared rollout importance weights (rho^2), which
    rlvr's stale-rollout corrections do not pass to credit assigners.
    """
    _check_groups(rewards, mask)
    b, g = rewards.shape
    n, t_max = mask.shape
    m = mask.bool()
    lp = _need("old_logp", "optimal_token_baseline", old_logp, mask).double()
    s2 = _need("sum_pi_sq", "optimal_token_baseline", sum_pi_sq, mask).double()
    ret = _token_rewards(rewards, mask).flip(1).cumsum(1).flip(1)  # [N, T] G_t
    w = torch.where(m, (1 - 2 * lp.exp() + s2).clamp(min=0), 0.0)  # [N, T] w_t m_t
    cw = torch.where(m, w.cumsum(1), 0.0).view(b, g, t_max)  # [B, G, T] W_t m_t
    num = (ret.view(b, g, t_max) * cw).sum(1)  # [B, T]
    den = cw.sum(1) + eps  # [B, T]
    base = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)  # [B, T] B_t
    base = base[:, None, :].expand(b, g, t_max)  # [B, G, T]
    if g == 1:
        base = torch.zeros_like(base)
    elif handle_zero_tail:
        lengths = _lengths(mask).view(b, g)  # [B, G]
        top = lengths.topk(2, dim=1).values  # [B, 2] longest, second longest
        longest = lengths == top[:, :1]  # [B, G]
        alone = longest & (longest.sum(1, keepdim=True) == 1)  # [B, G] the unique longest row
        pos = torch.arange(t_max, device=mask.device)  # [T]
        tail = alone[:, :, None] & (pos >= top[:, 1:, None])  # [B, G, T]
        base = base.masked_fill(tail, 0.0)
    return _out(ret - base.reshape(n, t_max), mask)


# ---------------------------------------------------------------- on-policy distillation


def _outcome_term(rewards: Tensor, mask: Tensor, coef: float, scale: str, eps: float) -> Tensor:
    """[N, T] float64: coef * grpo's advantage of ``rewards`` [B, G] on every token of its row (zeros
    when coef = 0; the mask is applied by the caller's ``_out``): the outcome term of the credit
    assigners that add a dense token reward to it (opd, rto, aligndistil, prime, scope)."""
    adv = torch.zeros(mask.shape, dtype=torch.float64, device=mask.device)  # [N, T]
    if coef:
        outcome = grpo(rewards.detach().float(), eps=eps, scale=scale).reshape(-1)  # [N]
        adv = adv + coef * outcome.double()[:, None]
    return adv


def _to_go(d: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """[N, T] D_t = sum_{k >= t} gamma^(k-t) d_k over the counted tokens of each row (d itself, zero
    on padding, at gamma = 0)."""
    d = torch.where(mask.bool(), d, 0.0)  # [N, T]
    return _backward_gae(d, torch.zeros_like(d), mask, gamma, 1.0) if gamma else d


@CREDIT.register(
    "opd",
    needs={"old_logp", "teacher_logp"},
    bounds={"teacher_coef": ">= 0", "outcome_coef": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"},
)
def opd(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    teacher_logp: Tensor | None = None,
    teacher_coef: float = 1.0,
    outcome_coef: float = 0.0,
    gamma: float = 0.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """On-policy distillation: the teacher's per-token reverse KL on the student's own samples as a
    dense advantage, optionally added to the group-normalised outcome advantage (Agarwal et al., "On-
    Policy Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD); the
    Thinking Machines "On-Policy Distillation" note and Qwen3's on-policy distillation stage).

    d_{i,t} = log pi_T(y_t | s_t) - log pi_old(y_t | s_t)      (minus the per-token reverse KL sample)
    D_{i,t} = sum_{k >= t} gamma^(k-t) d_{i,k}                   (over counted tokens; D = d at gamma 0)
    A_{i,t} = (outcome_coef * A^grpo_i + teacher_coef * D_{i,t}) m_{i,t}

    A^grpo is :func:`rlvr.algos.advantages.grpo` of the outcome ``rewards`` [B, G] (knobs ``scale``
    and ``eps``), the same on every counted token of row i. ``teacher_logp`` [N, T] is the frozen
    teacher's log-prob of each sampled token and ``old_logp`` [N, T] the behaviour policy's, both at
    the sampling temperature. With the per-token objective's gradient sum_t A_t grad log pi(y_t), the
    teacher term descends the reverse KL(pi || pi_T) token by token: gamma = 0 (the default) is the
    Thinking Machines recipe (discount 0: each token is credited with its own KL), gamma = 1 the
    reward-to-go of the sequence-level reverse KL. teacher_coef = 0 and outcome_coef = 1 is exactly
    grpo's advantage broadcast over the counted tokens. A term whose coefficient is 0 is not computed
    (its inputs may then be None).
    """
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if teacher_coef:
        t = _need("teacher_logp", "opd", teacher_logp, mask).double()
        o = _need("old_logp", "opd", old_logp, mask).double()
        d = _to_go(t - o, mask, gamma)  # [N, T] D_t of log pi_T - log pi_old on counted tokens
        adv = adv + teacher_coef * d
    return _out(adv, mask)


@CREDIT.register(
    "srpo",
    needs={"old_logp", "self_teacher_logp", "self_teacher_entropy", "self_teacher_mask"},
    bounds={"distill_coef": ">= 0", "route": "[0, 1]", "entropy_scale": ">= 0", "eps": ">= 0"},
)
def srpo(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    self_teacher_logp: Tensor | None = None,
    self_teacher_entropy: Tensor | None = None,
    self_teacher_mask: Tensor | None = None,
    distill_coef: float = 1.0,
    route: float = 1.0,
    entropy_scale: float = 1.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Sample-Routed Policy Optimization ("Unifying Group-Relative and Self-Distillation Policy
    Optimization via Sample Routing"): correct samples keep GRPO's outcome advantage, failed samples
    are routed to self-distillation (SDPO), the policy itself conditioned on a correct solution as
    the teacher, with an entropy-aware weight that suppresses unreliable (high-entropy) teacher
    positions.

    h_i     = self_teacher_mask_i  (1: a failed row whose prompt got a correct solution as a hint)
    d_{i,t} = log pi_self(y_t | x + hint_i, y_<t) - log pi_old(y_t | x, y_<t)
    u_{i,t} = exp(-entropy_scale * H_self_{i,t})        (H_self: the self-teacher's entropy at t)
    w_{i,t} = u_{i,t} / mean of u over the routed counted tokens of the batch (h_i m_{i,t} = 1)
    A_{i,t} = ((1 - route * h_i) * A^grpo_i + distill_coef * h_i * w_{i,t} * d_{i,t}) m_{i,t}

    The self-teacher's inputs come from the trainer (``[self_teacher]``: the policy before the update,
    run on the row's completion after its prompt with the hint appended). The abstract gives no
    formula: the token signal is the sampled-token estimate of the reverse KL to the self-teacher
    (as ``opd``, not SDPO's full logit-level divergence), and the weight is rlvr's simplest rule
    faithful to it (exp(-entropy_scale H), normalised to mean 1 over the batch's routed tokens: the
    distillation keeps its overall scale, and its confident positions and rows count more than its
    uncertain ones). route = 1 is SRPO's routing (a routed row carries no GRPO advantage);
    entropy_scale = 0 gives uniform weights (SDPO's signal on failed rows); distill_coef = 0 and
    route = 0 is exactly grpo's advantage broadcast over the counted tokens (the self-teacher's
    inputs are then not read). Rows with h_i = 0 (correct rows, failed rows without a solution to
    condition on) keep grpo's advantage.
    """
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, 1.0, scale, eps)  # [N, T] grpo on every token
    if not (distill_coef or route):
        return _out(adv, mask)
    h = self_teacher_mask
    if h is None or h.shape != mask.shape[:1]:
        raise ValueError(
            f"srpo needs 'self_teacher_mask' [N] with N = {mask.shape[0]} rows, got "
            f"{None if h is None else tuple(h.shape)}"
        )
    h = h.detach().double().to(mask.device)[:, None]  # [N, 1]
    adv = adv * (1.0 - route * h)
    if distill_coef:
        t = _need("self_teacher_logp", "srpo", self_teacher_logp, mask).double()
        o = _need("old_logp", "srpo", old_logp, mask).double()
        ent = _need("self_teacher_entropy", "srpo", self_teacher_entropy, mask).double()
        routed = mask.bool() & h.bool()  # [N, T] the distilled tokens
        u = torch.exp(-entropy_scale * ent).masked_fill(~routed, 0.0)  # [N, T]
        w = u / (u.sum() / routed.sum()).clamp(min=1e-12) if routed.any() else u  # [N, T] mean 1
        adv = adv + distill_coef * w * torch.where(routed, t - o, 0.0)
    return _out(adv, mask)


def _mean_logp(x: Tensor, mask: Tensor) -> Tensor:
    """[N] float64 mean of ``x`` [N, T] over the counted tokens of each row (0 for a row without
    any): -log of the row's perplexity when ``x`` holds log-probs."""
    m = mask.bool()
    return torch.where(m, x.double(), 0.0).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def _path_weights(score: Tensor, member: Tensor, tau: float) -> Tensor:
    """[B, G] float64 w_i = n_b * softmax_{j in P_b}(score_j / tau)_i over the members P_b of each
    group's path (n_b = |P_b| of them, so the weights average 1 over them); 0 off the path."""
    z = torch.where(member, score / tau, -math.inf)  # [B, G]
    top = z.amax(dim=1, keepdim=True)  # [B, 1]
    top = torch.where(torch.isfinite(top), top, 0.0)  # a group with an empty path
    e = torch.where(member, torch.exp(z - top), 0.0)  # [B, G]
    n = member.sum(dim=1, keepdim=True).double()  # [B, 1]
    return _div(n * e, e.sum(dim=1, keepdim=True))


@CREDIT.register(
    "scope",
    needs={"old_logp", "teacher_logp"},
    bounds={
        "teacher_coef": ">= 0",
        "mle_coef": ">= 0",
        "outcome_coef": ">= 0",
        "tau": "> 0",
        "eps": ">= 0",
    },
)
def scope(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    teacher_logp: Tensor | None = None,
    teacher_coef: float = 1.0,
    mle_coef: float = 1.0,
    outcome_coef: float = 0.0,
    tau: float = 1.0,
    correct_at: float = 1.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """SCOPE ("SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with Dual-Path Adaptive
    Weighting", arXiv 2604.10688): on-policy distillation routed by correctness. Wrong samples get
    the teacher's per-token signal (as ``opd``), weighted by how confident the teacher is on the
    sequence; correct samples get a maximum-likelihood push, weighted by how unsure the student is
    on it; each path's weights are normalised within the group.

    c_i     = [r_i >= correct_at]                          (the correct path; the others: teacher)
    d_{i,t} = log pi_T(y_t | s_t) - log pi_old(y_t | s_t)  (opd's per-token signal)
    l^T_i   = -mean_t log pi_T(y_t)     = log PPL_T,i      (mean over the row's counted tokens)
    l^S_i   = -mean_t log pi_old(y_t)   = log PPL_S,i
    w^T_i   = n^T_b softmax_{j wrong in group b}(-l^T_j / tau)_i    (low teacher PPL: more weight)
    w^S_i   = n^S_b softmax_{j correct in group b}(+l^S_j / tau)_i  (high student PPL: more weight)
    A_{i,t} = (outcome_coef A^grpo_i + teacher_coef (1 - c_i) w^T_i d_{i,t}
               + mle_coef c_i w^S_i) m_{i,t}

    n^T_b, n^S_b are the numbers of wrong and correct rows of group b (rows with a counted token),
    so each path's weights average 1 over its rows of the group: the normalisation moves weight
    between the samples of one prompt and never between prompts of different difficulty. The
    constant advantage mle_coef w^S_i on every counted token of a correct row makes the per-token
    objective's gradient w^S_i grad log pi(y) of that sequence: its weighted MLE. A^grpo is
    :func:`rlvr.algos.advantages.grpo` of ``rewards`` [B, G] (knobs ``scale``, ``eps``); SCOPE's
    two paths replace it, so outcome_coef defaults to 0. ``correct_at`` follows ``advantage:raft``'s
    ``accept_reward`` (1.0: the answer reward of a correct completion). The abstract gives no weight
    functions: the softmax of the sequence log-perplexity at temperature ``tau`` (scaled to mean 1
    per group and path) is rlvr's form, and so is reading "the teacher's corrective capability" as a
    low teacher perplexity on the student's wrong sequence. tau -> infinity gives uniform weights
    (``opd`` on the wrong rows, a constant mle_coef on the correct rows); teacher_coef = mle_coef = 0
    with outcome_coef = 1 is exactly grpo's advantage broadcast over the counted tokens. A path
    whose coefficient is 0 is not computed (its inputs may then be None).
    """
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if not (teacher_coef or mle_coef):
        return _out(adv, mask)
    b, g = rewards.shape
    o = _need("old_logp", "scope", old_logp, mask).double()
    correct = (rewards.detach().double() >= correct_at).reshape(-1)  # [N]
    counted = mask.bool().any(dim=1)  # [N]
    if teacher_coef:
        t = _need("teacher_logp", "scope", teacher_logp, mask).double()
        wrong = (~correct & counted).view(b, g)  # [B, G] the teacher path
        w_t = _path_weights(_mean_logp(t, mask).view(b, g), wrong, tau).reshape(-1)  # [N]
        adv = adv + teacher_coef * w_t[:, None] * torch.where(mask.bool(), t - o, 0.0)
    if mle_coef:
        right = (correct & counted).view(b, g)  # [B, G] the MLE path
        w_s = _path_weights(-_mean_logp(o, mask).view(b, g), right, tau).reshape(-1)  # [N]
        adv = adv + mle_coef * w_s[:, None]
    return _out(adv, mask)


@CREDIT.register(
    "rto",
    needs={"teacher_logp", "ref_logp"},
    bounds={"rto_beta": ">= 0", "outcome_coef": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"},
)
def rto(
    rewards: Tensor,
    mask: Tensor,
    *,
    teacher_logp: Tensor | None = None,
    ref_logp: Tensor | None = None,
    rto_beta: float = 0.1,
    outcome_coef: float = 1.0,
    gamma: float = 1.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Reinforced Token Optimization's token-wise reward ("DPO Meets PPO: Reinforced Token Optimization
    for RLHF"): a DPO-trained model's log-ratio against the reference, token by token, as a dense
    reward beside the outcome.

    r_{i,t} = rto_beta * (log pi_dpo(y_t | s_t) - log pi_ref(y_t | s_t))    (DPO's implicit token reward)
    R_{i,t} = sum_{k >= t} gamma^(k-t) r_{i,k}                               (over counted tokens)
    A_{i,t} = (outcome_coef * A^grpo_i + R_{i,t}) m_{i,t}

    The DPO model is the run's ``[teacher]`` (``teacher_logp``; e.g. a checkpoint of an
    ``online_dpo`` run), the reference the run's reference (``ref_logp``; the one the DPO model was
    trained against), both at the sampling temperature. The paper feeds r_t (plus its sentence
    reward and PPO's KL term) to PPO with a critic; here the reward-to-go of the token rewards is the
    dense advantage (gamma = 1: a Monte-Carlo return, no critic) and the outcome enters through
    grpo's group-normalised advantage (:func:`rlvr.algos.advantages.grpo`, knobs ``scale`` and
    ``eps``), as in ``opd``. rto_beta = 0 is grpo's advantage on every counted token (then neither
    log-prob is read).
    """
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if rto_beta:
        t = _need("teacher_logp", "rto", teacher_logp, mask).double()
        r = _need("ref_logp", "rto", ref_logp, mask).double()
        d = _to_go(t - r, mask, gamma)  # [N, T] reward-to-go of log pi_dpo - log pi_ref
        adv = adv + rto_beta * d
    return _out(adv, mask)


@CREDIT.register(
    "aligndistil",
    needs={"old_logp", "teacher_logp", "ref_logp"},
    bounds={
        "distil_weight": ">= 0",
        "shift_cap": ">= 0",
        "teacher_coef": ">= 0",
        "outcome_coef": ">= 0",
        "gamma": "[0, 1]",
        "eps": ">= 0",
    },
)
def aligndistil(
    rewards: Tensor,
    mask: Tensor,
    *,
    old_logp: Tensor | None = None,
    teacher_logp: Tensor | None = None,
    ref_logp: Tensor | None = None,
    distil_weight: float = 1.0,
    shift_cap: float = 0.0,
    teacher_coef: float = 1.0,
    outcome_coef: float = 0.0,
    gamma: float = 0.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """AlignDistil's token-level distillation to a teacher combined from a DPO model and the reference
    ("AlignDistil: Token-Level Language Model Alignment as Adaptive Policy Distillation"): the RLHF
    objective with DPO's reward is a distillation to pi* with logits z_ref + w (z_dpo - z_ref).

    D_{i,t}   = log pi_dpo(y_t | s_t) - log pi_ref(y_t | s_t)
    w_{i,t}   = w                                  (shift_cap = 0)
              = min(w, shift_cap / |D_{i,t}|)      (shift_cap > 0: token-adaptive extrapolation)
    log pi*_t = log pi_ref(y_t) + w_{i,t} D_{i,t}
    d_{i,t}   = log pi*_t - log pi_old(y_t | s_t)   (minus the per-token reverse KL to pi*)
    A_{i,t}   = (outcome_coef * A^grpo_i + teacher_coef * sum_{k >= t} gamma^(k-t) d_{i,k}) m_{i,t}

    w = ``distil_weight``. The DPO model is the run's ``[teacher]`` (``teacher_logp``), the reference
    the run's reference (``ref_logp``), the student's log-probs ``old_logp``, all [N, T] at the
    sampling temperature; the rest is :func:`opd` (knobs ``teacher_coef``, ``outcome_coef``,
    ``gamma``, ``scale``, ``eps``), and w = 1 with shift_cap = 0 is exactly ``opd`` with the DPO model
    as its teacher (w = 0: distillation to the reference). Only the sampled token's log-probs are
    known, so log pi* is the combined log-prob without the normaliser log Z(s_t) = log sum_v
    pi_ref(v)^(1-w) pi_dpo(v)^w (a function of the state, 0 at w = 0 and w = 1). The abstract gives
    no formula for the token-adaptive logit extrapolation; this is the simplest rule faithful to it:
    the teacher's shift away from the reference on each token, w_t D_t, is capped at ``shift_cap``
    in absolute value (w_t = min(w, shift_cap / |D_t|)), so tokens where the DPO model and the
    reference already differ much are not extrapolated further (over-optimisation) while the others
    get the full weight w. The paper's contrastive DPO reward (a normal and a reverse DPO model) is
    not built: the teacher is one DPO model.
    """
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if teacher_coef:
        t = _need("teacher_logp", "aligndistil", teacher_logp, mask).double()
        o = _need("old_logp", "aligndistil", old_logp, mask).double()
        if distil_weight == 1.0 and shift_cap == 0:
            star = t  # [N, T] pi* is the DPO model itself (the reference is not read)
        else:
            r = _need("ref_logp", "aligndistil", ref_logp, mask).double()
            shift = distil_weight * (t - r)  # [N, T] w D_t
            if shift_cap > 0:
                shift = shift.clamp(-shift_cap, shift_cap)  # [N, T] w_t D_t, w_t = min(w, cap/|D_t|)
            star = r + shift  # [N, T] log pi*(y_t), unnormalised
        d = _to_go(star - o, mask, gamma)  # [N, T] D_t of log pi* - log pi_old on counted tokens
        adv = adv + teacher_coef * d
    return _out(adv, mask)


@CREDIT.register(
    "prime",
    needs={"implicit_rewards"},
    bounds={"prm_coef": ">= 0", "outcome_coef": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"},
)
def prime(
    rewards: Tensor,
    mask: Tensor,
    *,
    implicit_rewards: Tensor | None = None,
    prm_coef: float = 1.0,
    outcome_coef: float = 1.0,
    gamma: float = 1.0,
    loo: bool = True,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """PRIME's dense credit from an implicit process reward model ("Process Reinforcement through
    Implicit Rewards"): the token rewards of an online-updated implicit PRM beside the outcome.

    r_{i,t} = beta * (log pi_prm(y_t | s_t) - log pi_ref(y_t | s_t))     (``implicit_rewards`` [N, T])
    R_{i,t} = sum_{k >= t} gamma^(k-t) r_{i,k}                          (over counted tokens)
    b_i     = mean_{j != i in the group} sum_k r_{j,k}                 (loo; 0 without it)
    A_{i,t} = (outcome_coef * A^grpo_i + prm_coef * (R_{i,t} - b_i)) m_{i,t}

    The implicit PRM is the run's ``[prm]`` model, trained online after each policy update on the
    step's rollouts and the verifier's outcomes (:func:`implicit_prm_loss`); ``implicit_rewards`` are
    its rewards before this step's update. The abstract gives no advantage formula ("PRIME combines
    well with various advantage functions"); this is the paper's leave-one-out (RLOO) baseline on the
    process rewards: every token's reward-to-go minus the mean total implicit reward of the group's
    other samples (``loo``; at gamma = 1 the first token's term is R_i - mean_{j != i} R_j), and the
    outcome through grpo's group-normalised advantage (:func:`rlvr.algos.advantages.grpo`, knobs
    ``scale`` and ``eps``), as in ``opd`` and ``rto``. prm_coef = 0 is grpo's advantage on every
    counted token (the implicit rewards are then not read). ``loo`` needs G >= 2.
    """
    _check_groups(rewards, mask)
    b, g = rewards.shape
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if prm_coef:
        r = torch.where(
            mask.bool(), _need("implicit_rewards", "prime", implicit_rewards, mask).double(), 0.0
        )  # [N, T] on counted tokens
        togo = _to_go(r, mask, gamma)  # [N, T] R_t
        if loo:
            if g < 2:
                raise ValueError("prime: the leave-one-out baseline needs G >= 2 samples per prompt")
            total = r.sum(1).view(b, g)  # [B, G] each sample's total implicit reward
            base = (total.sum(1, keepdim=True) - total) / (g - 1)  # [B, G] mean of the others
            togo = togo - base.reshape(-1, 1)
        adv = adv + prm_coef * togo
    return _out(adv, mask)


# ---------------------------------------------------------------- OPRL: step advantages, implicit PRM


def step_ids(
    mask: Tensor,
    *,
    completion_ids: Tensor | None = None,
    step_token: int = -1,
    turn: Tensor | None = None,
) -> Tensor:
    """[N, T] long: the step (0, 1, ...) of each counted token, -1 on the others.

    ``turn`` [N, T] given (multi-turn episodes): step k-1 is the k-th model turn (``turn`` = k).
    Else ``step_token`` >= 0: a step ends at (and includes) each counted token whose id in
    ``completion_ids`` [N, T] is ``step_token``; the tokens after the last delimiter are one more
    step. Else (``step_token`` = -1) every counted token is its own step.
    """
    _check_mask(mask)
    m = mask.bool()
    if turn is not None:
        if turn.shape != mask.shape:
            raise ValueError(
                f"turn must have the shape of mask {tuple(mask.shape)}, got {tuple(turn.shape)}"
            )
        t = _integer("step_ids", "turn", turn)
        return torch.where(m & (t >= 1), t - 1, -1)
    if step_token >= 0:
        if completion_ids is None or completion_ids.shape != mask.shape:
            raise ValueError("step_ids: step_token needs completion_ids of the shape of mask [N, T]")
        delim = (completion_ids == step_token) & m  # [N, T]
        before = delim.long().cumsum(1) - delim.long()  # [N, T] delimiters strictly before t
        return torch.where(m, before, -1)
    return torch.where(m, m.long().cumsum(1) - 1, -1)


def _oprl(
    fn: str,
    rewards: Tensor,
    mask: Tensor,
    implicit_rewards: Tensor | None,
    steps: Callable[[], Tensor],
    step_coef: float,
    outcome_coef: float,
    scale: str,
    eps: float,
) -> Tensor:
    _check_groups(rewards, mask)
    adv = _outcome_term(rewards, mask, outcome_coef, scale, eps)  # [N, T]
    if step_coef:
        r = torch.where(mask.bool(), _need("implicit_rewards", fn, implicit_rewards, mask).double(), 0.0)
        sid = steps()  # [N, T] step of each counted token, -1 elsewhere
        n_steps = int(sid.max()) + 1 if sid.numel() else 0
        counted = sid >= 0  # [N, T]
        idx = sid.clamp(min=0)  # [N, T]
        per_step = r.new_zeros(mask.shape[0], max(n_steps, 1))  # [N, S] r^step_{i,k}
        per_step.scatter_add_(1, idx, torch.where(counted, r, 0.0))
        rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(sid)  # [N, T]
        exists = torch.zeros_like(per_step, dtype=torch.bool)  # [N, S] the steps that have tokens
        exists[rows[counted], sid[counted]] = True
        step_adv = _whiten_tokens(per_step, exists.double(), eps)  # [N, S] across the batch's steps
        adv = adv + step_coef * torch.where(counted, step_adv.gather(1, idx), 0.0)
    return _out(adv, mask)


@CREDIT.register(
    "oprl",
    needs={"implicit_rewards", "completion_ids"},
    bounds={"step_coef": ">= 0", "outcome_coef": ">= 0", "step_token": ">= -1", "eps": ">= 0"},
)
def oprl(
    rewards: Tensor,
    mask: Tensor,
    *,
    implicit_rewards: Tensor | None = None,
    completion_ids: Tensor | None = None,
    step_coef: float = 1.0,
    outcome_coef: float = 1.0,
    step_token: int = -1,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """OPRL's step-level plus episode-level advantage ("Online Process Reward Learning for Agentic
    Reinforcement Learning"): the step rewards of an implicit PRM learned online by trajectory DPO.

    r_{i,t}  = beta * (log pi_prm(y_t | s_t) - log pi_ref(y_t | s_t))   (``implicit_rewards`` [N, T])
    r^s_{i,k} = sum_{t in step k of row i} r_{i,t}                      (the step reward)
    A^s_{i,k} = (r^s_{i,k} - mean(r^s)) / (std(r^s) + eps)              (over every step of the batch)
    A_{i,t}  = (outcome_coef * A^grpo_i + step_coef * A^s_{i,k(t)}) m_{i,t}

    Steps (:func:`step_ids`): a step ends at each token ``step_token`` (a delimiter id, e.g. the
    newline's) or, at ``step_token`` = -1, each token is a step. ``oprl_turns`` takes the model turns
    of multi-turn episodes as steps instead. The PRM is the ``[prm]`` model with ``prm.loss = "dpo"``
    (:func:`implicit_prm_dpo_loss`: pairs of the group's trajectories with different outcomes);
    ``implicit_rewards`` are its rewards before this step's update. The episode term is grpo's
    group-normalised advantage of the outcome ``rewards`` [B, G] (knobs ``scale``, ``eps``).

    The abstract does not give the normalisation or the combination: rlvr's form normalises the step
    rewards over all steps of the batch (std unbiased; fewer than two steps or all equal give 0), gives
    every token of a step its step's advantage, and adds the two terms with weights. step_coef = 0 is
    grpo's advantage on every counted token, bit for bit (the implicit rewards are then not read).
    """
    return _oprl(
        "oprl",
        rewards,
        mask,
        implicit_rewards,
        lambda: step_ids(mask, completion_ids=completion_ids, step_token=step_token),
        step_coef,
        outcome_coef,
        scale,
        eps,
    )


@CREDIT.register(
    "oprl_turns",
    needs={"implicit_rewards", "turn"},
    bounds={"step_coef": ">= 0", "outcome_coef": ">= 0", "eps": ">= 0"},
)
def oprl_turns(
    rewards: Tensor,
    mask: Tensor,
    *,
    implicit_rewards: Tensor | None = None,
    turn: Tensor | None = None,
    step_coef: float = 1.0,
    outcome_coef: float = 1.0,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """OPRL's advantage on multi-turn episodes ("Online Process Reward Learning for Agentic
    Reinforcement Learning"; task.source = "env"): :func:`oprl` with step k the k-th model turn
    (``turn`` [N, T] = k), the agentic setting of the paper; the formula is oprl's."""

    def steps() -> Tensor:
        if turn is None:
            raise ValueError("oprl_turns needs 'turn' [N, T]")
        return step_ids(mask, turn=turn)

    return _oprl(
        "oprl_turns", rewards, mask, implicit_rewards, steps, step_coef, outcome_coef, scale, eps
    )


# ---------------------------------------------------------------- the critic's loss


def implicit_prm_loss(
    prm_logp: Tensor, ref_logp: Tensor, mask: Tensor, labels: Tensor, *, beta: float = 0.05
) -> Tensor:
    """PRIME's online loss of the implicit PRM ("Process Reinforcement through Implicit Rewards"): a
    cross-entropy between the verifier's outcome and the sigmoid of the sequence's implicit reward,

    s_i = beta * sum_t m_{i,t} (log pi_prm(y_t) - log pi_ref(y_t)),
    L   = mean_i -[y_i log sigma(s_i) + (1 - y_i) log(1 - sigma(s_i))]

    so that beta * (log pi_prm - log pi_ref) of each token is its process reward (the outcome reward
    is their sum). ``prm_logp`` [N, T] carries the gradient; ``ref_logp`` [N, T] and the outcomes
    ``labels`` [N] (in [0, 1]) are constants.
    """
    _check_mask(mask)
    if labels.shape != (mask.shape[0],):
        raise ValueError(f"labels must have shape [N] = ({mask.shape[0]},), got {tuple(labels.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    s = beta * ((prm_logp - ref_logp.detach()) * mask).sum(-1)  # [N]
    y = labels.detach().to(s.dtype)  # [N]
    return torch.nn.functional.binary_cross_entropy_with_logits(s, y)


def implicit_prm_dpo_loss(
    prm_logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    outcomes: Tensor,
    group: Tensor,
    *,
    beta: float = 0.05,
) -> Tensor:
    """OPRL's online loss of the implicit PRM ("Online Process Reward Learning for Agentic
    Reinforcement Learning"): trajectory-level DPO on pairs of the group's trajectories,

    s_i = beta * sum_t m_{i,t} (log pi_prm(y_t) - log pi_ref(y_t))      (sum of the step rewards)
    P   = {(w, l): group_w = group_l, outcome_w > outcome_l}             (winner, loser)
    L   = mean_{(w, l) in P} -log sigma(s_w - s_l)

    so that the implicit rewards beta * (log pi_prm - log pi_ref) order the trajectories as their
    outcomes do. Every ordered pair of a group with different outcomes counts once; a group whose
    outcomes are all equal has no pair and contributes nothing; with no pair at all the loss is 0 (a
    zero that keeps the graph, so its backward gives zero gradients). ``prm_logp`` [N, T] carries the
    gradient; ``ref_logp`` [N, T], ``outcomes`` [N] (the trajectories' rewards) and ``group`` [N]
    (prompt ids) are constants. beta enters once, as in DPO: s_w - s_l = beta (sum of the winner's
    log-ratios - the loser's).
    """
    _check_mask(mask)
    n = mask.shape[0]
    for name, x in (("outcomes", outcomes), ("group", group)):
        if x.shape != (n,):
            raise ValueError(f"{name} must have shape [N] = ({n},), got {tuple(x.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    s = beta * ((prm_logp - ref_logp.detach()) * mask).sum(-1)  # [N]
    o, gid = outcomes.detach(), group.detach()
    wins = (gid[:, None] == gid[None, :]) & (o[:, None] > o[None, :])  # [N, N] row w beats column l
    if not bool(wins.any()):
        return s.sum() * 0.0
    margin = s[:, None] - s[None, :]  # [N, N] s_w - s_l
    return -torch.nn.functional.logsigmoid(margin[wins]).mean()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float = 0.2
) -> Tensor:
    """Clipped value loss of PPO (as in OpenAI baselines), a token mean over the counted tokens:

    V_clip = old_V + clip(V - old_V, -clip, clip)
    L = 1/2 * sum_t m_t * max((V_t - R_t)^2, (V_clip_t - R_t)^2) / sum_t m_t

    ``clip`` = 0 turns the clipping off (plain squared error). values [N, T] carries the gradient;
    old_values (the critic before this update) and returns (the GAE targets) are constants.
    """
    ret, old = returns.detach(), old_values.detach()
    err = (values - ret) ** 2  # [N, T]
    if clip > 0:
        clipped = old + (values - old).clamp(-clip, clip)  # [N, T]
        err = torch.maximum(err, (clipped - ret) ** 2)
    return 0.5 * (err * mask).sum() / mask.sum().clamp(min=1)


# ---------------------------------------------------------------- multi-turn episodes: credit per turn


def _first_bad(bad: Tensor) -> list[int]:
    """The index of the first True entry of ``bad``."""
    return [int(v) for v in bad.nonzero()[0]]


def _integer(fn: str, name: str, x: Tensor) -> Tensor:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{fn}: {name} must hold integers (torch.long), got {x.dtype}")
    return x.detach().long()


def _turn_inputs(
    fn: str, mask: Tensor, turn: Tensor | None, turn_rewards: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the turn inputs of an episode batch.

    Returns (turn [N, T] long, turn_rewards [N, K] float64, reached [N, K] bool) where reached[i, k-1]
    says that row i took model turn k, i.e. k <= K_i = max_t turn[i, t]. Rewards beyond K_i are ignored.
    """
    tn = _integer(fn, "turn", _need("turn", fn, turn, mask))  # [N, T]
    n = mask.shape[0]
    if turn_rewards is None:
        raise ValueError(f"{fn} needs 'turn_rewards' [N, K]")
    if turn_rewards.dim() != 2 or turn_rewards.shape[0] != n:
        raise ValueError(
            f"{fn}: turn_rewards must have shape [N, K] with N = {n} (the rows of mask), "
            f"got {tuple(turn_rewards.shape)}"
        )
    k_max = turn_rewards.shape[1]
    if bool((tn < 0).any()):
        i, t = _first_bad(tn < 0)
        raise ValueError(f"{fn}: turn must be >= 0, got {int(tn[i, t])} at row {i}, position {t}")
    if bool((tn > k_max).any()):
        i, t = _first_bad(tn > k_max)
        raise ValueError(
            f"{fn}: turn {int(tn[i, t])} at row {i}, position {t} has no column in turn_rewards "
            f"(K = {k_max} turns)"
        )
    orphan = (mask > 0) & (tn == 0)  # [N, T]
    if bool(orphan.any()):
        i, t = _first_bad(orphan)
        raise ValueError(
            f"{fn}: mask is 1 at row {i}, position {t} where turn is 0; every counted token must "
            "belong to a model turn (turn >= 1)"
        )
    n_turns = tn.amax(1) if tn.shape[1] else tn.new_zeros(n)  # [N] K_i
    reached = torch.arange(1, k_max + 1, device=mask.device) <= n_turns[:, None]  # [N, K]
    r = turn_rewards.detach().double()  # [N, K]
    if not bool(torch.isfinite(r[reached]).all()):
        i, k = _first_bad(reached & ~torch.isfinite(r))
        raise ValueError(
            f"{fn}: turn_rewards must be finite, got {float(r[i, k])} at row {i}, turn {k + 1}"
        )
    return tn, torch.where(reached, r, 0.0), reached


def _turn_returns(r: Tensor, reached: Tensor, gamma: float) -> Tensor:
    """[N, K] float64 R_{i,k} = sum_{k' >= k} gamma^(k' - k) r_{i,k'} over the turns the row took (0
    beyond), as one product with the upper-triangular discount matrix D[k', k] = gamma^(k' - k)."""
    k = torch.arange(r.shape[1], device=r.device)  # [K]
    lag = k[:, None] - k[None, :]  # [K, K] k' - k
    disc = torch.where(lag >= 0, gamma ** lag.clamp(min=0).double(), 0.0)  # [K, K]
    return torch.where(reached, r @ disc, 0.0)


def _anchor_adv(x: Tensor, keys: Tensor, scale: str, eps: float) -> Tensor:
    """[V] float64 (x - mean_S x) / F_S, S = the entries of x [V] whose rows of ``keys`` [V, 2] are
    equal; F_S = std_S + eps (unbiased) for scale "group", 1 for "none". Groups with one member or
    with equal values give exactly 0."""
    if x.numel() == 0:
        return x
    _, anchor = torch.unique(keys, dim=0, return_inverse=True)  # [V]
    m = int(anchor.max()) + 1
    cnt = x.new_zeros(m).index_add_(0, anchor, torch.ones_like(x))  # [M]
    mean = x.new_zeros(m).index_add_(0, anchor, x) / cnt  # [M]
    hi = x.new_full((m,), -math.inf).scatter_reduce_(0, anchor, x, "amax")  # [M]
    lo = x.new_full((m,), math.inf).scatter_reduce_(0, anchor, x, "amin")  # [M]
    dev_ = torch.where(hi[anchor] == lo[anchor], 0.0, x - mean[anchor])  # [V]
    if scale == "group":
        ss = x.new_zeros(m).index_add_(0, anchor, dev_**2)  # [M]
        std = torch.where(cnt > 1, (ss / (cnt - 1).clamp(min=1)).sqrt() + eps, 0.0)  # [M]
        dev_ = _div(dev_, std[anchor])
    return dev_


def _on_tokens(step: Tensor, turn: Tensor) -> Tensor:
    """[N, T] step[i, turn(i, t) - 1] on the tokens of a model turn, 0 elsewhere (step [N, K])."""
    if step.shape[1] == 0:
        return step.new_zeros(turn.shape)
    return torch.where(turn > 0, step.gather(1, (turn - 1).clamp(min=0)), 0.0)


def _check_scale(scale: str) -> None:
    if scale not in ("group", "none"):
        raise ValueError(f"scale must be 'group' or 'none', got {scale!r}")


@CREDIT.register(
    "gigpo_turns",
    needs={"turn", "turn_rewards", "turn_states"},
    bounds={"omega": ">= 0", "gamma": "[0, 1]", "eps": ">= 0"},
)
def gigpo_turns(
    rewards: Tensor,
    mask: Tensor,
    *,
    turn: Tensor | None = None,
    turn_rewards: Tensor | None = None,
    turn_states: Tensor | None = None,
    omega: float = 1.0,
    gamma: float = 0.95,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """GiGPO ("Group-in-Group Policy Optimization for LLM Agent Training") over the turns of multi-turn
    episodes: each model turn is one environment step, and steps are grouped by the state they start in.

    A^E_i     = (R_i - mean_g R) / F                          (episode level: the group's G episodes)
    R_{i,k}   = sum_{k' >= k} gamma^(k' - k) r_{i,k'}          (discounted env return from turn k)
    A^S_{i,k} = (R_{i,k} - mean_{S(i,k)} R) / F_S              (step level: the anchor-state group)
    A_{i,t}   = A^E_i + omega * A^S_{i, turn(i,t)}             on model tokens; 0 elsewhere

    R_i is ``rewards`` [B, G] (the scalar episode reward, env return plus any other component);
    r_{i,k} = ``turn_rewards``[i, k-1], the environment's reward after model turn k. The anchor group
    S(i,k) holds every visit (j, k') in the same prompt group b (any row, any turn, a row that comes
    back to a state counts once per visit) with turn_states[j, k'-1] == turn_states[i, k-1]; equal
    state ids in different groups are different anchors. ``scale`` "group": F = std_g + eps,
    F_S = std_S + eps (unbiased, as GiGPO); "none": F = F_S = 1. Anchor groups with one visit, or
    with equal returns, give A^S = 0; omega = 0 gives the outcome advantage (grpo, or dr_grpo for
    "none") on every model token.

    Row i took turns k = 1 .. K_i, K_i = max_t ``turn``[i, t]; ``turn_states`` must be >= 1 on those
    turns, and both per-turn inputs are ignored beyond K_i. Tokens with turn 0 (environment tokens,
    padding) get 0, and ``mask`` > 0 requires turn > 0.
    """
    _check_groups(rewards, mask)
    _check_scale(scale)
    g = rewards.shape[1]
    tn, r, reached = _turn_inputs("gigpo_turns", mask, turn, turn_rewards)
    if turn_states is None:
        raise ValueError("gigpo_turns needs 'turn_states' [N, K]")
    if turn_states.shape != r.shape:
        raise ValueError(
            f"gigpo_turns: turn_states must have the shape of turn_rewards {tuple(r.shape)}, "
            f"got {tuple(turn_states.shape)}"
        )
    states = _integer("gigpo_turns", "turn_states", turn_states)  # [N, K]
    missing = reached & (states < 1)  # [N, K]
    if bool(missing.any()):
        i, k = _first_bad(missing)
        raise ValueError(
            f"gigpo_turns: turn_states must be >= 1 on every turn taken, got {int(states[i, k])} at "
            f"row {i}, turn {k + 1}"
        )
    n, k_max = r.shape
    ret = _turn_returns(r, reached, gamma)  # [N, K]
    grp = (torch.arange(n, device=mask.device) // g)[:, None].expand(n, k_max)  # [N, K]
    keys = torch.stack([grp[reached], states[reached]], 1)  # [V, 2] (group, state) per visit
    step = torch.zeros_like(ret)  # [N, K] A^S
    step[reached] = _anchor_adv(ret[reached], keys, scale, eps)
    episode = _outcome(rewards, scale, eps).reshape(-1, 1).double()  # [N, 1] A^E
    adv = episode + omega * _on_tokens(step, tn)  # [N, T]
    return _out(torch.where(tn > 0, adv, 0.0), mask)


@CREDIT.register(
    "turn_grpo",
    needs={"turn", "turn_rewards"},
    bounds={"gamma": "[0, 1]", "episode_coef": ">= 0", "eps": ">= 0"},
)
def turn_grpo(
    rewards: Tensor,
    mask: Tensor,
    *,
    turn: Tensor | None = None,
    turn_rewards: Tensor | None = None,
    gamma: float = 0.95,
    episode_coef: float = 1.0,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantage per turn index of multi-turn episodes (no anchor states): the baseline of
    turn k is the group's mean return from turn k over the episodes that reached turn k. rlvr's own:
    GiGPO's step-level grouping with the turn index in place of the anchor state (see below).

    R_{i,k}   = sum_{k' >= k} gamma^(k' - k) r_{i,k'}               (discounted env return from turn k)
    A^T_{i,k} = (R_{i,k} - mean_{j in g, K_j >= k} R_{j,k}) / F_k
    A^E_i     = (R_i - mean_g R) / F                                (episode level, as ``grpo``)
    A_{i,t}   = episode_coef * A^E_i + A^T_{i, turn(i,t)}          on model tokens; 0 elsewhere

    r_{i,k} = ``turn_rewards``[i, k-1]; R_i is ``rewards`` [B, G]; row i took turns 1 .. K_i,
    K_i = max_t ``turn``[i, t]. ``scale`` "group": F = std_g + eps and F_k = std + eps (unbiased) of the
    returns of turn k in the group; "none": F = F_k = 1. A turn reached by one episode of the group
    only, or with equal returns, gives A^T = 0. episode_coef = 0 leaves the turn-level term alone;
    this equals ``gigpo_turns`` with omega = 1 and the state of turn k set to k (with episode_coef 1).
    """
    _check_groups(rewards, mask)
    _check_scale(scale)
    g = rewards.shape[1]
    tn, r, reached = _turn_inputs("turn_grpo", mask, turn, turn_rewards)
    n, k_max = r.shape
    ret = _turn_returns(r, reached, gamma)  # [N, K]
    grp = (torch.arange(n, device=mask.device) // g)[:, None].expand(n, k_max)  # [N, K]
    k_idx = torch.arange(k_max, device=mask.device).expand(n, k_max)  # [N, K]
    keys = torch.stack([grp[reached], k_idx[reached]], 1)  # [V, 2] (group, turn index)
    step = torch.zeros_like(ret)  # [N, K] A^T
    step[reached] = _anchor_adv(ret[reached], keys, scale, eps)
    episode = _outcome(rewards, scale, eps).reshape(-1, 1).double()  # [N, 1] A^E
    adv = episode_coef * episode + _on_tokens(step, tn)  # [N, T]
    return _out(torch.where(tn > 0, adv, 0.0), mask)


@CREDIT.register(
    "gated_turns",
    needs={"turn", "turn_rewards"},
    bounds={"gamma": "[0, 1]", "episode_coef": ">= 0", "eps": ">= 0"},
)
def gated_turns(
    rewards: Tensor,
    mask: Tensor,
    *,
    turn: Tensor | None = None,
    turn_rewards: Tensor | None = None,
    reward_gate: float = 1.0,
    gamma: float = 0.95,
    episode_coef: float = 1.0,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Gated Reward Accumulation (G-RA, "Stabilizing Long-term Multi-turn Reinforcement Learning with
    Gated Rewards"): the immediate (turn) rewards of an episode count only when its long-term reward
    meets a threshold; then ``turn_grpo``.

    g_i       = 1[R_i >= reward_gate]                (R_i = ``rewards``, the episode's outcome reward)
    r'_{i,k}  = g_i * r_{i,k}                        (r_{i,k} = ``turn_rewards``[i, k-1])
    A         = turn_grpo(R, mask, turn, r', gamma, episode_coef, scale, eps)

    An episode whose outcome falls short keeps its episode-level advantage but accumulates no step
    reward, so step rewards cannot pay for a failed task (the reward hacking the paper avoids).
    reward_gate = -inf is ``turn_grpo`` exactly; the default 1.0 is a solved episode under a 0/1
    outcome reward.
    """
    _check_groups(rewards, mask)
    if turn_rewards is None:
        raise ValueError("gated_turns needs 'turn_rewards' [N, K]")
    n = mask.shape[0]
    if turn_rewards.dim() != 2 or turn_rewards.shape[0] != n:
        raise ValueError(
            f"gated_turns: turn_rewards must have shape [N, K] with N = {n} (the rows of mask), "
            f"got {tuple(turn_rewards.shape)}"
        )
    passed = (rewards.detach().reshape(-1) >= reward_gate).to(turn_rewards.device)  # [N]
    gated = torch.where(passed[:, None], turn_rewards, torch.zeros_like(turn_rewards))  # [N, K]
    return turn_grpo(
        rewards,
        mask,
        turn=turn,
        turn_rewards=gated,
        gamma=gamma,
        episode_coef=episode_coef,
        scale=scale,
        eps=eps,
    )


@CREDIT.register(
    "hiper",
    needs={"turn", "turn_rewards"},
    bounds={
        "turns_per_subgoal": ">= 1",
        "gamma": "[0, 1]",
        "episode_coef": ">= 0",
        "high_coef": ">= 0",
        "low_coef": ">= 0",
        "eps": ">= 0",
    },
)
def hiper(
    rewards: Tensor,
    mask: Tensor,
    *,
    turn: Tensor | None = None,
    turn_rewards: Tensor | None = None,
    turns_per_subgoal: int = 2,
    gamma: float = 0.95,
    episode_coef: float = 1.0,
    high_coef: float = 1.0,
    low_coef: float = 1.0,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Hierarchical advantage estimation after HiPER ("HiPER: Hierarchical Reinforcement Learning with
    Explicit Credit Assignment for Large Language Model Agents"), over the turns of multi-turn
    episodes: a high-level advantage per subgoal and a low-level one per turn within it.

    Subgoal j holds turns k with (k - 1) // H = j, H = ``turns_per_subgoal`` (0-based j).
    S_{i,j}   = sum_{k in j} r_{i,k}                                (reward aggregated over subgoal j)
    R^H_{i,j} = sum_{j' >= j} gamma^(j' - j) S_{i,j'}               (return from subgoal j)
    A^H_{i,j} = (R^H_{i,j} - mean_{g, reached j} R^H) / F_j          (high level: group baseline per j)
    R^L_{i,k} = sum_{k' >= k, k' in j(k)} gamma^(k' - k) r_{i,k'}   (return to the end of the subgoal)
    A^L_{i,k} = (R^L_{i,k} - mean_{g, reached k} R^L) / F_k          (low level: baseline per turn)
    A_{i,t}   = episode_coef * A^E_i + high_coef * A^H_{i,j(k)} + low_coef * A^L_{i,k},  k = turn(i,t)

    A^E_i is the episode's group advantage (as ``grpo``); ``scale`` "group" divides by the std + eps
    of the compared values (unbiased), "none" by 1; a subgoal or turn reached by one episode of the
    group, or with equal returns, gives 0. HiPER has a separate planner that proposes subgoals and an
    executor that carries them out; rlvr trains one flat policy, so subgoals are fixed blocks of H
    model turns, which is what "aggregating returns over the execution of each subgoal" needs here.
    H = 1 with low_coef = 0 is ``turn_grpo``; high_coef = low_coef = 0 the outcome advantage.
    """
    _check_groups(rewards, mask)
    _check_scale(scale)
    if turns_per_subgoal < 1:
        raise ValueError(f"hiper: turns_per_subgoal must be >= 1, got {turns_per_subgoal}")
    g = rewards.shape[1]
    tn, r, reached = _turn_inputs("hiper", mask, turn, turn_rewards)
    n, k_max = r.shape
    h = int(turns_per_subgoal)
    k_idx = torch.arange(k_max, device=mask.device)  # [K] 0-based turn
    sub = k_idx // h  # [K] subgoal of each turn
    j_max = int(sub.max()) + 1 if k_max else 0
    grp = (torch.arange(n, device=mask.device) // g)[:, None]  # [N, 1]
    # high level: rewards summed per subgoal, discounted across subgoals
    onehot = (sub[:, None] == torch.arange(j_max, device=mask.device)[None, :]).double()  # [K, J]
    s = r @ onehot  # [N, J]
    reached_j = (reached.double() @ onehot) > 0  # [N, J]
    ret_h = _turn_returns(s, reached_j, gamma)  # [N, J]
    keys_h = torch.stack(
        [
            grp.expand(n, j_max)[reached_j],
            torch.arange(j_max, device=mask.device).expand(n, j_max)[reached_j],
        ],
        1,
    )  # [V, 2] (group, subgoal)
    high = torch.zeros_like(ret_h)  # [N, J]
    high[reached_j] = _anchor_adv(ret_h[reached_j], keys_h, scale, eps)
    high_turn = high[:, sub] if k_max else r  # [N, K]
    # low level: discounted return to the end of the turn's subgoal
    lag = k_idx[:, None] - k_idx[None, :]  # [K, K] k' - k
    same = sub[:, None] == sub[None, :]  # [K, K]
    disc = torch.where((lag >= 0) & same, gamma ** lag.clamp(min=0).double(), 0.0)  # [K, K]
    ret_l = torch.where(reached, r @ disc, 0.0)  # [N, K]
    keys_l = torch.stack([grp.expand(n, k_max)[reached], k_idx.expand(n, k_max)[reached]], 1)  # [V, 2]
    low = torch.zeros_like(ret_l)  # [N, K]
    low[reached] = _anchor_adv(ret_l[reached], keys_l, scale, eps)
    step = torch.where(reached, high_coef * high_turn + low_coef * low, 0.0)  # [N, K]
    episode = _outcome(rewards, scale, eps).reshape(-1, 1).double()  # [N, 1] A^E
    adv = episode_coef * episode + _on_tokens(step, tn)  # [N, T]
    return _out(torch.where(tn > 0, adv, 0.0), mask)
