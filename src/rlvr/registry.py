"""Name registries for components.

A component is a plain function registered under a name. Registries give errors that list the valid
names, and can check keyword arguments against a component's signature before any work is done.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Registry", "UnknownComponentError"]

# keyword arguments that the trainer itself supplies; they are not user knobs
RESERVED = frozenset({"stats"})


class UnknownComponentError(KeyError):
    """Raised when a name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry:
    """A mapping from names to components of one kind (advantage estimators, objectives, ...).

    ``needs`` declares the optional inputs a component requires beyond the basics (for example
    ``{"ref_logp"}``); the trainer computes an optional input only when a chosen component needs it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, *, needs: Iterable[str] = ()) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            fn.needs = frozenset(needs)  # type: ignore[attr-defined]
            fn.registry_name = name  # type: ignore[attr-defined]
            self._items[name] = fn
            return fn

        return deco

    def __getitem__(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def knobs(self, name: str) -> dict[str, Any]:
        """Keyword-only parameters of a component with their defaults (its tunable knobs)."""
        sig = inspect.signature(self[name])
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in RESERVED
        }

    def needs(self, name: str) -> frozenset[str]:
        return self[name].needs  # type: ignore[attr-defined]
