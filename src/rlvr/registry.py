"""Name registries for components.

A component is a plain function registered under a name. Registries give errors that list the valid
names, and check knob values (keyword-only arguments) against a component's type hints and declared
bounds before any work is done, so a bad value fails when the recipe loads, not at the first update.
The same type and bound checks (:func:`type_matches`, :func:`in_bounds`) check the recipe's own fields
in ``rlvr.train.config``.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "KnobError",
    "Registry",
    "UnknownComponentError",
    "describe_type",
    "in_bounds",
    "parse_bound",
    "type_matches",
]

# keyword arguments that the trainer itself supplies; they are not user knobs
RESERVED = frozenset({"stats"})


class UnknownComponentError(KeyError):
    """Raised when a name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class KnobError(ValueError):
    """A knob value of the wrong type or out of its component's declared bounds."""


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf"
_REL = re.compile(rf"^\s*(>=|<=|>|<)\s*({_NUM})\s*$")
_INTERVAL = re.compile(rf"^\s*([\[(])\s*({_NUM})\s*,\s*({_NUM})\s*([\])])\s*$")


@functools.cache
def parse_bound(text: str) -> Callable[[float], bool]:
    """A predicate from a bound: ``"> 1"``, ``">= 0"``, ``"< 1"``, ``"<= 1"`` or ``"[0, 1)"``."""
    if m := _REL.match(text):
        op, x = m.group(1), float(m.group(2))
        return {
            ">": lambda v: v > x,
            ">=": lambda v: v >= x,
            "<": lambda v: v < x,
            "<=": lambda v: v <= x,
        }[op]
    if m := _INTERVAL.match(text):
        lo, hi = float(m.group(2)), float(m.group(3))
        lo_ok = (lambda v: v >= lo) if m.group(1) == "[" else (lambda v: v > lo)
        hi_ok = (lambda v: v <= hi) if m.group(4) == "]" else (lambda v: v < hi)
        return lambda v: lo_ok(v) and hi_ok(v)
    raise ValueError(f"bad bound {text!r}; write '> x', '>= x', '< x', '<= x' or '[a, b)'")


def in_bounds(value: float, bound: str) -> bool:
    """Whether ``value`` lies within ``bound`` (see :func:`parse_bound`); NaN never does."""
    return not (isinstance(value, float) and math.isnan(value)) and parse_bound(bound)(value)


def type_matches(value: Any, hint: Any) -> bool:
    """Whether a value (as parsed from TOML/YAML) fits a type hint. Unknown hints accept.

    ``bool`` takes only true/false, ``int`` no bools, ``float`` ints too; ``Literal[...]`` its listed
    values; ``list[X]`` / ``tuple[X, ...]`` check every element; other generics (``dict[str, Any]``)
    check the container only.
    """
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):  # list[str], tuple[float, ...]: the container and every element
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return (
            isinstance(value, list | tuple) and all(type_matches(v, args[0]) for v in value)
            if args
            else True
        )
    if isinstance(origin, type):  # dict[str, Any], set[int], ...: the container only
        return isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe_type(hint: Any) -> str:
    """A type hint in words for an error message: ``float``, ``int or None``, ``one of 'a', 'b'``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (list, tuple) and typing.get_args(hint):
        return f"a list of {describe_type(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def _origin(fn: Callable) -> tuple[Any, ...]:
    """Where a function was defined: module, qualified name, file and first line."""
    code = getattr(fn, "__code__", None)
    where = (code.co_filename, code.co_firstlineno) if code is not None else (id(fn),)
    return (fn.__module__, fn.__qualname__, *where)


class Registry:
    """A mapping from names to components of one kind (advantage estimators, objectives, ...).

    ``needs`` declares the optional inputs a component requires beyond the basics (for example
    ``{"ref_logp"}``); each one is a keyword-only argument of the component, which the trainer
    computes and passes only when a chosen component needs it. Needed inputs are not knobs.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(
        self,
        name: str,
        *,
        needs: Iterable[str] = (),
        bounds: Mapping[str, str] | None = None,
        group_free: bool = False,
    ) -> Callable[[Callable], Callable]:
        """Register a component. ``bounds`` maps a numeric knob to its valid range, e.g.
        ``{"dual_clip": "> 1", "clip_low": "[0, 1)"}``; ``None`` values are not bound-checked.
        ``group_free`` marks an advantage estimator (or credit assigner) that never compares a
        prompt's samples with each other, so a run may sample one completion per prompt (G = 1)."""

        def deco(fn: Callable) -> Callable:
            old = self._items.get(name)
            # the same source imported again (a plugin loaded twice) replaces its own entry
            if old is not None and _origin(old) != _origin(fn):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            fn.needs = frozenset(needs)  # type: ignore[attr-defined]
            params = inspect.signature(fn).parameters
            for extra in fn.needs:  # type: ignore[attr-defined]
                if extra not in params or params[extra].kind is not inspect.Parameter.KEYWORD_ONLY:
                    raise ValueError(
                        f"{self.kind} {name!r} needs {extra!r} but has no keyword-only argument "
                        "of that name to receive it"
                    )
            fn.registry_name = name  # type: ignore[attr-defined]
            fn.group_free = group_free  # type: ignore[attr-defined]
            fn.bounds = dict(bounds or {})  # type: ignore[attr-defined]
            for knob, text in fn.bounds.items():  # type: ignore[attr-defined]
                parse_bound(text)  # a typo in a bound fails at import, not at use
                if knob not in self._knob_params(fn):
                    raise ValueError(f"{self.kind} {name!r}: bound for unknown knob {knob!r}")
            self._items[name] = fn
            return fn

        return deco

    @staticmethod
    def _knob_params(fn: Callable) -> dict[str, inspect.Parameter]:
        """Keyword-only parameters that are neither reserved nor inputs the component ``needs``."""
        supplied = RESERVED | getattr(fn, "needs", frozenset())
        return {
            p.name: p
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in supplied
        }

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
        return {k: p.default for k, p in self._knob_params(self[name]).items()}

    def check_knobs(self, name: str, values: Mapping[str, Any]) -> None:
        """Raise :class:`KnobError` unless every value fits its knob's type hint and bounds.

        Types come from the component's annotations (``bool`` takes only true/false, so the string
        ``'False'`` is refused; ``float`` takes ints; ``Literal[...]`` takes its listed values).
        """
        fn = self[name]
        params = self._knob_params(fn)
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, TypeError):  # an annotation that cannot be resolved: check bounds only
            hints = {}
        for knob, value in values.items():
            if knob not in params:
                raise KnobError(
                    f"{knob!r} is not a knob of {self.kind} {name!r}; "
                    f"its knobs: {', '.join(sorted(params)) or 'none'}"
                )
            hint = hints.get(knob, inspect.Parameter.empty)
            if not type_matches(value, hint):
                raise KnobError(
                    f"{knob!r} of {self.kind} {name!r} must be {describe_type(hint)}, got {value!r}"
                )
            bound = fn.bounds.get(knob)  # type: ignore[attr-defined]
            if bound is not None and value is not None and not in_bounds(value, bound):
                raise KnobError(
                    f"{knob!r} of {self.kind} {name!r} = {value!r} is out of range; expected {bound}"
                )

    def needs(self, name: str) -> frozenset[str]:
        return self[name].needs  # type: ignore[attr-defined]
