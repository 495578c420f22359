"""A user environment as a plugin: guess a number between 1 and `high`, told "higher" or "lower".

Load it with `--plugin examples/guess_env.py` (or `rlvr.cli.load_plugins`), then train with

    rlvr train --plugin examples/guess_env.py --recipe examples/guess.toml

Two registrations make an environment: `ENVS` (the game for one problem) and `ENV_TASKS` (the
stream of problems: here seeds, held-out seeds kept apart by `SeedTask`). Every episode of a group
plays the same secret number, so the states ("lower than 7", ...) repeat across the group and
`gigpo_turns` finds anchor groups.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlvr.data.tasks import Problem
from rlvr.envs import ENV_TASKS, ENVS
from rlvr.envs.base import SeedTask


class GuessNumber:
    """reset -> the rules; step(turn) -> "higher" / "lower" / "correct"; reward 1 on a hit."""

    def __init__(self, secret: int, high: int) -> None:
        self.secret, self.high = secret, high
        self.low_seen, self.high_seen = 1, high

    def reset(self, seed: int) -> str:
        self.low_seen, self.high_seen = 1, self.high
        self.state = f"{self.low_seen}-{self.high_seen}"  # the anchor-state key of the first turn
        return f"Guess my number from 1 to {self.high}. Reply with one number."

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        found = re.search(r"\d+", action)
        if found is None:
            return "Reply with one number.", 0.0, True, {"success": False}
        guess = int(found.group())
        if guess == self.secret:
            return "Correct!", 1.0, True, {"success": True}
        if guess < self.secret:
            self.low_seen = max(self.low_seen, guess + 1)
            obs = "Higher."
        else:
            self.high_seen = min(self.high_seen, guess - 1)
            obs = "Lower."
        # the state is what the player knows: the interval the secret is in
        return obs, 0.0, False, {"state": f"{self.low_seen}-{self.high_seen}"}


@ENVS.register("guess", bounds={"high": ">= 2"})
def make_guess(problem: Problem, *, high: int = 9) -> GuessNumber:
    """The secret number comes from the problem's seed."""
    return GuessNumber(random.Random(problem.meta["seed"]).randint(1, high), high)


@ENV_TASKS.register("guess")
def guess_task(*, seed: int, heldout_seed: int, heldout_size: int) -> SeedTask:
    return SeedTask("guess", seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size)
