"""The batch type of a training step: scored groups of samples, one prompt per group.

A :class:`Batch` is what every stage of collection makes and what the rest of the step reads: one
generation round, the groups drawn from the replay buffer, or the step's assembled batch. Each value is
stored once: the shaped rewards and the reward components live on the :class:`~rlvr.rollout.Rollout`
(``roll.rewards`` [N], ``roll.reward_parts`` [N, K]); the batch adds what is not a tensor of the model
(problems, texts) and the verdicts (``correct``) and unshaped rewards (``raw``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rlvr.data.guidance import Guide
from rlvr.data.tasks import Problem
from rlvr.rollout import Rollout

__all__ = ["Batch", "buckets", "group_rows"]


def group_rows(sizes: list[int]) -> list[slice]:
    """Row slice of each group, for groups of ``sizes`` samples stored one after another."""
    ends = np.cumsum(sizes).tolist()
    return [slice(end - size, end) for size, end in zip(sizes, ends, strict=True)]


def buckets(sizes: list[int]) -> list[tuple[int, list[int], Tensor | None]]:
    """Groups of equal size, for components that take a [B, G] grid: (size s, group indices, rows
    [n_s] of those groups in group order). With one size for all, rows is None (the whole batch)."""
    if len(set(sizes)) <= 1:
        return [(sizes[0] if sizes else 0, list(range(len(sizes))), None)]
    groups = group_rows(sizes)
    out = []
    for s in sorted(set(sizes)):
        js = [j for j, n in enumerate(sizes) if n == s]
        rows = torch.tensor([r for j in js for r in range(groups[j].start, groups[j].stop)])  # [n_s]
        out.append((s, js, rows))
    return out


@dataclass
class Batch:
    """B groups of scored samples; the rows of group j are ``group(j)`` (contiguous).

    A sampler that allocates rollouts per prompt (knapsack) gives the groups different ``sizes``.
    """

    problems: list[Problem]  # [B]
    roll: Rollout  # N = sum(sizes) rows; rewards [N] after shaping, reward_parts [N, K] unweighted
    texts: list[str]  # [N] the completions as the rewards scored them (a guide's prefix included)
    raw: Tensor  # [N] weighted sum of the reward components, before shaping
    correct: Tensor  # [N] verifier outcome 0/1
    sizes: list[int]  # [B] samples per group
    picked: np.ndarray | None = None  # [B] pool indices, when a sampler picked from a pool
    guides: list[Guide] | None = None  # [B] the guidance each prompt was generated with
    failures: dict[str, int] = field(default_factory=dict)  # reward failures per component
    gen_time: float = 0.0  # seconds spent generating (0 for replayed or assembled batches)
    replayed: bool = False  # groups from the replay buffer, not generated this step
    step: int = 0  # the step that generated it (the replay buffer's age bound)
    episodes: dict[str, float] = field(default_factory=dict)  # episode metrics of a multi-turn round

    @property
    def rewards(self) -> Tensor:
        """[N] shaped rewards (``roll.rewards``)."""
        return self.roll.rewards  # type: ignore[return-value]

    @property
    def parts(self) -> Tensor:
        """[N, K] unweighted reward components (``roll.reward_parts``)."""
        return self.roll.reward_parts  # type: ignore[return-value]

    def group(self, j: int) -> slice:
        """Rows of group ``j``."""
        return group_rows(self.sizes)[j]

    def groups(self, kept: list[int]) -> Batch:
        """The batch of groups ``kept`` (in that order), renumbered from 0, on the same device."""
        spans = group_rows(self.sizes)
        rows = torch.cat([torch.arange(spans[j].start, spans[j].stop) for j in kept])  # [n]
        roll = self.roll.select(rows)
        sizes = [self.sizes[j] for j in kept]
        roll.group = torch.arange(len(kept), device=roll.group.device).repeat_interleave(
            torch.tensor(sizes, device=roll.group.device)
        )  # [n] contiguous
        idx = rows.tolist()
        return replace(
            self,
            problems=[self.problems[j] for j in kept],
            roll=roll,
            texts=[self.texts[i] for i in idx],
            raw=self.raw[rows],
            correct=self.correct[rows],
            sizes=sizes,
            picked=None if self.picked is None else self.picked[kept],
            guides=None if self.guides is None else [self.guides[j] for j in kept],
            failures={},
            gen_time=0.0,
        )

    @staticmethod
    def assemble(parts: list[Batch], kept: list[tuple[int, int]]) -> Batch:
        """The step's batch from the groups ``kept`` = [(part, group)] of ``parts``, in that order:
        rollouts joined by ``Rollout.cat`` (prompts re-padded), groups renumbered."""
        if len(parts) == 1 and kept == [(0, j) for j in range(len(parts[0].problems))]:
            return parts[0]
        spans = [group_rows(p.sizes) for p in parts]
        rows = [torch.arange(spans[i][j].start, spans[i][j].stop) for i, j in kept]
        roll = Rollout.cat([parts[i].roll.select(r) for (i, _), r in zip(kept, rows, strict=True)])
        sizes = [len(r) for r in rows]
        roll.group = torch.arange(len(kept), device=roll.group.device).repeat_interleave(
            torch.tensor(sizes, device=roll.group.device)
        )  # [N] contiguous

        def gather(attr: str) -> Tensor:
            return torch.cat([getattr(parts[i], attr)[r] for (i, _), r in zip(kept, rows, strict=True)])

        return Batch(
            problems=[parts[i].problems[j] for i, j in kept],
            roll=roll,
            texts=[parts[i].texts[k] for (i, _), r in zip(kept, rows, strict=True) for k in r.tolist()],
            raw=gather("raw"),
            correct=gather("correct"),
            sizes=sizes,
        )

    @staticmethod
    def join(parts: list[Batch], device: torch.device | str) -> Batch:
        """Whole batches one after another (replayed groups), on ``device``; not generated now."""
        return Batch(
            problems=[p for x in parts for p in x.problems],
            roll=Rollout.cat([x.roll for x in parts]).to(device),
            texts=[t for x in parts for t in x.texts],
            raw=torch.cat([x.raw for x in parts]),
            correct=torch.cat([x.correct for x in parts]),
            sizes=[s for x in parts for s in x.sizes],
            replayed=True,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (the replay buffer keeps batches of one group)."""
        return {
            "problems": [{**asdict(p), "meta": p.meta} for p in self.problems],
            "roll": vars(self.roll).copy(),
            "texts": self.texts,
            "raw": self.raw,
            "correct": self.correct,
            "sizes": self.sizes,
            "step": self.step,
        }

    @staticmethod
    def from_state(state: dict[str, Any]) -> Batch:
        """The inverse of :meth:`state_dict`; also reads a replay group of checkpoints written before
        the batch type existed (``problem``, ``roll``, ``texts``, ``parts``, ``correct``, ``rewards``,
        ``raw``, ``step``: its ``parts`` and ``rewards`` are the ones on its rollout)."""

        def problem(d: dict[str, Any]) -> Problem:
            p = dict(d)
            if p.get("messages") is not None:
                p["messages"] = tuple(p["messages"])
            return Problem(**p)

        roll = Rollout(**state["roll"])
        if "problem" in state:  # the older ReplayGroup layout: one group
            return Batch(
                problems=[problem(state["problem"])],
                roll=roll,
                texts=list(state["texts"]),
                raw=state["raw"],
                correct=state["correct"],
                sizes=[len(state["texts"])],
                step=int(state["step"]),
            )
        return Batch(
            problems=[problem(p) for p in state["problems"]],
            roll=roll,
            texts=list(state["texts"]),
            raw=state["raw"],
            correct=state["correct"],
            sizes=[int(s) for s in state["sizes"]],
            step=int(state["step"]),
        )
