"""TextArena's single-player games as environments (optional: ``pip install textarena``).

TextArena (``textarena`` on PyPI) has its own API, not gymnasium's::

    env = textarena.make(env_id="GuessTheNumber-v0")
    env.reset(num_players=1, seed=s)
    player, observation = env.get_observation()   # the messages since the last step
    done, info = env.step(action)
    rewards, game_info = env.close()               # at the end: {player: reward}, {player: {...}}

:class:`TextArenaEnv` maps it onto :class:`~rlvr.envs.base.Env`: ``reset`` returns the first
observation, ``step`` the new messages (the echo of the player's own move dropped), and at the end the
player's reward and the game's reason; ``success`` is a positive final reward. Games that run offline
include GuessTheNumber, Wordle, Hangman, Minesweeper, TowerOfHanoi and Sudoku (checked here with
textarena 0.7.4: GuessTheNumber-v0 plays without network). Their prompts are hundreds of tokens long,
so they are for real models, not the embedded tiny one.

Registered as the environment ``textarena`` (knob ``env_id``); its problems are seeds.
"""

from __future__ import annotations

from typing import Any

from rlvr.data.tasks import Problem
from rlvr.envs.base import ENV_TASKS, ENVS, SeedTask

__all__ = ["TextArenaEnv", "make_textarena"]


class TextArenaEnv:
    """One TextArena game (``game``: an object with TextArena's API, or an env id to ``make``)."""

    def __init__(self, game: Any) -> None:
        if isinstance(game, str):
            try:
                import textarena
            except ImportError:
                raise ImportError(
                    f"environment 'textarena' (env_id {game!r}) needs the textarena package: "
                    "pip install textarena"
                ) from None
            game = textarena.make(env_id=game)
        for name in ("reset", "get_observation", "step", "close"):
            if not callable(getattr(game, name, None)):
                raise TypeError(f"TextArenaEnv: {type(game).__name__} has no method {name}()")
        self.game = game

    def reset(self, seed: int) -> str:
        self.game.reset(num_players=1, seed=int(seed))
        _, observation = self.game.get_observation()
        return str(observation).strip()

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        done, info = self.game.step(action)
        info = dict(info or {})
        if not done:
            _, observation = self.game.get_observation()
            lines = [ln for ln in str(observation).splitlines() if not ln.startswith("[Player]")]
            return "\n".join(lines).strip(), 0.0, False, info
        rewards, game_info = self.game.close()
        reward = float(rewards.get(0, 0.0)) if rewards else 0.0
        reason = str((game_info or {}).get(0, {}).get("reason", "Game over."))
        return reason, reward, True, {**info, "success": reward > 0}


@ENVS.register("textarena")
def make_textarena(problem: Problem, *, env_id: str = "GuessTheNumber-v0") -> TextArenaEnv:
    """A TextArena single-player game; the problem's seed is the reset seed."""
    return TextArenaEnv(env_id)


@ENV_TASKS.register("textarena")
def textarena_task(*, seed: int, heldout_seed: int, heldout_size: int) -> SeedTask:
    """Game seeds: a training stream and a disjoint held-out set."""
    return SeedTask("textarena", seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size)
