"""Branching rollouts: each group grown as a prefix tree from the branch points of a few roots.

CURE ("CURE: Critical-Token-Guided Re-Concatenation for Entropy-Collapse Prevention") re-generates
from high-entropy critical tokens and trains on the original and the branched trajectories; ARPO
("Agentic Reinforced Policy Optimization") and ROSE ("Reinforced Efficient Reasoning via Semantically
Diverse Exploration") branch where the policy is uncertain too. :func:`generate_branched` builds a
group of G completions this way:

1. ``roots`` completions of the prompt, sampled as usual (:func:`~rlvr.rollout.sampler.generate`);
2. in each completion of the last layer, the branch points are the ``top_k`` positions t that the
   branch-point rule ``points`` picks (``rlvr.rollout.branch_points``; the default ``entropy``: those of
   highest entropy H_t > ``threshold``, :func:`critical_positions`; ``value``: the states of highest
   value, from ``value_fn``, a critic, ReST-MCTS* / DeepSearch; t >= 1, so a branch shares at least
   one token, and t after the completion's own branch position, so a branch grows a new subtree);
   across the group's completions the points go in order of the rule's score, each getting ``width``
   continuations, until the group has G completions. A continuation is sampled by the same
   ``generate`` with the prefix y_<t on the prompt side (one prefill per point, copied to its
   ``width`` rows) and cut at ``max_new_tokens - t`` new tokens, so that every completion has the
   budget of an i.i.d. sample;
3. step 2 repeats on the new completions, ``depth`` layers at most; a group still short of G (its
   completions too short to branch, or no point that the rule accepts, such as no entropy above the
   threshold) is filled with i.i.d. samples.

The result is an ordinary group: row i*G + j is the full completion (the shared prefix repeated, with
the behaviour log-probs it was sampled with; ``branch_pos`` says where it left the row ``parent`` of
its group), so every objective and advantage works on it unchanged,
and the prefix-tree credit assigners (``credit:tree_td``, ...) find the tree in ``completion_ids``.
With ``roots`` >= G no branch is made and the rollout is exactly ``generate``'s. Every random draw
comes from ``generator`` in a fixed order: the same seed gives the same tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rlvr.rollout.batch import Rollout
from rlvr.rollout.branch_points import BRANCH_POINTS, critical_positions
from rlvr.rollout.sampler import generate, left_pad

__all__ = ["critical_positions", "generate_branched"]


@dataclass
class _Row:
    """One completion of a group while the tree grows (plain lists: a group is small)."""

    tokens: list[int]
    logp: list[float]
    entropy: list[float]
    finish: str
    first: int  # the first position a branch may start at (1 for a root, t + 1 for a branch at t)
    parent: int = -1  # the index in its group of the row it branched from; -1 for a root / i.i.d.


def _rows(roll: Rollout, cut: Sequence[int], first: Sequence[int]) -> list[_Row]:
    """The rows of ``roll`` as :class:`_Row`, row k cut to ``cut[k]`` tokens (then finish 'length')."""
    out = []
    lens = roll.lengths.tolist()
    ids, logp, ent = roll.completion_ids.tolist(), roll.old_logp.tolist(), roll.entropy.tolist()  # type: ignore[union-attr]
    for k, n in enumerate(lens):
        m = min(n, cut[k])
        out.append(
            _Row(ids[k][:m], logp[k][:m], ent[k][:m], roll.finish[k] if m == n else "length", first[k])
        )
    return out


@torch.no_grad()
def generate_branched(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    sizes: Sequence[int],
    *,
    roots: int,
    width: int = 2,
    top_k: int = 1,
    threshold: float = 0.0,
    depth: int = 1,
    points: str = "entropy",
    max_prob: float = 0.9,
    explore: float = 0.0,
    step_ids: Sequence[int] = (),
    value_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Rollout:
    """``sizes[i]`` completions of prompt i grown as a tree (the module's docstring): N = sum(sizes)
    rows, group-major (the roots of a group first, then each layer's branches, then any i.i.d. fill).

    The knobs: ``roots`` (R) samples per prompt first (min(R, G_i)); ``width`` continuations per branch
    point; ``top_k`` points per completion; ``depth``: layers of branching; ``points``: the
    branch-point rule (a name in :data:`~rlvr.rollout.branch_points.BRANCH_POINTS`), which gets
    ``top_k`` and those of ``threshold`` (the least entropy of a point, in nats: ``entropy``),
    ``max_prob`` (the largest probability of a point's token: ``low_prob``), ``explore`` (the
    weight of the visit bonus: ``value``) and ``step_ids`` (the tokens that end a step: ``step``)
    that it takes. ``value_fn(prompt_ids [R, P], prompt_mask [R, P], completion_ids [R, T], mask
    [R, T]) -> values [R, T]`` (a critic's forward) gives the ``values`` of a rule that needs them,
    called once per group and layer (and never for another rule). The sampling knobs are
    ``generate``'s.
    """
    rule = BRANCH_POINTS[points]
    knobs = {"top_k": top_k, "threshold": threshold, "max_prob": max_prob, "explore": explore}
    knobs = {k: v for k, v in knobs.items() if k in BRANCH_POINTS.knobs(points)}
    for name, v in (("roots", roots), ("width", width), ("top_k", top_k), ("depth", depth)):
        if v < 1:
            raise ValueError(f"generate_branched: {name} must be >= 1, got {v}")
    if len(sizes) != len(prompts) or any(s < 1 for s in sizes):
        raise ValueError(
            f"generate_branched: expected one size >= 1 per prompt, got {list(sizes)} for "
            f"{len(prompts)} prompts"
        )
    m = max_new_tokens
    kw = {"eos_id": eos_id, "pad_id": pad_id, "temperature": temperature, "top_p": top_p}
    r = min(roots, max(sizes))
    roll = generate(
        model, prompts, num_samples=r, max_new_tokens=m, generator=generator, entropy=True, **kw
    )
    if r >= max(sizes) and all(s == r for s in sizes):  # no branching: generate's own rollout
        roll.entropy = None
        return roll
    dev = roll.completion_ids.device
    got = _rows(roll, [m] * len(roll), [1] * len(roll))
    groups = [got[i * r : i * r + min(r, s)] for i, s in enumerate(sizes)]  # the roots
    frontier = [list(g) for g in groups]
    for _ in range(depth):
        picked = []  # (group, row, position, continuations kept)
        for i, rows in enumerate(frontier):
            need = sizes[i] - len(groups[i])
            if need <= 0 or not rows:
                continue
            lengths = torch.tensor([len(row.tokens) for row in rows], device=dev)  # [R_i]
            first = torch.tensor([row.first for row in rows], device=dev)  # [R_i]
            needed = _inputs(
                rule.needs,  # type: ignore[attr-defined]
                rows,
                prompts[i],
                pad_id,
                step_ids,
                generator,
                dev,
                value_fn,
            )
            found = rule(lengths, first, **needed, **knobs)
            cands = sorted((-e, k, t) for k, pts in enumerate(found) for e, t in pts)
            cands = cands[: math.ceil(need / width)]
            for j, (_, k, t) in enumerate(cands):
                picked.append((i, rows[k], t, min(width, need - width * j)))
        if not picked:
            break
        low = min(t for _, _, t, _ in picked)
        branch = generate(
            model,
            [list(prompts[i]) + row.tokens[:t] for i, row, t, _ in picked],
            num_samples=width,
            max_new_tokens=m - low,
            generator=generator,
            entropy=True,
            **kw,
        )
        cont = _rows(
            branch,
            [m - t for _, _, t, _ in picked for _ in range(width)],
            [t + 1 for _, _, t, _ in picked for _ in range(width)],
        )
        frontier = [[] for _ in sizes]
        for p, (i, row, t, keep) in enumerate(picked):
            parent = next(j for j, x in enumerate(groups[i]) if x is row)
            for c in cont[p * width : p * width + keep]:
                full = _Row(
                    row.tokens[:t] + c.tokens,
                    row.logp[:t] + c.logp,
                    row.entropy[:t] + c.entropy,
                    c.finish,
                    c.first,
                    parent,
                )
                groups[i].append(full)
                frontier[i].append(full)
    short = [i for i, s in enumerate(sizes) for _ in range(s - len(groups[i]))]
    if short:  # groups that could not branch enough: i.i.d. samples
        fill = generate(
            model,
            [prompts[i] for i in short],
            num_samples=1,
            max_new_tokens=m,
            generator=generator,
            entropy=True,
            **kw,
        )
        for i, row in zip(short, _rows(fill, [m] * len(short), [1] * len(short)), strict=True):
            groups[i].append(row)
    return _assemble(groups, prompts, pad_id, dev)


def _inputs(
    needs: frozenset[str],
    rows: list[_Row],
    prompt: Sequence[int],
    pad_id: int,
    step_ids: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    value_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Any]:
    """The inputs a branch-point rule ``needs``, for the completions ``rows`` of one layer (of the
    group of ``prompt``)."""
    out: dict[str, Any] = {}
    for name in needs:
        if name == "entropy":
            out[name] = _pad([row.entropy for row in rows], 0.0, device)  # [R, T]
        elif name == "logp":
            out[name] = _pad([row.logp for row in rows], 0.0, device)  # [R, T]
        elif name == "completion_ids":
            out[name] = _pad([row.tokens for row in rows], pad_id, device).long()  # [R, T]
        elif name == "step_ids":
            out[name] = list(step_ids)
        elif name == "generator":
            out[name] = generator
        elif name == "values":
            out[name] = _values(value_fn, rows, prompt, pad_id, device)  # [R, T]
        else:
            raise ValueError(f"generate_branched: no input {name!r} for a branch-point rule")
    return out


def _values(
    value_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None,
    rows: list[_Row],
    prompt: Sequence[int],
    pad_id: int,
    device: torch.device,
) -> Tensor:
    """values [R, T]: ``value_fn`` on the completions ``rows`` of the prompt, V(s_t) of the state
    before each token, 0 on padding."""
    if value_fn is None:
        raise ValueError("generate_branched: the branch-point rule needs 'values'; pass value_fn")
    p_ids, p_mask = left_pad([prompt] * len(rows), pad_id)  # [R, P]
    ids = _pad([row.tokens for row in rows], pad_id, device).long()  # [R, T]
    lengths = torch.tensor([len(row.tokens) for row in rows], device=device)  # [R]
    mask = (torch.arange(ids.shape[1], device=device)[None, :] < lengths[:, None]).float()  # [R, T]
    values = value_fn(p_ids.to(device), p_mask.to(device), ids, mask)  # [R, T]
    return values.float() * mask


def _pad(rows: list[list[float]] | list[list[int]], value: float, device: torch.device) -> Tensor:
    """Lists of different lengths -> [R, max(1, longest)] right-padded with ``value``."""
    width = max(1, max(len(x) for x in rows))
    return torch.tensor([list(x) + [value] * (width - len(x)) for x in rows], device=device)


def _assemble(
    groups: list[list[_Row]], prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> Rollout:
    """The groups' rows as one Rollout, group-major, laid out as ``generate`` lays out its own."""
    rows = [row for g in groups for row in g]
    group = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=device)  # [N]
    p_ids, p_mask = left_pad(prompts, pad_id)  # [B, P]
    lengths = torch.tensor([len(row.tokens) for row in rows], device=device)  # [N]
    t = torch.arange(max(1, int(lengths.max())), device=device)  # [T]
    mask = (t[None, :] < lengths[:, None]).float()  # [N, T]
    ids = _pad([row.tokens for row in rows], pad_id, device).long()  # [N, T]
    logp = _pad([row.logp for row in rows], 0.0, device).float()  # [N, T]
    return Rollout(
        prompt_ids=p_ids.to(device)[group],
        prompt_mask=p_mask.to(device)[group],
        completion_ids=ids,
        mask=mask,
        old_logp=logp * mask,
        lengths=lengths,
        finish=[row.finish for row in rows],
        group=group,
        branch_pos=torch.tensor([row.first - 1 for row in rows], device=device),  # [N]
        parent=torch.tensor([row.parent for row in rows], device=device),  # [N]
    )
