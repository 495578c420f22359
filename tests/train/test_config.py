"""Recipes load, round-trip, and every bad value is refused with the field named."""

from __future__ import annotations

import re
import tomllib

import pytest
import torch

from rlvr.algos import ADVANTAGES, KL_ESTIMATORS
from rlvr.train.components import build_components
from rlvr.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    recipe_names,
)


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
        ("algo.advantage='nope'", "valid names: " + ", ".join(ADVANTAGES.names())),
        ("algo.clip_hi=0.3", "their knobs: clip_high, clip_low, dual_clip, eps, scale"),
        (
            "rewards.nope.weight=1",
            "'rewards.nope': unknown reward; valid names: answer, arith_steps, code, ensemble, env, "
            "env_success, exact_match, format",
        ),
        ("rewards.answer.strict=true", "'rewards.answer.strict' is not a knob"),
        ("train.steps=-1", "'train.steps' = -1 is out of range"),
        ("optim.beta2=1.0", "'optim.beta2' = 1.0 is out of range"),
        ("algo.kl_in='advantage'", "'algo.kl_in' = 'advantage'; expected 'loss' or 'reward'"),
        ("algo.kl_target=0.1", "'algo.kl_target' > 0 adapts the KL coefficient"),
        ("algo.ref_reset_every=-1", "'algo.ref_reset_every' = -1 is out of range"),
        ("algo.kl_horizon=0", "'algo.kl_horizon' = 0 is out of range"),
        ("optim.schedule='step'", "'optim.schedule' = 'step'; expected one of 'constant', 'linear'"),
        ("optim.min_lr_ratio=2", "'optim.min_lr_ratio' = 2.0 is out of range; expected in [0, 1]"),
        ("train.steps=true", "'train.steps' must be int, got True"),  # bool is not an int
        ("train.steps=2.5", "'train.steps' must be int, got 2.5"),
        ("rollout.temperature='hot'", "'rollout.temperature' must be float"),
        ("eval.before=1", "'eval.before' must be bool, got 1"),
        ("task.name=3", "'task.name' must be str, got 3"),
        ("task.kwargs=3", "'task.kwargs' must be dict"),
        ("optim=3", "'optim' must be a table (section), got 3"),
        (
            "nosection.x=1",
            "unknown field 'nosection'; valid fields: name, description, paper, model, teacher, task",
        ),
        ("rollout.temperature=0", "'rollout.temperature' = 0.0 is out of range; expected > 0"),
        ("rollout.top_p=1.5", "'rollout.top_p' = 1.5 is out of range; expected in (0, 1]"),
        ("eval.top_p=0", "'eval.top_p' = 0.0 is out of range"),
        ("eval.temperature=-1", "'eval.temperature' = -1.0 is out of range"),
        ("algo.beta=-0.1", "'algo.beta' = -0.1 is out of range; expected >= 0"),
        ("algo.micro_batches=0", "'algo.micro_batches' = 0 is out of range"),
        ("algo.micro_batches=3", "= 3 must divide the batch of B*G = 64 sequences"),
        ("optim.weight_decay=-1", "'optim.weight_decay' = -1.0 is out of range"),
        ("task.heldout_size=0", "'task.heldout_size' = 0 is out of range"),
        ("algo.objective='ppo'", "'algo.objective': unknown objective 'ppo'; valid names: "),
        (
            "algo.kl='k9'",
            "'algo.kl': unknown KL estimator 'k9'; valid names: " + ", ".join(KL_ESTIMATORS.names()),
        ),
        ("rewards.answer.weight='big'", "'rewards.answer.weight' must be a number, got 'big'"),
        ("rewards.format.partial_credit=true", "its knobs: none"),
        ("rewards.answer=1", "'rewards.answer' must be a table"),
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
    with pytest.raises(ConfigError, match="shipped recipes: " + ", ".join(recipe_names())):
        load_config("nope")
    (tmp_path / "bad.toml").write_text("[algo\n")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config(str(tmp_path / "bad.toml"))


# --------------------------------------------------------------------------------------------------
# more: defaults, types, knobs, overrides, file formats


def test_default_recipe_is_grpo_and_round_trips_with_knobs():
    cfg = load_config()
    assert cfg == load_config("grpo") and cfg.name == "grpo"
    assert (cfg.algo.advantage, cfg.algo.objective, cfg.algo.aggregation) == (
        "grpo",
        "ppo_clip",
        "token_mean",
    )
    assert cfg.algo.knobs == {}
    tuned = load_config("grpo", ["algo.clip_high=0.28", "rewards.answer.partial_credit=true"])
    text = tuned.to_toml()
    assert "clip_high = 0.28" in text and "knobs" not in text  # knobs are written flat in [algo]
    again = config_from_dict(tomllib.loads(text))
    assert again == tuned
    assert again.algo.knobs == {"clip_high": 0.28}
    assert again.rewards["answer"] == {"weight": 1.0, "partial_credit": True}


