"""The run's resumable state: everything a checkpoint holds besides the model's weights.

One :class:`TrainState` owns the step, the optimizers, every random generator, the task's position,
the sampler's tracker, the replay buffer, the solution traces, the KL coefficient and the last
reference reset, the rollouts generating ahead, the critic and the implicit PRM. ``state_dict()`` is what
``trainer_state.pt`` holds and ``load_state_dict()`` puts it back; a piece of state is added by adding
a field (and, for a new kind of object, one line of :func:`_save` / :func:`_load`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from rlvr.models.shard import full_optimizer_state, load_optimizer_state
from rlvr.train.scale import Ready

__all__ = ["FullOptimizerState", "TrainState"]


class FullOptimizerState:
    """A sharded (FSDP2) policy's optimizer as a checkpoint sees it: the full state keyed by
    parameter name, gathered on save and split into each rank's shards on load."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return full_optimizer_state(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.model, self.optimizer, state)


class GlobalTorchRNG:
    """torch's global CPU generator (``torch.get_rng_state`` / ``set_rng_state``)."""

    def state_dict(self) -> torch.Tensor:
        return torch.get_rng_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        torch.set_rng_state(state)


@dataclass
class TrainState:
    """Every piece of a run's state that a checkpoint keeps, by its key in ``trainer_state.pt``.

    Optional pieces (None, or an empty ``ahead``) are left out of the checkpoint; a checkpoint that
    lacks a piece (an older run) leaves it as it was built, and one that has a piece this run does
    not (a replay buffer the recipe no longer uses) is ignored.
    """

    step: int = 0  # steps completed
    optimizer: Any = None  # torch.optim.Optimizer, or FullOptimizerState for a sharded policy
    generator: torch.Generator | None = None  # rollout sampling (on the policy's device)
    cpu_generator: torch.Generator | None = None  # mini-batch shuffling
    torch_rng: GlobalTorchRNG = field(default_factory=GlobalTorchRNG)
    task: Any = None  # the training stream's position (ReasoningGymTask, FileDataset, EnvTask)
    rollouts_total: int = 0  # completions generated so far, dropped ones included
    sample_rng: np.random.Generator | None = None  # pool sampler's, replay's and guidance's draws
    prompt_stats: Any = None  # PromptStats of a pool sampler
    replay: Any = None  # ReplayBuffer
    traces: Any = None  # TraceStore of guidance
    kl_coef: float = 0.0  # the KL coefficient (adaptive with algo.kl_target)
    ref_step: int = 0  # the step of the last reference reset (0: the base)
    ahead: deque[tuple[list[Any], Any]] = field(default_factory=deque)
    """Asynchronous rollouts: (problems, pending rollout) of the next steps, oldest first."""
    reward_weights: dict[str, Any] | None = None
    """A reward-weight controller's state ([reward_weights]): its ``weights`` [K] for the next step."""
    critic: Any = None  # ValueModel
    critic_optimizer: Any = None
    prm: Any = None  # the implicit PRM ([prm]): a causal LM trained beside the policy
    prm_optimizer: Any = None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``trainer_state.pt``: one entry per field that is set. Waits for the
        rollouts generating ahead first (every rank joins), which resume as ready ones."""
        self.ahead = deque((probs, Ready(w.result())) for probs, w in self.ahead)
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "ahead" and not value):
                continue
            out[f.name] = _save(value)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every field that ``state`` has (objects with a state of their own in place)."""
        for f in fields(self):
            current = getattr(self, f.name)
            if f.name in state and current is not None:
                setattr(self, f.name, _load(current, state[f.name]))


def _save(value: Any) -> Any:
    """One field's checkpoint form."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    if isinstance(value, deque):  # rollouts ahead: (problems, rollout), all ready by now
        return [(probs, w.result()) for probs, w in value]
    if hasattr(value, "state_dict"):
        return value.state_dict()
    return value


def _load(current: Any, saved: Any) -> Any:
    """``current`` with the state ``saved`` (objects updated in place and returned)."""
    if isinstance(current, torch.Generator):
        current.set_state(saved)
    elif isinstance(current, np.random.Generator):
        current.bit_generator.state = saved
    elif isinstance(current, deque):
        return deque((probs, Ready(roll)) for probs, roll in saved)
    elif hasattr(current, "load_state_dict"):
        current.load_state_dict(saved)
    else:  # a plain number (step, counts, the KL coefficient): the saved value
        return saved
    return current
