"""Rollout replay: a FIFO buffer of recent scored groups that later steps train on again.

"Improving Data Efficiency for LLM Reinforcement Fine-tuning Through Difficulty-targeted Online Data
Selection and Rollout Replay" reuses recent rollouts so that each step generates fewer fresh ones. A
replayed group keeps the behaviour log-probs (``old_logp``) of the policy that sampled it, so an
importance-ratio objective (``ppo_clip`` and its kin) weighs it by pi_theta / pi_behaviour and clips
the ratio; the age bound keeps that ratio near 1.

Only informative groups (rewards not all equal) are worth storing: a group-relative estimator gives
the others zero advantage. The buffer is part of the checkpoint.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import Tensor

from rlvr.data.tasks import Problem
from rlvr.rollout.batch import Rollout

__all__ = ["ReplayBuffer", "ReplayGroup"]


@dataclass
class ReplayGroup:
    """One scored group of G samples of one prompt (tensors on the CPU)."""

    problem: Problem
    roll: Rollout  # G rows
    texts: list[str]  # G completions
    parts: Tensor  # [G, K] unweighted reward components
    correct: Tensor  # [G] verifier outcome 0/1
    rewards: Tensor  # [G] shaped rewards
    raw: Tensor  # [G] weighted sum before shaping
    step: int  # the step that generated it


class ReplayBuffer:
    """The newest ``capacity`` groups, each usable until it is ``max_age`` steps old."""

    def __init__(self, capacity: int = 256, max_age: int = 8) -> None:
        if capacity < 1 or max_age < 1:
            raise ValueError(f"capacity ({capacity}) and max_age ({max_age}) must be >= 1")
        self.capacity, self.max_age = int(capacity), int(max_age)
        self.groups: deque[ReplayGroup] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, group: ReplayGroup) -> None:
        self.groups.append(group)

    def evict(self, step: int) -> None:
        """Drop groups older than ``max_age`` at ``step`` (generated before step - max_age)."""
        while self.groups and step - self.groups[0].step > self.max_age:
            self.groups.popleft()

    def sample(self, k: int, step: int, rng: np.random.Generator) -> list[ReplayGroup]:
        """Up to ``k`` distinct groups, uniformly among those young enough at ``step``; a group may
        be replayed at several steps while it stays in the buffer."""
        self.evict(step)
        k = min(k, len(self.groups))
        if k <= 0:
            return []
        idx = rng.choice(len(self.groups), size=k, replace=False)
        return [self.groups[int(i)] for i in sorted(idx)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "max_age": self.max_age,
            "groups": [
                {
                    **{k: v for k, v in vars(x).items() if k not in ("problem", "roll")},
                    "problem": {**asdict(x.problem), "meta": x.problem.meta},
                    "roll": vars(x.roll).copy(),
                }
                for x in self.groups
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.max_age = int(state["capacity"]), int(state["max_age"])
        self.groups = deque(maxlen=self.capacity)
        for d in state["groups"]:
            p = dict(d["problem"])
            if p.get("messages") is not None:
                p["messages"] = tuple(p["messages"])
            self.groups.append(
                ReplayGroup(
                    **{k: v for k, v in d.items() if k not in ("problem", "roll")},
                    problem=Problem(**p),
                    roll=Rollout(**d["roll"]),
                )
            )
