"""Step-dependent run settings: the recipe's ``[schedule]`` table.

Each key is a dotted config field, each value the curve it follows over the training steps::

    [schedule]
    "rollout.max_new_tokens" = [[1, 96], [100, 48]]                # linear through the points
    "rewards.format.weight" = {points = [[1, 0.5], [50, 0.0]], kind = "cosine"}
    "shaping.overlong.buffer" = {points = [[1, 8], [20, 4], [40, 2]], kind = "step"}

A curve is a list of ``[step, value]`` points with strictly increasing steps (>= 1), or a table with
those ``points`` and a ``kind``:

- ``linear`` (default): straight lines between consecutive points;
- ``cosine``: between points (s0, v0) and (s1, v1), v0 + (v1 - v0) (1 - cos(pi p)) / 2 with
  p = (step - s0) / (s1 - s0), a smooth start and end;
- ``step``: the value of the last point at or before the step (piecewise constant).

Before the first point the curve holds the first value, after the last point the last value. An
integer field (``rollout.max_new_tokens``, an int knob) takes integer points, and an interpolated value
is rounded to the nearest integer (halves up). The value is a pure function of the step, so a resumed
run computes the same values with no state of its own.

Schedulable fields (:func:`schedule_fields` checks them when the recipe loads):

- ``rollout.max_new_tokens``: the cap of the step's training rollouts (and the ``max_len`` that reward
  shaping and group filters see); an asynchronous rollout uses the value of the step that starts it;
- ``rewards.NAME.weight``: a reward component's weight in the combined reward (and in the
  ``reward_weights`` an estimator may read);
- ``shaping.NAME.KNOB``: a numeric knob of a chosen reward shaping;
- ``algo.KNOB``: a numeric knob of the chosen algorithm components (routed to each that takes it);
- ``algo.beta``: the KL coefficient (not with ``algo.kl_target``, which adapts it);
  ``algo.entropy_coef``: the entropy bonus.

The learning rate has its own schedule (``optim.schedule``, :func:`rlvr.train.learner.lr_at`) and is
not schedulable here. Each step the trainer writes every scheduled value to the run's components
(:class:`Schedule`) and logs it as ``schedule/FIELD``. With no ``[schedule]`` nothing is computed.

Weights that depend on the run's own progress rather than on the step come from a reward-weight
controller (``[reward_weights]``, :class:`RewardWeights`): its state is part of the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlvr.registry import in_bounds

__all__ = [
    "KINDS",
    "Curve",
    "RewardWeights",
    "Schedule",
    "ScheduleError",
    "bind_reward_weights",
    "bind_schedule",
    "flatten_schedule",
    "parse_curve",
    "schedule_fields",
]

KINDS = ("linear", "cosine", "step")
FIXED = {  # config fields (not component knobs) that may be scheduled
    "rollout.max_new_tokens",
    "algo.beta",
    "algo.entropy_coef",
}


@dataclass(frozen=True)
class Curve:
    """A piecewise curve through ``points`` ((step, value), steps strictly increasing)."""

    points: tuple[tuple[int, float], ...]
    kind: str = "linear"
    integer: bool = False

    def __call__(self, step: int) -> float | int:
        """The value at ``step``: the first value before the first point, the last after the last."""
        pts = self.points
        if step <= pts[0][0]:
            v = pts[0][1]
        elif step >= pts[-1][0]:
            v = pts[-1][1]
        else:
            k = next(i for i in range(1, len(pts)) if step < pts[i][0])
            (s0, v0), (s1, v1) = pts[k - 1], pts[k]
            p = (step - s0) / (s1 - s0)
            if self.kind == "step":
                v = v0
            elif self.kind == "cosine":
                v = v0 + (v1 - v0) * (1 - math.cos(math.pi * p)) / 2
            else:
                v = v0 + (v1 - v0) * p
        return math.floor(v + 0.5) if self.integer else float(v)


def flatten_schedule(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``[schedule]`` with dotted keys, whether written quoted (``"rollout.max_new_tokens" = ...``) or
    as nested tables (``rollout.max_new_tokens = ...`` in TOML, or an override
    ``schedule.rollout.max_new_tokens=...``): a table without ``points`` is a level of the name."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "points" not in value:
            out.update(flatten_schedule(value, f"{name}."))
        else:
            out[name] = value
    return out


class ScheduleError(ValueError):
    """A ``[schedule]`` entry that cannot be used (the message names the field)."""


def parse_curve(field: str, spec: Any, *, integer: bool, bound: str | None) -> Curve:
    """The curve of ``schedule.FIELD`` from its recipe value; errors name the field."""
    where = f"'schedule.{field}'"
    kind = "linear"
    if isinstance(spec, dict):
        extra = sorted(set(spec) - {"points", "kind"})
        if extra:
            raise ScheduleError(f"{where}: unknown key(s) {', '.join(extra)}; expected points, kind")
        kind = spec.get("kind", "linear")
        if kind not in KINDS:
            raise ScheduleError(f"{where}: kind = {kind!r}; expected one of {', '.join(KINDS)}")
        spec = spec.get("points")
    if not isinstance(spec, list) or not spec:
        raise ScheduleError(
            f"{where} must be a non-empty list of [step, value] points (or a table with points and "
            f"kind), got {spec!r}"
        )
    points: list[tuple[int, float]] = []
    for pt in spec:
        if not (isinstance(pt, list | tuple) and len(pt) == 2):
            raise ScheduleError(f"{where}: each point must be [step, value], got {pt!r}")
        step, value = pt
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ScheduleError(f"{where}: a point's step must be an integer >= 1, got {step!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScheduleError(f"{where}: a point's value must be a number, got {value!r}")
        if integer and not isinstance(value, int):
            raise ScheduleError(
                f"{where} is an integer field: value {value!r} at step {step} is not an integer"
            )
        if not math.isfinite(value):
            raise ScheduleError(f"{where}: value {value!r} at step {step} is not finite")
        if bound is not None and not in_bounds(value, bound):
            raise ScheduleError(
                f"{where}: value {value!r} at step {step} is out of range; expected {bound}"
            )
        if points and step <= points[-1][0]:
            raise ScheduleError(
                f"{where}: steps must increase; step {step} follows step {points[-1][0]}"
            )
        points.append((step, value))
    return Curve(tuple(points), kind, integer)


def _numeric(hint: Any) -> str | None:
    """'int', 'float' or None (not a number) for a type hint."""
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # e.g. float | None
        args = {a for a in typing.get_args(hint) if a is not type(None)}
        if args in ({float}, {int, float}):
            return "float"
        if args == {int}:
            return "int"
    return None


def _field_bound(cfg: Any, section: str, name: str) -> tuple[Any, str | None]:
    """The type hint and declared bound of config field ``section.name``."""
    sec = getattr(cfg, section)
    f = next(f for f in dataclasses.fields(sec) if f.name == name)
    return typing.get_type_hints(type(sec))[name], f.metadata.get("bounds")


def schedule_fields(cfg: Any) -> dict[str, Curve]:
    """Every ``[schedule]`` entry of ``cfg`` checked against the recipe -> field -> curve.

    Refuses an unknown field, a field that is not a number, a value of the wrong type or out of the
    field's (or knob's) range, and non-increasing steps, naming the field."""
    from rlvr.algos import SHAPING
    from rlvr.registry import KnobError
    from rlvr.train.config import chosen_components

    out: dict[str, Curve] = {}
    for fld, spec in flatten_schedule(cfg.schedule).items():
        parts = fld.split(".")
        where = f"'schedule.{fld}'"
        checks: list[Callable[[float], None]] = []
        if fld in FIXED:
            hint, bound = _field_bound(cfg, parts[0], parts[1])
            kind = _numeric(hint)
        elif parts[0] == "rewards" and len(parts) == 3 and parts[2] == "weight":
            if parts[1] not in cfg.rewards:
                raise ScheduleError(
                    f"{where}: the recipe has no reward {parts[1]!r}; its rewards: "
                    f"{', '.join(cfg.rewards) or 'none'}"
                )
            kind, bound = "float", None
        elif parts[0] == "shaping" and len(parts) == 3:
            name, knob = parts[1], parts[2]
            if name not in cfg.shaping:
                raise ScheduleError(
                    f"{where}: the recipe has no shaping {name!r}; its shapings: "
                    f"{', '.join(cfg.shaping) or 'none'}"
                )
            if knob not in SHAPING.knobs(name):
                raise ScheduleError(
                    f"{where}: {knob!r} is not a knob of shaping {name!r}; its knobs: "
                    f"{', '.join(sorted(SHAPING.knobs(name)))}"
                )
            kind, bound = _numeric(typing.get_type_hints(SHAPING[name]).get(knob)), None
            checks.append(lambda v, n=name, k=knob: SHAPING.check_knobs(n, {k: v}))
        elif parts[0] == "algo" and len(parts) == 2:
            knob = parts[1]
            chosen = chosen_components(cfg.algo).values()
            takers = [(reg, name) for reg, name in chosen if knob in reg.knobs(name)]
            if not takers:
                raise ScheduleError(
                    f"{where}: {knob!r} is not a schedulable field of [algo] (beta, entropy_coef) "
                    "nor a knob of the chosen components "
                    f"({', '.join(n for _, n in chosen_components(cfg.algo).values())})"
                )
            kinds = {_numeric(typing.get_type_hints(reg[name]).get(knob)) for reg, name in takers}
            kind = kinds.pop() if len(kinds) == 1 else None
            bound = None
            for reg, name in takers:
                checks.append(lambda v, r=reg, n=name, k=knob: r.check_knobs(n, {k: v}))
        else:
            raise ScheduleError(
                f"unknown field {where}; schedulable: rollout.max_new_tokens, algo.beta, "
                "algo.entropy_coef, algo.KNOB (a knob of a chosen component), rewards.NAME.weight, "
                "shaping.NAME.KNOB (the learning rate: optim.schedule)"
            )
        if kind is None:
            raise ScheduleError(f"{where}: only a numeric field can be scheduled")
        curve = parse_curve(fld, spec, integer=kind == "int", bound=bound)
        for step, value in curve.points:
            for check in checks:
                try:
                    check(value)
                except KnobError as err:
                    raise ScheduleError(f"{where} at step {step}: {err}") from None
        out[fld] = curve
    _dry_run_shaping(cfg, out)
    if "algo.beta" in out and cfg.algo.kl_target > 0:
        raise ScheduleError(
            "'schedule.algo.beta': the KL coefficient adapts with algo.kl_target > 0; schedule one "
            "or the other"
        )
    return out


def _dry_run_shaping(cfg: Any, curves: dict[str, Curve]) -> None:
    """Each shaping whose knobs or budget (``max_len``) are scheduled, run on a dummy group at every
    point of those curves with the values of that step: catches a scheduled knob that conflicts
    with the rest of the recipe (an overlong buffer above the step's cap) when the recipe loads."""
    import torch

    from rlvr.algos import SHAPING

    cap = curves.get("rollout.max_new_tokens")
    for name, spec in cfg.shaping.items():
        own = {f: c for f, c in curves.items() if f.startswith(f"shaping.{name}.")}
        fn = SHAPING[name]
        if not own and not (cap is not None and "max_len" in fn.needs):  # type: ignore[attr-defined]
            continue
        steps = sorted({s for c in [*own.values(), cap] if c is not None for s, _ in c.points})
        for step in steps:
            knobs = dict(spec) | {f.rsplit(".", 1)[1]: c(step) for f, c in own.items()}
            dummy = {
                "lengths": torch.tensor([[1.0, 2.0]]),
                "correct": torch.tensor([[1.0, 0.0]]),
                "max_len": cap(step) if cap is not None else cfg.rollout.max_new_tokens,
            }
            try:
                fn(torch.tensor([[1.0, 0.0]]), **{k: dummy[k] for k in fn.needs}, **knobs)  # type: ignore[attr-defined]
            except (ValueError, TypeError) as err:
                raise ScheduleError(f"'shaping.{name}' at step {step} of [schedule]: {err}") from None


class Schedule:
    """The run's scheduled fields, bound to the objects that read them.

    ``setters`` maps each field to the function that writes its value into the run (a reward weight
    into the scorer's and the estimator's weight vectors, a knob into the components' keyword
    arguments, ...); calling the schedule at a step writes every value and returns the metrics
    ``{"schedule/FIELD": value}``. With no curves it does nothing and returns {}.
    """

    def __init__(
        self, curves: dict[str, Curve], setters: dict[str, Callable[[float | int], None]]
    ) -> None:
        self.curves, self.setters = curves, setters

    def __bool__(self) -> bool:
        return bool(self.curves)

    def values(self, step: int) -> dict[str, float | int]:
        """Each scheduled field's value at ``step``."""
        return {fld: curve(step) for fld, curve in self.curves.items()}

    def __call__(self, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for fld, value in self.values(step).items():
            self.setters[fld](value)
            out[f"schedule/{fld}"] = float(value)
        return out


def bind_schedule(
    cfg: Any, *, rounds: Any, advantages: Any, learner: Any, comps: Any, state: Any
) -> Schedule:
    """The run's :class:`Schedule`: each scheduled field of ``cfg`` with the setter that writes its
    value where the step reads it (the rounds' and the scorer's cap, the scorer's and the estimator's
    reward weights, a shaping's knobs, the components' routed knobs, the learner's entropy
    coefficient, the state's KL coefficient)."""
    from rlvr.train.config import chosen_components

    curves = schedule_fields(cfg)
    scorer = rounds.scorer
    setters: dict[str, Callable[[float | int], None]] = {}
    for fld in curves:
        parts = fld.split(".")
        if fld == "rollout.max_new_tokens":

            def cap(v: float | int) -> None:
                rounds.max_new_tokens = scorer.max_len = int(v)

            setters[fld] = cap
        elif fld == "algo.beta":
            setters[fld] = lambda v: setattr(state, "kl_coef", float(v))
        elif fld == "algo.entropy_coef":
            setters[fld] = lambda v: setattr(learner, "entropy_coef", float(v))
        elif parts[0] == "rewards":
            k = list(cfg.rewards).index(parts[1])

            def weight(v: float | int, k: int = k) -> None:
                scorer.weights[k] = float(v)  # [K]
                advantages.reward_weights[k] = float(v)  # [K]

            setters[fld] = weight
        elif parts[0] == "shaping":
            knobs = scorer.shapers[list(cfg.shaping).index(parts[1])][1]
            setters[fld] = lambda v, knobs=knobs, knob=parts[2]: knobs.__setitem__(knob, v)
        else:  # a knob of the chosen [algo] components, routed to each that takes it
            tables = [
                comps.kwargs[role]
                for role, (reg, name) in chosen_components(cfg.algo).items()
                if parts[1] in reg.knobs(name)
            ]

            def knob(v: float | int, tables: list[dict[str, Any]] = tables, key: str = parts[1]) -> None:
                for t in tables:
                    t[key] = v

            setters[fld] = knob
    return Schedule(curves, setters)


class RewardWeights:
    """The run's reward-weight controller (``[reward_weights]``, ``rlvr.algos.REWARD_WEIGHTS``)
    bound to the weight vectors the step reads (the scorer's and the estimator's).

    ``apply`` writes the weights of the controller's state (``TrainState.reward_weights``) before the
    step's rollouts are scored and returns them as metrics ``reward_weight/NAME`` (and the state's
    scalars, such as a stage, as ``reward_weights/KEY``); ``observe`` gives
    the controller the step batch's mean of each unweighted component and keeps its next state.
    Without a controller both do nothing.
    """

    def __init__(
        self,
        fn: Callable[..., dict[str, Any]] | None = None,
        knobs: dict[str, Any] | None = None,
        *,
        names: tuple[str, ...] = (),
        base: Any = None,
        scorer: Any = None,
        advantages: Any = None,
        state: Any = None,
    ) -> None:
        self.fn, self.knobs, self.names, self.base = fn, knobs or {}, names, base
        self.scorer, self.advantages, self.state = scorer, advantages, state

    def __bool__(self) -> bool:
        return self.fn is not None

    def apply(self) -> dict[str, float]:
        """This step's weights, written where the step reads them -> {reward_weight/NAME: w}."""
        if self.fn is None:
            return {}
        state = self.state.reward_weights
        w = state["weights"].float()  # [K]
        self.scorer.weights.copy_(w)  # [K]
        self.advantages.reward_weights.copy_(w.to(self.advantages.reward_weights.device))  # [K]
        out = {f"reward_weight/{n}": float(v) for n, v in zip(self.names, w.tolist(), strict=True)}
        for key, value in state.items():  # the controller's own scalars (a stage), when it has some
            if key != "weights" and value.numel() == 1:
                out[f"reward_weights/{key}"] = float(value)
        return out

    def observe(self, parts: Any) -> None:
        """Update the controller's state from the step batch's unweighted components ``parts``
        [N, K]: the next step's weights."""
        if self.fn is None:
            return
        means = parts.float().mean(dim=0).cpu()  # [K]
        self.state.reward_weights = self.fn(
            self.state.reward_weights, means, base=self.base, names=self.names, **self.knobs
        )


def bind_reward_weights(cfg: Any, *, scorer: Any, advantages: Any, state: Any) -> RewardWeights:
    """The run's :class:`RewardWeights` (one that does nothing without ``reward_weights.controller``)."""
    rw = cfg.reward_weights
    if not rw.controller:
        return RewardWeights()
    from rlvr.algos.reward_weights import REWARD_WEIGHTS

    return RewardWeights(
        REWARD_WEIGHTS[rw.controller],
        dict(rw.knobs),
        names=tuple(cfg.rewards),
        base=scorer.weights.clone(),  # [K] the recipe's weights
        scorer=scorer,
        advantages=advantages,
        state=state,
    )
