"""The TextArena adapter, on a fake game with TextArena's API (and the real package when present)."""

from __future__ import annotations

import pytest

from rlvr.envs.textarena import TextArenaEnv


class FakeGuess:
    """TextArena's single-player API: reset / get_observation / step / close."""

    def __init__(self, secret: int = 7) -> None:
        self.secret, self.pending, self.result = secret, "", None

    def reset(self, num_players: int, seed: int | None = None) -> None:
        assert num_players == 1
        self.pending = "[GAME] Guess a number from 1 to 20. Write it as [n]."

    def get_observation(self):
        return 0, self.pending

    def step(self, action: str):
        guess = int(action.strip("[] "))
        if guess == self.secret:
            self.result = ({0: 1}, {0: {"reason": "Congratulations!"}})
            return True, {}
        word = "higher" if guess < self.secret else "lower"
        self.pending = f"\n[Player] {action}\n[GAME] The target number is {word}."
        return False, {}

    def close(self):
        return self.result or ({0: -1}, {0: {"reason": "Out of turns."}})


def test_reset_step_and_the_end():
    env = TextArenaEnv(FakeGuess())
    assert env.reset(3).startswith("[GAME] Guess a number")
    assert env.step("[5]") == ("[GAME] The target number is higher.", 0.0, False, {})
    obs, r, done, info = env.step("[7]")
    assert (obs, r, done, info["success"]) == ("Congratulations!", 1.0, True, True)


def test_not_a_game_is_refused():
    with pytest.raises(TypeError, match="has no method"):
        TextArenaEnv(object())


def test_real_textarena_game_when_installed():
    pytest.importorskip("textarena")
    env = TextArenaEnv("GuessTheNumber-v0")
    assert "Guess The Number" in env.reset(3)
    obs, _, done, _ = env.step("[10]")
    assert not done and ("higher" in obs or "lower" in obs)
