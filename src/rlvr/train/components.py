"""The recipe's algorithm components, looked up in the registries, with the knobs routed to each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from rlvr.train.config import Config, chosen_components

__all__ = ["Components", "build_components"]


@dataclass
class Components:
    """The chosen algorithm components with the knobs routed to each."""

    advantage: Callable[..., Tensor]
    objective: Callable[..., Tensor]
    aggregation: Callable[..., Tensor]
    kl: Callable[..., Tensor]
    token_weights: Callable[..., Tensor]
    credit: Callable[..., Tensor] | None = None
    """Token-level credit assigner; when set it replaces ``advantage``."""
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def needs(self) -> frozenset[str]:
        fns = (self.advantage, self.objective, self.aggregation, self.token_weights, self.credit)
        return frozenset().union(*(fn.needs for fn in fns if fn is not None))  # type: ignore[attr-defined]

    @property
    def needs_ref(self) -> bool:
        return bool({"ref_logp", "seq_ref_logp", "kl", "implicit_rewards"} & self.needs)


def build_components(cfg: Config) -> Components:
    """The components ``cfg.algo`` names, each with the knobs its signature accepts."""
    a = cfg.algo
    parts = chosen_components(a)
    kwargs = {
        role: {k: v for k, v in a.knobs.items() if k in reg.knobs(name)}
        for role, (reg, name) in parts.items()
    }
    fns = {role: reg[name] for role, (reg, name) in parts.items()}
    return Components(**fns, kwargs=kwargs)
