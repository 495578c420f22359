"""The environment protocol, the environment registry, and the problems of an environment.

An environment is a text game between the policy and the world::

    obs = env.reset(seed)                        # the first observation: the user turn
    obs, reward, done, info = env.step(action)   # action: the model's turn as text

``info`` keys the episode runner understands (all optional):

- ``"tool_calls"`` / ``"tool_errors"``: int, calls made / failed in this step (the runner sums them);
- ``"success"``: bool, at ``done``: whether the episode solved the task (the verifier outcome);
- ``"state"``: str, the anchor-state key of the observation returned; equal strings are the same
  state (GiGPO groups the turns that start from one state). Without it the observation text is the key;
- ``"role"``: ``"tool"`` or ``"user"``, the chat role of the observation (default: ``"tool"`` when the
  step made tool calls, else ``"user"``).

An environment may also have the attributes ``state`` (the key of the observation ``reset`` returned;
default: that observation's text) and ``system`` (a system prompt, or None).

:data:`ENVS` maps a name to a factory ``factory(problem, **knobs) -> Env``; :func:`build_env_task`
makes the matching :class:`EnvTask`, the stream of problems (``problem.meta["env"]`` names the
environment, ``problem.meta["seed"]`` is the seed to pass to ``reset``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from rlvr.data.tasks import Problem
from rlvr.registry import Registry

__all__ = [
    "ENVS",
    "ENV_TASKS",
    "Env",
    "EnvTask",
    "SeedTask",
    "build_env_task",
    "make_env",
    "seed_stream",
    "state_id",
]

ENVS = Registry("environment")
"""name -> factory(problem: Problem, **knobs) -> Env."""

ENV_TASKS = Registry("environment task")
"""name -> builder(*, seed, heldout_seed, heldout_size, **knobs) -> EnvTask (the same names as ENVS)."""


@runtime_checkable
class Env(Protocol):
    """What every environment implements (see the module docstring for ``info``)."""

    def reset(self, seed: int) -> str: ...

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]: ...


def state_id(key: str) -> int:
    """A stable anchor-state id >= 1 of a state key: ``blake2b(key) mod (2**62 - 1) + 1``.

    The same key gives the same id in every process and run (unlike ``hash``)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**62 - 1) + 1


def seed_stream(seed: int, index: int, salt: str) -> int:
    """The ``index``-th seed of the stream named ``salt`` and ``seed``: ``blake2b(salt-seed-index)`` mod
    2**31. Streams of different seeds or salts are unrelated."""
    blob = f"rlvr-{salt}-{int(seed)}-{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") % 2**31


class EnvTask:
    """The problems of an environment, with the shape of
    :class:`~rlvr.data.tasks.ReasoningGymTask`: ``next(b)``, ``heldout``, ``state_dict()`` /
    ``load_state_dict()``. Subclasses implement ``next``; ``position`` is the stream's whole state."""

    name: str
    heldout: list[Problem]
    position: int

    def next(self, b: int) -> list[Problem]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "position" not in state:
            raise ValueError(f"{self.name} task state: missing 'position' in {sorted(state)}")
        self.position = int(state["position"])


class SeedTask(EnvTask):
    """Problems that are seeds of a game: problem i of the training stream has seed
    ``seed_stream(seed, i, "train")``; the held-out problems are ``heldout_size`` distinct seeds of the
    ``"heldout"`` stream of ``heldout_seed``, and training skips every held-out seed (disjoint).

    ``question`` of a problem is ``"<name> #<seed>"`` (its observation needs the env's knobs, so the
    env makes it), ``answer`` is empty, ``meta`` is ``{"env": name, "seed": s}``.
    """

    def __init__(self, name: str, *, seed: int, heldout_seed: int, heldout_size: int) -> None:
        if heldout_size < 0:
            raise ValueError(f"{name} task: heldout_size must be >= 0, got {heldout_size}")
        self.name, self.seed, self.position = name, seed, 0
        seeds: list[int] = []
        taken: set[int] = set()
        i = 0
        while len(seeds) < heldout_size:
            s = seed_stream(heldout_seed, i, "heldout")
            i += 1
            if s not in taken:
                taken.add(s)
                seeds.append(s)
        self._heldout_seeds = taken
        self.heldout = [self._problem(s) for s in seeds]

    def _problem(self, s: int) -> Problem:
        return Problem(question=f"{self.name} #{s}", answer="", meta={"env": self.name, "seed": s})

    def next(self, b: int) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < b:
            s = seed_stream(self.seed, self.position, "train")
            self.position += 1
            if s not in self._heldout_seeds:
                out.append(self._problem(s))
        return out


def build_env_task(
    name: str, *, seed: int, heldout_seed: int, heldout_size: int, **knobs: Any
) -> EnvTask:
    """The problem stream of environment ``name`` (knobs: the task's, e.g. ``min_terms`` for
    ``calculator``; the environment's own knobs go to ``ENVS[name]``)."""
    builder = ENV_TASKS[name]
    return builder(seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size, **knobs)


def make_env(problem: Problem, **knobs: Any) -> Env:
    """The environment of ``problem`` (``problem.meta["env"]`` names it) with the env's knobs."""
    name = problem.meta.get("env")
    if not isinstance(name, str):
        raise ValueError(f"problem {problem.question[:40]!r} has no meta['env'] naming its environment")
    factory: Callable[..., Env] = ENVS[name]
    return factory(problem, **knobs)
