"""The policy as its own teacher: its log-probs of a failed row's tokens after a correct solution.

When a chosen component reads ``self_teacher_logp`` (``rlvr.algos.INPUTS["credit"]`` and
``INPUTS["objective"]``, e.g. SRPO's ``credit:srpo`` or T-REG's ``objective:treg``), the advantage
stage calls :func:`self_teacher_forward` before the estimator. Each
failed row (the verifier's ``correct`` = 0) whose group has a correct sample, or whose problem has
a worked solution (``[self_teacher] source``), gets a context: its problem's chat prompt with
``template.format(solution=...)`` appended to the question (``rlvr.data.guidance.apply_guide``).
One no-grad forward of the policy before its update, at the sampling temperature, scores the
row's own completion tokens after that context. Rows without a context keep ``old_logp``
(d = 0), entropy 0 and ``self_teacher_mask`` = 0. No random numbers, no state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from rlvr.data.guidance import Guide
from rlvr.rollout import Rollout, sequence_logp
from rlvr.rollout.sampler import left_pad
from rlvr.train.batch import Batch
from rlvr.train.demos import demonstration
from rlvr.train.rounds import prompt_ids
from rlvr.train.scale import SOLO, Learners, split_rows

__all__ = ["hints", "self_teacher_forward"]


def hints(batch: Batch, *, source: str = "auto", template: str = "{solution}") -> list[str | None]:
    """Per row of ``batch``, the hint appended to its question, None for a row that gets none: a
    failed row's ``template`` filled with the first correct sample of its group ('group'), its
    problem's worked solution ('solution'), or the first of the two that exists ('auto')."""
    out: list[str | None] = []
    for j, problem in enumerate(batch.problems):
        rows = range(*batch.group(j).indices(len(batch.roll)))
        ok = [i for i in rows if bool(batch.correct[i])]
        solution = batch.texts[ok[0]] if ok and source in ("group", "auto") else None
        if solution is None and source in ("solution", "auto"):
            solution = demonstration(problem, source="auto")
        hint = None if solution is None else template.format(solution=solution)
        out += [None if bool(batch.correct[i]) else hint for i in rows]
    return out


def self_teacher_forward(
    policy: Any,
    tokenizer: Any,
    batch: Batch,
    roll: Rollout,
    row_hints: list[str | None],
    *,
    temperature: float = 1.0,
    learners: Learners = SOLO,
    precision: Callable[[], Any] = contextlib.nullcontext,
) -> None:
    """Set ``roll.self_teacher_logp`` and ``roll.self_teacher_entropy`` [N, T] (the policy's log-probs
    and entropies of each hinted row's completion after its hinted prompt; ``old_logp`` and 0 on the
    other rows) and ``roll.self_teacher_mask`` [N] (1 on the hinted rows)."""
    n = len(roll)
    dev = roll.mask.device
    logp = roll.old_logp.detach().clone()  # [N, T]
    ent = torch.zeros_like(logp)  # [N, T]
    has = torch.zeros(n, device=dev)  # [N]
    rows = [i for i, h in enumerate(row_hints) if h is not None]
    if rows:
        owner = torch.repeat_interleave(torch.tensor(batch.sizes)).tolist()  # [N] group of each row
        problems = [batch.problems[owner[i]] for i in rows]
        guides = [Guide(user_extra=row_hints[i]) for i in rows]  # type: ignore[arg-type]
        ids, _ = prompt_ids(tokenizer, problems, 1, guides=guides)
        p_ids, p_mask = left_pad(ids, tokenizer.pad_token_id)  # [k, P']
        idx = torch.tensor(rows, device=dev)  # [k]
        rows_in = (p_ids.to(dev), p_mask.to(dev), roll.completion_ids[idx], roll.attention[idx])
        with torch.no_grad(), precision():
            out = split_rows(
                lambda *x: torch.stack(sequence_logp(policy, *x, temperature=temperature), 1),
                rows_in,
                learners,
            )  # [k, 2, T]: log-probs, entropies
        m = roll.mask[idx]  # [k, T]
        logp[idx] = torch.where(m.bool(), out[:, 0].to(logp.dtype), logp[idx])
        ent[idx] = out[:, 1].to(ent.dtype) * m
        has[idx] = 1.0
    roll.self_teacher_logp, roll.self_teacher_entropy, roll.self_teacher_mask = logp, ent, has
