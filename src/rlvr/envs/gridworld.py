"""The ``gridworld`` environment: walk to a goal on a small grid, one move per turn.

The grid is ``width`` x ``height`` cells (``height=1`` is a corridor); cell (x, y) has column x and row
y, and ``up`` decreases y. The problem's seed (``problem.meta["seed"]``) places the start and the goal
(distinct cells, uniformly), so every episode of a group plays the same layout and passes through the
same cells: the states repeat across the group's episodes, and GiGPO's anchor groups are non-trivial.

Observations are short (the tiny model has 256 tokens of context)::

    reset:  "Grid 3x3. You are at 0,2. Goal at 2,1. Move up, down, left or right."
    step:   "At 1,2."   |   "Wall. At 0,2."   |   "Say up, down, left or right. At 0,2."   |   "Goal!"

The action is the first of the words up/down/left/right in the model's turn (case-insensitive).
Reward: 1 on reaching the goal (done, success), ``-step_penalty`` for every other step; the episode
ends unsolved after ``max_steps`` steps. The anchor-state key is the layout and the agent's cell.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlvr.data.tasks import Problem
from rlvr.envs.base import ENV_TASKS, ENVS, SeedTask

__all__ = ["GridWorld", "gridworld_task", "make_gridworld"]

_MOVE = re.compile(r"\b(up|down|left|right)\b", re.IGNORECASE)
_DELTA = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


class GridWorld:
    """One layout (from ``layout_seed``); ``reset`` always starts it from the same cell."""

    def __init__(
        self,
        layout_seed: int,
        *,
        width: int = 3,
        height: int = 3,
        max_steps: int = 8,
        step_penalty: float = 0.0,
    ) -> None:
        if width < 1 or height < 1 or width * height < 2:
            raise ValueError(f"gridworld: need at least 2 cells, got width={width}, height={height}")
        if max_steps < 1:
            raise ValueError(f"gridworld: max_steps must be >= 1, got {max_steps}")
        self.width, self.height = width, height
        self.max_steps, self.step_penalty = max_steps, step_penalty
        rng = random.Random(int(layout_seed))
        start, goal = rng.sample(range(width * height), 2)
        self.start = (start % width, start // width)
        self.goal = (goal % width, goal // width)
        self.pos, self.steps, self.done = self.start, 0, True
        self.system: str | None = None

    @property
    def state(self) -> str:
        """Anchor key of the current observation: layout and cell."""
        return (
            f"grid {self.width}x{self.height} goal {self.goal[0]},{self.goal[1]} "
            f"at {self.pos[0]},{self.pos[1]}"
        )

    def reset(self, seed: int) -> str:
        """The first observation (``seed`` is unused: the layout seed fixes the game)."""
        self.pos, self.steps, self.done = self.start, 0, False
        return (
            f"Grid {self.width}x{self.height}. You are at {self.start[0]},{self.start[1]}. "
            f"Goal at {self.goal[0]},{self.goal[1]}. Move up, down, left or right."
        )

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("GridWorld.step called on a finished episode; call reset first")
        self.steps += 1
        m = _MOVE.search(action)
        if m is None:
            prefix = "Say up, down, left or right. "
        else:
            dx, dy = _DELTA[m.group(1).lower()]
            x, y = self.pos[0] + dx, self.pos[1] + dy
            if 0 <= x < self.width and 0 <= y < self.height:
                self.pos, prefix = (x, y), ""
            else:
                prefix = "Wall. "
        if self.pos == self.goal:
            self.done = True
            return "Goal!", 1.0, True, {"success": True, "state": self.state}
        self.done = self.steps >= self.max_steps
        obs = f"{prefix}At {self.pos[0]},{self.pos[1]}."
        info: dict[str, Any] = {"state": self.state, "role": "user"}
        if self.done:
            info["success"] = False
        return obs, -self.step_penalty, self.done, info


@ENVS.register(
    "gridworld", bounds={"width": ">= 1", "height": ">= 1", "max_steps": ">= 1", "step_penalty": ">= 0"}
)
def make_gridworld(
    problem: Problem,
    *,
    width: int = 3,
    height: int = 3,
    max_steps: int = 8,
    step_penalty: float = 0.0,
) -> GridWorld:
    """The grid game of ``problem`` (its layout from ``problem.meta["seed"]``)."""
    if "seed" not in problem.meta:
        raise ValueError(f"gridworld: problem {problem.question!r} has no meta['seed']")
    return GridWorld(
        int(problem.meta["seed"]),
        width=width,
        height=height,
        max_steps=max_steps,
        step_penalty=step_penalty,
    )


@ENV_TASKS.register("gridworld")
def gridworld_task(*, seed: int, heldout_seed: int, heldout_size: int) -> SeedTask:
    """Layout seeds: a training stream and a disjoint held-out set (see :class:`SeedTask`)."""
    return SeedTask("gridworld", seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size)
