"""Reward-weight controllers: hand values, the neutral setting, a plain loop, errors."""

from __future__ import annotations

import pytest
import torch

from rlvr.algos import REWARD_WEIGHTS
from rlvr.algos.reward_weights import lagrange, readiness
from rlvr.registry import KnobError

NAMES = ("answer", "format", "length")


def test_registry():
    assert REWARD_WEIGHTS.names() == ["lagrange", "readiness"]
    assert REWARD_WEIGHTS.needs("lagrange") == {"base", "names"}
    assert set(REWARD_WEIGHTS.knobs("lagrange")) == {"at_most", "at_least", "lr"}
    with pytest.raises(KnobError, match="lr"):
        REWARD_WEIGHTS.check_knobs("lagrange", {"lr": 0.0})


def test_lagrange_hand_values():
    base = torch.tensor([1.0, 0.1, 0.0])
    state = {"weights": base}
    knobs = {"at_most": {"format": 0.5}, "at_least": {"length": 0.4}, "lr": 0.5}
    seen = []
    for means in ([0.2, 0.9, 0.0], [0.2, 0.9, 0.2], [0.2, 0.1, 0.6], [0.2, 0.1, 0.6], [0.2, 0.1, 0.6]):
        state = lagrange(state, torch.tensor(means), base=base, names=NAMES, **knobs)
        seen.append(state["weights"].tolist())
    # format (at most 0.5): lambda 0.2, 0.4, 0.2, 0, 0 -> w = 0.1 - lambda
    # length (at least 0.4, base 0): lambda 0.2, 0.3, 0.2, 0.1, 0 -> w = lambda
    # answer: unconstrained, its base weight throughout
    want = [[1.0, -0.1, 0.2], [1.0, -0.3, 0.3], [1.0, -0.1, 0.2], [1.0, 0.1, 0.1], [1.0, 0.1, 0.0]]
    for got, w in zip(seen, want, strict=True):
        assert got == pytest.approx(w, abs=1e-6)


def test_lagrange_without_constraints_keeps_the_recipe_weights():
    base = torch.tensor([1.0, 0.1, 0.3])
    state = {"weights": base}
    for seed in range(3):
        means = torch.rand(3, generator=torch.Generator().manual_seed(seed))
        state = lagrange(state, means, base=base, names=NAMES)
        assert torch.equal(state["weights"], base)
    # a constraint that holds leaves its weight at the base
    out = lagrange(
        {"weights": base},
        torch.tensor([0.0, 0.2, 0.9]),
        base=base,
        names=NAMES,
        at_most={"format": 0.5},
        at_least={"length": 0.4},
    )
    assert torch.equal(out["weights"], base)


def _loop(w, means, base, upper, lower, lr):
    out = []
    for k in range(len(w)):
        if k in upper:
            lam = max(0.0, max(0.0, base[k] - w[k]) + lr * (means[k] - upper[k]))
            out.append(base[k] - lam)
        elif k in lower:
            lam = max(0.0, max(0.0, w[k] - base[k]) + lr * (lower[k] - means[k]))
            out.append(base[k] + lam)
        else:
            out.append(base[k])
    return out


@pytest.mark.parametrize("seed", range(4))
def test_lagrange_vectorised_equals_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    names = tuple(f"r{k}" for k in range(6))
    base = torch.rand(6, generator=gen)
    upper, lower = {0: 0.3, 2: 0.6}, {3: 0.5, 5: 0.2}
    state = {"weights": base}
    w = base.tolist()
    for _ in range(5):
        means = torch.rand(6, generator=gen)
        state = lagrange(
            state,
            means,
            base=base,
            names=names,
            at_most={names[k]: v for k, v in upper.items()},
            at_least={names[k]: v for k, v in lower.items()},
            lr=0.7,
        )
        w = _loop(w, means.tolist(), base.tolist(), upper, lower, 0.7)
        assert state["weights"].tolist() == pytest.approx(w, abs=1e-6)


def test_lagrange_errors():
    base = torch.ones(3)
    with pytest.raises(ValueError, match="'nope' is not a reward component"):
        lagrange({"weights": base}, base, base=base, names=NAMES, at_most={"nope": 1.0})
    with pytest.raises(ValueError, match="format both at_most and at_least"):
        lagrange(
            {"weights": base},
            base,
            base=base,
            names=NAMES,
            at_most={"format": 1.0},
            at_least={"format": 0.0},
        )


# ---------------------------------------------------------------- readiness

STAGED = {
    "stages": [{"dense": 0.5, "strict": 0.5}, {"dense": 0.0, "strict": 1.0}],
    "track": "dense",
    "threshold": 0.6,
    "window": 2,
}


def test_readiness_hand_values():
    names, base = ("dense", "strict"), torch.tensor([1.0, 0.0])
    state = {"weights": base}
    seen = []
    for m in (0.7, 0.8, 0.9, 0.5, 0.7, 0.9, 0.9):
        state = readiness(state, torch.tensor([m, 0.0]), base=base, names=names, **STAGED)
        seen.append((int(state["stage"][0]), state["weights"].tolist()))
    assert seen == [
        (0, [1.0, 0.0]),  # the window is not full yet
        (1, [0.5, 0.5]),  # full, mean 0.75 >= 0.6, 0.8 >= 0.7: the next stage; the window restarts
        (1, [0.5, 0.5]),  # not full
        (1, [0.5, 0.5]),  # mean 0.7 >= 0.6 but falling (0.5 < 0.9)
        (2, [0.0, 1.0]),  # mean 0.6, rising
        (2, [0.0, 1.0]),  # the last stage stays
        (2, [0.0, 1.0]),
    ]


def test_readiness_below_threshold_never_advances_and_no_stages_is_the_recipe():
    names, base = ("dense", "strict"), torch.tensor([1.0, 0.0])
    state = {"weights": base}
    for m in (0.5, 0.55, 0.59, 0.59, 0.5):
        state = readiness(state, torch.tensor([m, 1.0]), base=base, names=names, **STAGED)
        assert int(state["stage"][0]) == 0 and torch.equal(state["weights"], base)
    out = readiness({"weights": base}, torch.ones(2), base=base, names=names)
    assert torch.equal(out["weights"], base)
    # window 1: one step above the threshold is enough (no trend to compare)
    one = readiness(
        {"weights": base}, torch.tensor([0.7, 0.0]), base=base, names=names, **(STAGED | {"window": 1})
    )
    assert int(one["stage"][0]) == 1


def test_readiness_errors():
    names, base = ("dense", "strict"), torch.ones(2)
    with pytest.raises(ValueError, match="track = 'nope' is not a reward component"):
        readiness({"weights": base}, base, base=base, names=names, **(STAGED | {"track": "nope"}))
    with pytest.raises(ValueError, match=r"stages\[1\] names 'iou'"):
        bad = {"stages": [{"dense": 0.5}, {"iou": 1.0}], "track": "dense"}
        readiness({"weights": base}, base, base=base, names=names, **bad)
    with pytest.raises(ValueError, match=r"stages\[0\].dense = 'x' is not a number"):
        readiness(
            {"weights": base}, base, base=base, names=names, stages=[{"dense": "x"}], track="dense"
        )
    with pytest.raises(KnobError, match="window"):
        REWARD_WEIGHTS.check_knobs("readiness", {"window": 0})
