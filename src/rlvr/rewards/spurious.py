"""A reward that carries no information: the control arm of spurious-reward studies.

``reward:random`` scores each sample 1 with probability ``p`` and 0 otherwise, independently of its
text and of whether it is correct ("Spurious Rewards: Rethinking Training Signals in RLVR", Shao et
al. 2025, whose random reward is such a Bernoulli(gamma) draw). Run it in place of the verifier to
measure how much of a gain survives a reward with no signal; the inverted reward of the same studies
needs no component (``rewards.answer.weight = -1``: under a group-normalised advantage, -r and 1 - r
give the same advantages).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from rlvr.rewards.verifiers import REWARDS, BatchedReward

__all__ = ["RandomReward"]


class RandomReward(BatchedReward):
    """Bernoulli(p) per sample, seeded by ``seed`` and the step's own prompts and completions.

    A draw is a pure function of the step's samples, so a resumed run scores its steps as before,
    and two steps (which sample different prompts and texts) draw independently.
    """

    def __init__(self, p: float, seed: int) -> None:
        self.p, self.seed = p, seed

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        h = hashlib.sha256(str(self.seed).encode())
        for text in (*prompts, *completions):
            h.update(len(text).to_bytes(8, "little"))
            h.update(text.encode())
        rng = np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))
        draws = rng.random(len(completions)) < self.p  # [N]
        return draws.astype(float).tolist()


@REWARDS.register("random", bounds={"p": "[0, 1]"})
def make_random_reward(*, p: float = 0.5, seed: int = 0) -> BatchedReward:
    """Factory of :class:`RandomReward`: 1 with probability ``p``, else 0, whatever the completion
    ("Spurious Rewards: Rethinking Training Signals in RLVR")."""
    return RandomReward(p, seed)