def test_empty_dict_gives_the_dataclass_defaults():
    from rlvr.train.config import Config, validate

    assert config_from_dict({}) == validate(Config())


def test_every_declared_bound_is_checked_naming_the_field():
    import dataclasses

    from rlvr.registry import in_bounds
    from rlvr.train.config import Config, bounded

    declared = {
        f"{section.name}.{f.name}": f.metadata["bounds"]
        for section in dataclasses.fields(Config)
        if dataclasses.is_dataclass(section.default_factory)
        for f in dataclasses.fields(section.default_factory)
        if "bounds" in f.metadata
    }
    assert len(declared) == 66 and declared["optim.beta2"] == "[0, 1)"
    assert declared["scale.is_low"] == "[0, 1]" and declared["rollout.branch_max_prob"] == "(0, 1]"
    for path, bound in declared.items():  # the defaults lie within their bounds (config_from_dict({}))
        bad = next(v for v in (-1, 0) if not in_bounds(v, bound))
        with pytest.raises(
            ConfigError, match=re.escape(f"'{path}' = ") + ".* is out of range; expected"
        ):
            load_config("grpo", [f"{path}={bad}"])
    for override, message in [
        ("scale.staleness=-1", "'scale.staleness' = -1 is out of range; expected >= 0 (0: synchronous)"),
        (
            "sampling.replay_fraction=1",
            "'sampling.replay_fraction' = 1.0 is out of range; expected in [0, 1)",
        ),
        ("optim.lr=nan", "'optim.lr' = nan is out of range; expected > 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config("grpo", [override])
    with pytest.raises(ValueError, match="bad bound"):
        bounded(1, "=> 0")


def test_group_estimators_need_two_samples_but_others_may_not_exist():
    group_free = {name for name in ADVANTAGES.names() if ADVANTAGES[name].group_free}
    assert group_free == {"mssr"}
    for adv in sorted(set(ADVANTAGES.names()) - group_free):
        with pytest.raises(ConfigError, match=f"group estimator '{adv}'"):
            load_config("grpo", [f"algo.advantage='{adv}'", "rollout.samples_per_prompt=1"])
    with pytest.raises(ConfigError, match="group estimator 'tree_td'"):
        load_config("tempo", ["rollout.samples_per_prompt=1"])
    ok = load_config("grpo", ["rollout.samples_per_prompt=2", "rollout.prompts_per_step=3"])
    assert ok.rollout.samples_per_prompt * ok.rollout.prompts_per_step == 6
    # a group-free estimator takes one sample per prompt, but not under a group credit assigner
    one = load_config("grpo", ["algo.advantage='mssr'", "rollout.samples_per_prompt=1"])
    assert one.rollout.samples_per_prompt == 1
    with pytest.raises(ConfigError, match="group estimator 'tree_td'"):
        load_config("tempo", ["algo.advantage='mssr'", "rollout.samples_per_prompt=1"])


def test_unknown_knob_lists_the_accepted_knobs_of_the_chosen_components():
    with pytest.raises(ConfigError) as err:
        load_config("rloo", ["algo.clip_high=0.3"])  # rloo + reinforce take no clip knob
    msg = str(err.value)
    assert "'algo.clip_high' is not a knob" in msg
    assert "(rloo, reinforce, seq_mean_token_mean, k3, none)" in msg
    for name in ("clip_low", "clip_high", "dual_clip", "scale", "eps"):
        assert name not in msg.split("their knobs:")[1]


def test_empty_rewards_refused():
    with pytest.raises(ConfigError, match="'rewards' is empty"):
        config_from_dict({"rewards": {}})


def test_numbers_and_bare_strings_from_overrides():
    cfg = load_config(
        "grpo",
        [
            "optim.lr=1",  # an int is a float field's value, stored as float
            "rollout.max_new_tokens=5",
            "algo.advantage=rloo",  # a bare string
            "algo.objective = reinforce",  # spaces around '=' are fine
            "eval.before=false",
            "algo.scale='batch'",
            "algo.advantage=grpo",  # later overrides win
        ],
    )
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.rollout.max_new_tokens == 5
    assert cfg.algo.advantage == "grpo" and cfg.algo.objective == "reinforce"
    assert cfg.eval.before is False
    assert cfg.algo.knobs == {"scale": "batch"}
    assert build_components(cfg).kwargs["advantage"] == {"scale": "batch"}
    d = apply_overrides({}, ["a.b.c=-2", "x=1e-3", "s=a=b"])
    assert d == {"a": {"b": {"c": -2}}, "x": 0.001, "s": "a=b"}


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'name' is not a section"):
        load_config("grpo", ["name.x=1"])
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        load_config("grpo", ["optim.lr.x=1"])


def test_yaml_and_toml_agree_on_a_full_recipe(tmp_path):
    import yaml

    cfg = load_config("grpo", ["algo.clip_high=0.28", "rewards.answer.partial_credit=true"])
    (tmp_path / "r.yml").write_text(yaml.safe_dump(cfg.to_dict()))
    (tmp_path / "r.toml").write_text(cfg.to_toml())
    assert load_config(str(tmp_path / "r.yml")) == cfg == load_config(str(tmp_path / "r.toml"))
    (tmp_path / "bad.yaml").write_text("algo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a table of sections"):
        load_config(str(tmp_path / "list.yaml"))
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(str(tmp_path / "empty.yaml")) == config_from_dict({"name": "empty"})  # file stem


def test_missing_yaml_and_unknown_name_list_shipped_recipes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError) as err:
        load_config("grpo_v2")
    assert "unknown recipe 'grpo_v2'" in str(err.value)
    for name in recipe_names():
        assert name in str(err.value)


def test_knob_routing_to_every_component_that_takes_it():
    cfg = load_config("grpo", ["algo.clip_low=0.1", "algo.clip_high=0.3", "algo.eps=1e-4"])
    kw = build_components(cfg).kwargs
    assert kw["objective"] == {"clip_low": 0.1, "clip_high": 0.3}
    assert kw["advantage"] == {"eps": 1e-4}
    assert "clip_high" not in kw["advantage"] and "eps" not in kw["objective"]


def test_knob_values_are_type_checked():
    # a bare False is not TOML, so it arrives as the (truthy) string 'False'
    with pytest.raises(ConfigError, match=r"'rewards.answer.partial_credit': .* must be bool"):
        load_config("grpo", ["rewards.answer.partial_credit=False"])
    with pytest.raises(ConfigError, match=r"'algo.scale': .* must be one of 'group', 'batch'"):
        load_config("grpo", ["algo.scale='groups'"])
    with pytest.raises(ConfigError, match=r"'algo.clip_high': .* must be float, got 'wide'"):
        load_config("grpo", ["algo.clip_high='wide'"])
    with pytest.raises(ConfigError, match=r"'algo.max_tokens': .* must be int or None, got 2.5"):
        load_config("dr_grpo", ["algo.max_tokens=2.5"])
    ok = load_config("grpo", ["algo.clip_high=1", "rewards.answer.partial_credit=false"])
    assert ok.algo.knobs == {"clip_high": 1} and ok.rewards["answer"]["partial_credit"] is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("algo.dual_clip=0.5", "expected > 1"),
        ("algo.dual_clip=1", "expected > 1"),
        ("algo.clip_low=1.5", "expected [0, 1)"),
        ("algo.clip_low=1", "expected [0, 1)"),  # a lower clip bound of ratio 0 clips nothing
        ("algo.clip_high=-0.1", "expected >= 0"),
        ("algo.eps=-1e-6", "expected >= 0"),
        ("algo.eps=nan", "expected >= 0"),
    ],
)
def test_knob_values_are_range_checked(override, expected):
    knob = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config("grpo", [override])
    assert f"'{knob}': " in str(err.value) and str(err.value).endswith(expected)


