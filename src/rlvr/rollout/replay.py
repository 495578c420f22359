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
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = ["ReplayBuffer"]


class Replayable(Protocol):
    """What the buffer stores: a scored group (the trainer's ``Batch`` of one group)."""

    step: int  # the step that generated it

    def state_dict(self) -> dict[str, Any]: ...


class ReplayBuffer:
    """The newest ``capacity`` groups, each usable until it is ``max_age`` steps old.

    ``load_group`` turns a stored group's ``state_dict()`` back into a group when a checkpoint is
    loaded (the trainer's ``Batch.from_state``)."""

    def __init__(
        self,
        capacity: int = 256,
        max_age: int = 8,
        load_group: Callable[[dict[str, Any]], Replayable] | None = None,
    ) -> None:
        if capacity < 1 or max_age < 1:
            raise ValueError(f"capacity ({capacity}) and max_age ({max_age}) must be >= 1")
        self.capacity, self.max_age = int(capacity), int(max_age)
        self.load_group = load_group
        self.groups: deque[Any] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, group: Replayable) -> None:
        self.groups.append(group)

    def evict(self, step: int) -> None:
        """Drop groups older than ``max_age`` at ``step`` (generated before step - max_age)."""
        while self.groups and step - self.groups[0].step > self.max_age:
            self.groups.popleft()

    def sample(self, k: int, step: int, rng: np.random.Generator) -> list[Any]:
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
            "groups": [x.state_dict() for x in self.groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.load_group is None:
            raise ValueError("ReplayBuffer.load_state_dict needs load_group (how to rebuild a group)")
        self.capacity, self.max_age = int(state["capacity"]), int(state["max_age"])
        self.groups = deque((self.load_group(d) for d in state["groups"]), maxlen=self.capacity)
