"""Branch points: where a branching rollout grows a group's prefix tree (registry ``BRANCH_POINTS``).

A branch-point rule looks at the completions of one tree layer and returns, per completion, its
candidate points best first::

    rule(lengths [R], first [R], *, <needed inputs>, top_k, <knobs>) -> R lists of (score, t)

with first_r <= t < L_r (``first`` is 1 on a root, so a branch shares at least one token, and t + 1
after a row's own branch position, so a branch grows a new subtree) and at most ``top_k`` pairs.
:func:`~rlvr.rollout.branching.generate_branched` takes the points of a group's completions in
order of score (higher first; ties: the earlier row, then the earlier position) and re-samples from
the prefix y_<t of each. The inputs a rule needs are declared in ``needs`` and passed by keyword:

- ``entropy`` [R, T]: the sampling distribution's entropy at each position (nats);
- ``logp`` [R, T]: the behaviour log-probs of the sampled tokens;
- ``completion_ids`` [R, T]: the sampled tokens;
- ``step_ids``: the token ids that end a reasoning step (:func:`boundary_ids`);
- ``values`` [R, T]: a value estimate V(s_t) of the state before each position (the prompt and
  y_<t), the run's critic (``[critic]``) called on the layer's completions; computed only for a rule
  that needs it;
- ``generator``: the rollout's random generator (a rule that draws must draw from it only).

Rows are right-padded: positions t >= L_r hold padding and are never points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlvr.algos.credit import cutpoints
from rlvr.registry import Registry

__all__ = [
    "BRANCH_POINTS",
    "INPUTS",
    "boundary_ids",
    "critical_positions",
    "entropy",
    "low_prob",
    "step",
    "uniform",
    "value",
    "visits",
]

BRANCH_POINTS = Registry("branch-point rule")

INPUTS = frozenset({"entropy", "logp", "completion_ids", "step_ids", "generator", "values"})
"""The inputs a branch-point rule may declare in ``needs`` (the module's docstring)."""

Points = list[list[tuple[float, int]]]


def _inside(lengths: Tensor, first: Tensor, t_max: int) -> Tensor:
    """[R, T] bool: the positions first_r <= t < L_r a row may branch at."""
    pos = torch.arange(t_max, device=lengths.device)  # [T]
    return (pos >= first[:, None]) & (pos < lengths[:, None])  # [R, T]


def _best(score: Tensor, ok: Tensor, top_k: int, rule: str) -> Points:
    """Per row the ``top_k`` pairs (score_t, t) of highest score among the ``ok`` positions (ties:
    the earlier position)."""
    if top_k < 1:
        raise ValueError(f"{rule}: top_k must be >= 1, got {top_k}")
    score = score.float().masked_fill(~ok, float("-inf"))  # [R, T]
    vals, idx = score.sort(dim=1, descending=True, stable=True)  # [R, T]
    out = []
    for v, i in zip(vals[:, :top_k].tolist(), idx[:, :top_k].tolist(), strict=True):
        out.append([(e, t) for e, t in zip(v, i, strict=True) if e > float("-inf")])
    return out


def critical_positions(
    entropy: Tensor, lengths: Tensor, first: Tensor, *, top_k: int, threshold: float = 0.0
) -> Points:
    """The branch points of each completion: entropy [R, T], lengths [R], first [R] -> per row up to
    ``top_k`` pairs (H_t, t) with first_r <= t < L_r and H_t > threshold, highest entropy first
    (ties: the earlier position)."""
    if top_k < 1:
        raise ValueError(f"critical_positions: top_k must be >= 1, got {top_k}")
    ok = _inside(lengths, first, entropy.shape[1]) & (entropy > threshold)  # [R, T]
    return _best(entropy, ok, top_k, "critical_positions")


@BRANCH_POINTS.register("entropy", needs={"entropy"}, bounds={"top_k": ">= 1", "threshold": ">= 0"})
def entropy(
    lengths: Tensor,
    first: Tensor,
    *,
    entropy: Tensor | None = None,
    top_k: int = 1,
    threshold: float = 0.0,
) -> Points:
    """The critical tokens of CURE ("CURE: Critical-Token-Guided Re-Concatenation for
    Entropy-Collapse Prevention"): the ``top_k`` positions of highest entropy H_t > ``threshold``,
    score H_t (:func:`critical_positions`). ARPO and ROSE branch where the policy is uncertain too."""
    ent = _need(entropy, "entropy", "entropy")  # [R, T]
    return critical_positions(ent, lengths, first, top_k=top_k, threshold=threshold)


@BRANCH_POINTS.register("uniform", needs={"generator"}, bounds={"top_k": ">= 1"})
def uniform(
    lengths: Tensor,
    first: Tensor,
    *,
    generator: torch.Generator | None = None,
    top_k: int = 1,
) -> Points:
    """Points drawn uniformly at random, the baseline that the entropy rule is measured against
    (rlvr's own): u_{r,t} ~ U(0, 1) for every position (one draw of shape [R, T] from ``generator``),
    and the ``top_k`` positions of highest u in [first_r, L_r), score u. So each row gets a uniformly
    random subset of its eligible positions, without replacement, and the order across rows is random
    too. The same generator state gives the same points."""
    t_max = int(lengths.max()) if len(lengths) else 0
    t_max = max(t_max, 1)
    dev = generator.device if generator is not None else lengths.device
    u = torch.rand(len(lengths), t_max, generator=generator, device=dev).to(lengths.device)  # [R, T]
    return _best(u, _inside(lengths, first, t_max), top_k, "uniform")


@BRANCH_POINTS.register("step", needs={"completion_ids", "step_ids"}, bounds={"top_k": ">= 1"})
def step(
    lengths: Tensor,
    first: Tensor,
    *,
    completion_ids: Tensor | None = None,
    step_ids: Sequence[int] | None = None,
    top_k: int = 1,
) -> Points:
    """Step boundaries, the tree sampling of SPO-tree ("Segment Policy Optimization: Effective
    Segment-Level Credit Assignment in RL for Large Language Models") cut at reasoning steps: t is a
    point when the token before it, y_{t-1}, ends a step (its id is in ``step_ids``, for the worked
    solutions a newline: one step per line, as ``arith_steps`` reads them), so a branch keeps the
    finished steps and re-samples the next one whole. The form is rlvr's: the ``top_k`` earliest
    boundaries of each row, score -t (earlier first, across rows too: an early branch leaves its
    subtree the most steps). No boundary (or no ``step_ids``): no point."""
    ids = _need(completion_ids, "completion_ids", "step")  # [R, T]
    t_max = ids.shape[1]
    ends = torch.zeros_like(ids, dtype=torch.bool)  # [R, T] y_t ends a step
    if step_ids:
        ends = torch.isin(ids, torch.tensor(list(step_ids), device=ids.device, dtype=ids.dtype))
    after = torch.zeros_like(ends)  # [R, T] y_{t-1} ends a step
    after[:, 1:] = ends[:, :-1]
    pos = torch.arange(t_max, device=ids.device, dtype=torch.float32)  # [T]
    score = (-pos).expand(ids.shape[0], t_max)  # [R, T]
    return _best(score, _inside(lengths, first, t_max) & after, top_k, "step")


@BRANCH_POINTS.register("low_prob", needs={"logp"}, bounds={"top_k": ">= 1", "max_prob": "(0, 1]"})
def low_prob(
    lengths: Tensor,
    first: Tensor,
    *,
    logp: Tensor | None = None,
    top_k: int = 1,
    max_prob: float = 0.9,
) -> Points:
    """SPO-tree's cuts ("Segment Policy Optimization: Effective Segment-Level Credit Assignment in
    RL for Large Language Models"): the tokens sampled with probability p_t = exp(logp_t) <
    ``max_prob``, SPO's cutpoints (:func:`rlvr.algos.credit.cutpoints`, the rule ``credit:spo_segment``
    cuts its segments by), so a branch re-samples the low-probability choice from the state where it
    was made. The ``top_k`` of lowest probability first, score 1 - p_t (ties: the earlier position;
    rlvr's order: SPO-tree cuts at fixed segment counts)."""
    lp = _need(logp, "logp", "low_prob")  # [R, T]
    ok = _inside(lengths, first, lp.shape[1])  # [R, T]
    cut = cutpoints(lp, ok.float(), threshold=max_prob)  # [R, T]
    return _best(1.0 - lp.detach().float().exp(), cut, top_k, "low_prob")


def visits(completion_ids: Tensor, lengths: Tensor) -> Tensor:
    """n [R, T]: n_{r,t} = the number of rows r' whose first t tokens are row r's (the completions
    through the node y_<t of the layer's prefix tree; L_r' >= t): completion_ids [R, T], lengths [R].
    n_{r,t} >= 1 for t <= L_r (the row itself); n_{r,0} = R (the root); 0 on padding past L_r."""
    r, t_max = completion_ids.shape
    pos = torch.arange(t_max, device=completion_ids.device)  # [T]
    live = pos[None, :] < lengths[:, None]  # [R, T]
    same = (
        (completion_ids[:, None, :] == completion_ids[None, :, :]) & live[:, None] & live[None]
    )  # [R, R, T]
    through = torch.ones(r, r, t_max, dtype=torch.long, device=completion_ids.device)  # [R, R, T]
    if t_max > 1:  # the first t tokens agree: the product of same[..., s] over s < t
        through[:, :, 1:] = same[:, :, :-1].long().cumprod(dim=2)
    return through.sum(dim=1)  # [R, T]


@BRANCH_POINTS.register(
    "value", needs={"values", "completion_ids"}, bounds={"top_k": ">= 1", "explore": ">= 0"}
)
def value(
    lengths: Tensor,
    first: Tensor,
    *,
    values: Tensor | None = None,
    completion_ids: Tensor | None = None,
    top_k: int = 1,
    explore: float = 0.0,
) -> Points:
    """Value-guided expansion, the node selection of the tree searches in training, ReST-MCTS*
    ("ReST-MCTS*: LLM Self-Training via Process Reward Guided Tree Search": expand the partial
    solutions of highest value) and DeepSearch ("DeepSearch: Overcome the Bottleneck of Reinforcement
    Learning with Verifiable Rewards via Monte Carlo Tree Search": a global frontier of promising
    nodes), as a UCT-like score of each state s_t = y_<t:

        score_{r,t} = V(s_t) + explore * sqrt(ln R / n_{r,t})

    V(s_t) = ``values`` [R, T] (the critic's value of the state before token t), R the layer's
    completions (the root's visits) and n_{r,t} = :func:`visits`, the completions of the layer that
    pass through s_t. The ``top_k`` positions of highest score in [first_r, L_r) per row; across the
    group's rows :func:`~rlvr.rollout.branching.generate_branched` takes them in score order (the
    global frontier). ``explore`` = 0: the positions of highest value (ReST-MCTS*'s greedy expansion;
    ties: the earlier position). The form is rlvr's: one value-guided expansion per layer from the
    sampled completions, the counts those of the layer only (no MCTS rollouts or backups)."""
    v = _need(values, "values", "value").float()  # [R, T]
    ids = _need(completion_ids, "completion_ids", "value")  # [R, T]
    if ids.shape != v.shape:
        raise ValueError(f"value: values {tuple(v.shape)} and completion_ids {tuple(ids.shape)} differ")
    ok = _inside(lengths, first, v.shape[1])  # [R, T]
    n = visits(ids, lengths).clamp(min=1).float()  # [R, T]
    bonus = math.sqrt(math.log(max(len(lengths), 1))) / n.sqrt()  # [R, T] sqrt(ln R / n)
    return _best(v + explore * bonus, ok, top_k, "value")


def _need(x: Any, name: str, rule: str) -> Any:
    if x is None:
        raise ValueError(f"branch-point rule {rule!r} needs {name!r}")
    return x


def boundary_ids(tokenizer: Any, delimiter: str = "\n") -> list[int]:
    """The ids of the vocabulary's tokens whose text contains ``delimiter`` (the tokens that end a
    step for the ``step`` rule; a token such as '=\\n' ends one too). Decodes each id once."""
    if not delimiter:
        raise ValueError("boundary_ids: the delimiter must not be empty")
    return [i for i in range(len(tokenizer)) if delimiter in tokenizer.decode([i])]
