"""A thin adapter from a gymnasium-style text environment to the :class:`~rlvr.envs.base.Env` protocol.

The wrapped object needs only gymnasium's API, not gymnasium itself::

    reset(seed=s) -> (observation, info)
    step(action) -> (observation, reward, terminated, truncated, info)

with text observations and text actions. ``done = terminated or truncated``; the info dict is passed
through (so ``success``, ``state``, ``tool_calls`` ... of the wrapped env reach the runner), with
``terminated``/``truncated`` added, and ``success`` defaulting to ``terminated and reward > 0`` when
the episode ends and the wrapped env does not say.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GymTextEnv"]


class GymTextEnv:
    """Wrap ``env``; ``seed`` (when given) is used for every reset instead of reset's argument, so
    that an environment made for one problem always plays that problem."""

    def __init__(self, env: Any, *, seed: int | None = None, system: str | None = None) -> None:
        for name in ("reset", "step"):
            if not callable(getattr(env, name, None)):
                raise TypeError(f"GymTextEnv: {type(env).__name__} has no method {name}()")
        self.env, self.seed, self.system = env, seed, system
        self.state: str | None = None

    @staticmethod
    def _text(obs: Any, where: str) -> str:
        if not isinstance(obs, str):
            raise TypeError(f"GymTextEnv: {where} returned a {type(obs).__name__} observation, not text")
        return obs

    def reset(self, seed: int) -> str:
        obs, info = self.env.reset(seed=self.seed if self.seed is not None else seed)
        info = dict(info or {})
        self.state = info.get("state")
        return self._text(obs, "reset()")

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        out = self.env.step(action)
        if len(out) != 5:
            raise TypeError(
                "GymTextEnv: step() must return (obs, reward, terminated, truncated, info), "
                f"got {len(out)} values"
            )
        obs, reward, terminated, truncated, info = out
        info = dict(info or {})
        info["terminated"], info["truncated"] = bool(terminated), bool(truncated)
        done = bool(terminated or truncated)
        if done and "success" not in info:
            info["success"] = bool(terminated) and float(reward) > 0
        return self._text(obs, "step()"), float(reward), done, info
