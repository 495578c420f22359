"""Recipes load, round-trip, and every bad value is refused with the field named."""

from __future__ import annotations

import tomllib

import pytest

from rlvr.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    recipe_names,
)
from rlvr.train.trainer import build_components


def test_shipped_recipes_load_and_round_trip():
    assert {"grpo", "dr_grpo", "rloo"} <= set(recipe_names())
    for name in recipe_names():
        cfg = load_config(name)
        assert cfg.name == name
        assert config_from_dict(tomllib.loads(cfg.to_toml())) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.max_tokens=3", "unknown field 'rollout.max_tokens'; valid fields: "),
        ("optim.lr='fast'", "'optim.lr' must be float"),
        ("optim.lr=-1e-4", "'optim.lr' = -0.0001 is out of range; expected > 0"),
        ("rollout.top_p=0", "'rollout.top_p' = 0.0 is out of range"),
        ("rollout.samples_per_prompt=1", "needs at least 2 samples per prompt"),
        ("algo.minibatches=3", "must divide the batch of B*G = 64"),
        ("algo.advantage='nope'", "valid names: dr_grpo, grpo, rloo"),
        ("algo.clip_hi=0.3", "their knobs: clip_high, clip_low, dual_clip, eps, scale"),
        ("rewards.nope.weight=1", "'rewards.nope': unknown reward; valid names: answer, format"),
        ("rewards.answer.strict=true", "'rewards.answer.strict' is not a knob"),
        ("train.steps=-1", "'train.steps' = -1 is out of range"),
        ("optim.beta2=1.0", "'optim.beta2' = 1.0 is out of range"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("grpo", [override])
    assert message in str(err.value)


def test_overrides_parse_toml_values():
    d = apply_overrides({}, ["a.b=3", "a.c=0.5", "a.d=true", "a.e='x'", "a.f=bare", "g=[1, 2]"])
    assert d == {"a": {"b": 3, "c": 0.5, "d": True, "e": "x", "f": "bare"}, "g": [1, 2]}
    with pytest.raises(ConfigError, match=r"section\.field=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_knobs_are_routed_to_the_component_that_takes_them():
    cfg = load_config("grpo", ["algo.clip_high=0.28", "algo.scale='batch'"])
    kw = build_components(cfg).kwargs
    assert kw["objective"] == {"clip_high": 0.28}
    assert kw["advantage"] == {"scale": "batch"}
    assert kw["aggregation"] == {} and kw["kl"] == {}


def test_yaml_recipe_equals_toml(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "name: mine\nalgo:\n  advantage: rloo\n  objective: reinforce\noptim:\n  lr: 0.0002\n"
    )
    (tmp_path / "r.toml").write_text(
        'name = "mine"\n[algo]\nadvantage = "rloo"\nobjective = "reinforce"\n[optim]\nlr = 2e-4\n'
    )
    assert load_config(str(tmp_path / "r.yaml")) == load_config(str(tmp_path / "r.toml"))


def test_missing_and_unknown_recipes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="shipped recipes: dr_grpo, grpo, rloo"):
        load_config("nope")
    (tmp_path / "bad.toml").write_text("[algo\n")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config(str(tmp_path / "bad.toml"))