def test_components_needing_inputs_the_trainer_cannot_supply_are_refused():
    with pytest.raises(ConfigError, match=r"'gae' needs values from a critic; set critic.enabled"):
        load_config("grpo", ["algo.credit='gae'"])
    with pytest.raises(ConfigError, match=r"'pure_min' needs process rewards from exactly one step"):
        load_config("grpo", ["algo.credit='pure_min'"])
    with pytest.raises(ConfigError, match=r"found 2 \(arith_steps, prm\)"):
        load_config("pure", ['rewards.prm={path="/nowhere", weight=0.0}'])
    assert load_config("grpo", ["algo.credit='pure_min'", "rewards.arith_steps.weight=0.0"])
    with pytest.raises(ConfigError, match=r"cannot be combined with multi-turn episodes"):
        load_config("pure", ["guidance.strategy='hints'"])
    assert load_config("grpo", ["algo.credit='gae'", "critic.enabled=true"]).critic.enabled
    with pytest.raises(ConfigError, match=r"'algo.credit': unknown credit assigner 'nope'"):
        load_config("grpo", ["algo.credit='nope'"])
    # an objective that needs whole groups refuses micro-batches that split them
    with pytest.raises(ConfigError, match="needs whole groups, but a micro-batch of 4 sequences"):
        load_config("gtpo", ["algo.micro_batches=16"])
    cfg = load_config("tempo", ["algo.td_coef=0.5"])
    assert build_components(cfg).kwargs["credit"] == {"td_coef": 0.5}


def test_threads_is_checked_and_applied(tmp_path, micro_base):
    from tests.conftest import micro_run

    from rlvr.train.trainer import train

    with pytest.raises(ConfigError, match=r"'train\.threads' = -1 is out of range"):
        load_config("grpo", ["train.threads=-1"])
    before = torch.get_num_threads()
    try:
        cfg = load_config(
            "grpo",
            micro_run(
                micro_base, "train.threads=2", "train.steps=1", "eval.before=false", "eval.after=false"
            ),
        )
        train(cfg, run_dir=tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
