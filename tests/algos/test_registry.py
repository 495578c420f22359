"""Registry: error messages that list the valid names, knobs from signatures, needs, duplicates."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from rlvr.algos import ADVANTAGES, AGGREGATIONS, INPUTS, KL_ESTIMATORS, OBJECTIVES, TOKEN_WEIGHTS
from rlvr.registry import (
    KnobError,
    Registry,
    UnknownComponentError,
    describe_type,
    in_bounds,
    parse_bound,
    type_matches,
)
from rlvr.rollout.branch_points import BRANCH_POINTS


def _reg() -> Registry:
    reg = Registry("widget")

    @reg.register("beta")
    def beta(x):
        return x

    @reg.register("alpha", needs=["ref_logp", "values"])
    def alpha(x, *, ref_logp=None, values=None, gain: float = 2.0):
        return x

    @reg.register("gamma")
    def gamma(x, y=1, *, a: int = 3, b: str = "s", stats: dict | None = None):
        return x

    return reg


# ---------------------------------------------------------------- unknown names


def test_unknown_name_lists_valid_names_sorted():
    reg = _reg()
    with pytest.raises(UnknownComponentError) as info:
        reg["delta"]
    msg = str(info.value)
    assert msg == "unknown widget 'delta'; valid names: alpha, beta, gamma"
    # a KeyError, so `except KeyError` still works, but printed without KeyError's quotes
    assert isinstance(info.value, KeyError)
    assert not msg.startswith(("'", '"'))


@pytest.mark.parametrize(
    ("reg", "bad", "listed"),
    [
        (ADVANTAGES, "grpoo", ", ".join(ADVANTAGES.names())),
        (OBJECTIVES, "ppo", ", ".join(OBJECTIVES.names())),
        (AGGREGATIONS, "mean", "constant, seq_mean_token_mean, seq_mean_token_sum, token_mean"),
        (KL_ESTIMATORS, "k4", ", ".join(KL_ESTIMATORS.names())),
        (BRANCH_POINTS, "mcts", "entropy, low_prob, step, uniform, value"),
    ],
)
def test_real_registries_list_their_names(reg, bad, listed):
    with pytest.raises(UnknownComponentError, match=f"'{bad}'; valid names: {listed}$"):
        reg[bad]


def test_lookup_contains_iter_len_names():
    reg = _reg()
    assert "alpha" in reg and "delta" not in reg
    assert list(reg) == ["beta", "alpha", "gamma"]  # registration order
    assert reg.names() == ["alpha", "beta", "gamma"]  # sorted
    assert len(reg) == 3
    assert reg["beta"](7) == 7
    assert reg["alpha"].registry_name == "alpha"


def test_register_returns_the_function_unchanged():
    reg = Registry("thing")

    def f(x):
        return x + 1

    assert reg.register("f")(f) is f
    assert reg["f"] is f


# ---------------------------------------------------------------- knobs


def test_knobs_are_keyword_only_params_with_defaults_without_stats():
    reg = _reg()
    # gamma(x, y=1, *, a=3, b="s", stats=None): y is positional-or-keyword, stats is reserved
    assert reg.knobs("gamma") == {"a": 3, "b": "s"}
    assert reg.knobs("alpha") == {"gain": 2.0}
    assert reg.knobs("beta") == {}


def test_knobs_of_real_components():
    assert ADVANTAGES.knobs("grpo") == {"eps": 1e-6, "scale": "group"}
    assert ADVANTAGES.knobs("dr_grpo") == {}
    assert ADVANTAGES.knobs("rloo") == {}
    assert OBJECTIVES.knobs("ppo_clip") == {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}
    assert OBJECTIVES.knobs("reinforce") == {}  # only `stats`, which is reserved
    assert AGGREGATIONS.knobs("constant") == {"max_tokens": None}
    assert AGGREGATIONS.knobs("token_mean") == {}
    assert KL_ESTIMATORS.knobs("k3") == {}


def test_knobs_of_unknown_name_raises():
    with pytest.raises(UnknownComponentError, match="valid names"):
        ADVANTAGES.knobs("nope")


# ---------------------------------------------------------------- duplicates and needs


def test_duplicate_registration_raises_and_keeps_the_first():
    reg = Registry("thing")

    def first(x):
        return 1

    def second(x):
        return 2

    reg.register("a")(first)
    with pytest.raises(ValueError, match="'a' is registered twice"):
        reg.register("a")(second)
    assert reg["a"] is first
    assert len(reg) == 1


def test_needs_default_to_empty_frozenset():
    reg = _reg()
    assert reg.needs("beta") == frozenset()
    assert isinstance(reg.needs("beta"), frozenset)
    assert reg.needs("alpha") == frozenset({"ref_logp", "values"})
    assert isinstance(reg.needs("alpha"), frozenset)


@pytest.mark.parametrize(
    ("kind", "reg"),
    [
        ("advantage", ADVANTAGES),
        ("objective", OBJECTIVES),
        ("aggregation", AGGREGATIONS),
        ("kl", KL_ESTIMATORS),
        ("token_weights", TOKEN_WEIGHTS),
    ],
)
def test_real_components_need_only_what_the_trainer_supplies(kind, reg):
    for name in reg:
        assert reg.needs(name) <= INPUTS.get(kind, frozenset()), (kind, name)
    for name in ("grpo", "dr_grpo", "rloo", "ppo_clip", "reinforce", "token_mean", "k3", "none"):
        if name in reg:
            assert reg.needs(name) == frozenset()  # the defaults need nothing extra


# ---------------------------------------------------------------- knob values: types and bounds


@pytest.mark.parametrize(
    ("bound", "inside", "outside"),
    [
        ("> 1", [1.0001, 5], [1, 0.5, -3]),
        (">= 0", [0, 0.0, 7], [-1e-9]),
        ("< 2", [1.999, -5], [2, 3]),
        ("<= 2", [2, -1], [2.0001]),
        ("[0, 1)", [0, 0.5], [1, -0.1]),
        ("(0, 1]", [1, 1e-9], [0, 1.1]),
        ("(-inf, 1e-3]", [-1e30, 1e-3], [0.002]),
    ],
)
def test_parse_bound_hand_values(bound, inside, outside):
    ok = parse_bound(bound)
    assert all(ok(v) for v in inside)
    assert not any(ok(v) for v in outside)


@pytest.mark.parametrize("bad", ["1 <", "=> 1", "[0 1]", "between 0 and 1", ""])
def test_parse_bound_refuses_typos(bad):
    with pytest.raises(ValueError, match="bad bound"):
        parse_bound(bad)


def test_a_bad_bound_fails_at_registration():
    reg = Registry("widget")
    with pytest.raises(ValueError, match="bad bound"):
        reg.register("a", bounds={"k": "> one"})(lambda x, *, k=1: x)
    with pytest.raises(ValueError, match="bound for unknown knob 'kk'"):
        reg.register("b", bounds={"kk": "> 1"})(lambda x, *, k=1: x)


def test_check_knobs_types_literals_optionals_and_bounds():
    reg = Registry("widget")

    @reg.register("w", bounds={"c": "> 1", "n": ">= 1"})
    def w(
        x,
        *,
        flag: bool = False,
        rate: float = 0.1,
        n: int | None = None,
        c: float | None = None,
        mode: Literal["a", "b"] = "a",
        free=None,
    ):
        return x

    good = {"flag": True, "rate": 1, "n": None, "c": 2.5, "mode": "b", "free": [1, "x"]}
    reg.check_knobs("w", good)  # an int is a float; None fits an Optional; unannotated takes all
    bad = [
        ({"flag": "False"}, "'flag' of widget 'w' must be bool, got 'False'"),
        ({"flag": 1}, "must be bool, got 1"),
        ({"rate": True}, "'rate' of widget 'w' must be float, got True"),
        ({"n": 2.0}, "'n' of widget 'w' must be int or None, got 2.0"),
        ({"mode": "c"}, "'mode' of widget 'w' must be one of 'a', 'b', got 'c'"),
        ({"c": 1.0}, "'c' of widget 'w' = 1.0 is out of range; expected > 1"),
        ({"n": 0}, "'n' of widget 'w' = 0 is out of range; expected >= 1"),
        ({"c": float("nan")}, "= nan is out of range"),
        ({"nope": 1}, "'nope' is not a knob of widget 'w'; its knobs: c, flag, free, mode, n, rate"),
    ]
    for values, message in bad:
        with pytest.raises(KnobError) as err:
            reg.check_knobs("w", values)
        assert message in str(err.value)


def test_type_matches_and_in_bounds_shared_with_the_config():
    assert type_matches({}, dict[str, Any]) and not type_matches(3, dict[str, Any])
    assert type_matches(1, float) and not type_matches(True, float) and not type_matches(True, int)
    assert describe_type(dict[str, Any]) == "dict" and describe_type(int | None) == "int or None"
    assert in_bounds(1, "(0, 1]") and not in_bounds(0, "(0, 1]") and not in_bounds(float("nan"), ">= 0")


def test_real_component_bounds_hold_for_their_defaults():
    for reg in (ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, OBJECTIVES):
        for name in reg:
            reg.check_knobs(name, reg.knobs(name))  # every default is a valid value


def test_a_need_must_be_a_keyword_only_argument_and_is_not_a_knob():
    reg = Registry("widget")
    with pytest.raises(ValueError, match="needs 'entropy' but has no keyword-only argument"):
        reg.register("a", needs={"entropy"})(lambda x, *, k=1: x)
    with pytest.raises(ValueError, match="needs 'entropy'"):
        reg.register("b", needs={"entropy"})(lambda x, entropy=None: x)  # positional: refused

    @reg.register("c", needs={"entropy"})
    def c(x, *, entropy=None, k: float = 1.0):
        return x

    assert reg.knobs("c") == {"k": 1.0}
    with pytest.raises(KnobError, match="'entropy' is not a knob"):
        reg.check_knobs("c", {"entropy": 1.0})


def test_reimporting_the_same_function_replaces_its_entry():
    reg = Registry("thing")

    def make():
        def f(x):
            return x

        return f

    first, again = make(), make()  # same module and qualified name: a module imported twice
    reg.register("f")(first)
    reg.register("f")(again)
    assert reg["f"] is again and len(reg) == 1


def test_list_knobs_check_every_element():
    reg = Registry("thing")

    @reg.register("t")
    def t(x, *, paths: list[str] = (), weights: tuple[float, ...] = ()):
        return x

    reg.check_knobs("t", {"paths": ["a", "b"], "weights": [1, 0.5]})
    for bad in ({"paths": 3}, {"paths": ["a", 1]}, {"weights": ["x"]}):
        with pytest.raises(KnobError, match="list of"):
            reg.check_knobs("t", bad)
