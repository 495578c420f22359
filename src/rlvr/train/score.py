"""Scoring a round: reward components, the verifier's verdict, reward shaping, process rewards.

:class:`Scorer` is built once per run from the recipe's ``[rewards]``, ``task.verifier`` and
``[shaping]``; it sees one round's completions at a time, groups of one size together, so that
group-level rewards and shaping see [B, G] grids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rlvr.data.tasks import Problem
from rlvr.rewards.runner import RewardRunner
from rlvr.rewards.steps import StepReward, step_token_rewards
from rlvr.rollout import Rollout
from rlvr.train.batch import buckets

__all__ = ["Scorer"]


class Scorer:
    """Scores a round's completions: the reward components, the verifier's verdict, the shaping, and
    (for token-level credit) the step reward's process rewards."""

    def __init__(
        self,
        runner: RewardRunner,
        verifier: RewardRunner,
        verifier_name: str,
        shapers: list[tuple[Callable[..., Tensor], dict[str, Any]]],
        max_len: int,
        step_reward: StepReward | None = None,
    ) -> None:
        self.runner, self.verifier, self.shapers = runner, verifier, shapers
        # the verifier's column of the rewards, when the run's rewards include it
        names = runner.names
        self.verdict_column = names.index(verifier_name) if verifier_name in names else None
        self.max_len, self.step_reward = max_len, step_reward
        self.weights = torch.tensor(runner.weights)  # [K]

    def _components(
        self,
        problems: list[Problem],
        texts: list[str],
        g: int,
        policy: tuple[Any, Any],
        sample_meta: list[dict[str, Any]] | None,
    ) -> tuple[Tensor, Tensor, dict[str, int]]:
        """N = B*G completions of groups of ``g`` -> (parts [N, K], correct [N] 0/1, failures)."""
        prompts = [p.question for p in problems for _ in range(g)]
        answers = [p.answer for p in problems for _ in range(g)]
        metas = [p.meta for p in problems for _ in range(g)]
        if sample_meta is not None:  # per-sample facts, e.g. a multi-turn episode's return
            metas = [{**m, **extra} for m, extra in zip(metas, sample_meta, strict=True)]
        res = self.runner.score(
            prompts,
            texts,
            answers,
            metas,
            group_size=g,
            policy=policy if self.runner.needs_policy else None,
        )
        parts = torch.tensor(res.parts, dtype=torch.float32)  # [N, K]
        if self.verdict_column is not None:
            verdict = parts[:, self.verdict_column]  # [N]
        else:
            scored = self.verifier.score(prompts, texts, answers, metas, group_size=g)
            verdict = torch.tensor([row[0] for row in scored.parts])  # [N]
        return parts, (verdict >= 1.0).float(), res.failures

    def _shape(self, raw: Tensor, lengths: Tensor, correct: Tensor, s: int) -> Tensor:
        """Reward shaping, in recipe order, on the [B_s, s] grid of groups of size ``s`` -> [n_s]."""
        if not self.shapers:
            return raw
        shape_in = {
            "lengths": lengths.view(-1, s).float().cpu(),  # [B_s, s]
            "correct": correct.view(-1, s),  # [B_s, s]
            "max_len": self.max_len,
        }
        grid = raw.view(-1, s)  # [B_s, s]
        for fn, knobs in self.shapers:
            grid = fn(grid, **{k: shape_in[k] for k in fn.needs}, **knobs)  # type: ignore[attr-defined]
        return grid.reshape(-1)  # [n_s]

    def score(
        self,
        problems: list[Problem],
        roll: Rollout,
        texts: list[str],
        sizes: list[int],
        *,
        policy: tuple[Any, Any],
        sample_meta: list[dict[str, Any]] | None = None,
    ) -> tuple[Tensor, Tensor, dict[str, int]]:
        """Score the rows of ``roll`` (groups of ``sizes``): sets ``roll.rewards`` [N] (shaped) and
        ``roll.reward_parts`` [N, K], and ``roll.process_rewards`` [N, T] when the run has a step
        reward for credit. Returns (raw [N] weighted sum before shaping, correct [N], failures)."""
        n = len(texts)
        parts = torch.zeros(n, len(self.runner.names))  # [N, K]
        correct = torch.zeros(n)  # [N]
        rewards = torch.zeros(n)  # [N] after shaping
        raw = torch.zeros(n)  # [N] the weighted sum of the components
        fails: dict[str, int] = {}
        for s, js, rows in buckets(sizes):  # groups of one size together: rewards and shaping see [B, G]
            sel = list(range(n)) if rows is None else rows.tolist()
            p_s, c_s, f_s = self._components(
                [problems[j] for j in js],
                [texts[i] for i in sel],
                s,
                policy,
                None if sample_meta is None else [sample_meta[i] for i in sel],
            )
            raw_s = p_s @ self.weights  # [n_s] the weighted sum of the components
            lengths = roll.lengths if rows is None else roll.lengths[rows.to(roll.lengths.device)]
            shaped = self._shape(raw_s, lengths, c_s, s)  # [n_s]
            if rows is None:
                parts, correct, rewards, raw = p_s, c_s, shaped, raw_s
            else:
                parts[rows], correct[rows], rewards[rows], raw[rows] = p_s, c_s, shaped, raw_s
            for name, c in f_s.items():
                fails[name] = fails.get(name, 0) + c
        roll.rewards, roll.reward_parts = rewards.to(roll.mask.device), parts.to(roll.mask.device)
        if self.step_reward is not None:
            tokenizer = policy[1]
            owner = roll.group.tolist()  # [N] problem of each row
            steps = self.step_reward
            scores, step_mask = steps.step_rewards(
                [problems[j].question for j in owner], texts
            )  # [N, S]
            roll.process_rewards = step_token_rewards(
                tokenizer, roll.completion_ids, roll.lengths, texts, scores, step_mask, steps.delimiter
            )  # [N, T]
        return raw, correct, fails
