"""ReMix on the micro model: the KL-convex constraint (algo.kl_lambda) and policy reincarnation
(algo.reincarnate_at) in real training steps, their neutral settings against the golden records,
their config checks, and a resume across the reincarnation step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import micro_run
from tests.train import golden

from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

TIMING = golden.TIMING


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("case", "extra"),
    [
        ("feature/replay", ["algo.reincarnate_at=0", "algo.kl_lambda=1.0"]),
        ("feature/kl_loss", ["algo.kl_lambda=1.0", "algo.reincarnate_at=0"]),
        ("feature/ppo_epochs", ["algo.reincarnate_at=0"]),
    ],
)
def test_neutral_settings_repeat_todays_runs(case, extra, micro_base, tmp_path, dense_reward):
    """kl_lambda = 1 and reincarnate_at = 0 give the recorded runs of before they existed."""
    recipe, overrides = golden.in_process_cases()[case]
    cfg = load_config(recipe, micro_run(micro_base, *overrides, *extra))
    train(cfg, run_dir=tmp_path / "run", progress=False)
    golden.check(case, tmp_path / "run")


# ReMix's off-policy phase on grpo: replay half of 4 groups, 2 epochs, KL-convex at lambda 0.5
REMIX = [
    "eval.before=false",
    "eval.after=false",
    "train.checkpoint_every=2",
    "optim.lr=1e-2",
    "rollout.prompts_per_step=4",
    "sampling.replay_fraction=0.5",
    "sampling.replay_max_age=2",
    "algo.epochs=2",
    "algo.beta=0.1",
    "algo.kl_lambda=0.5",
    "algo.reincarnate_at=2",
]


def _remix(micro_base, steps, *extra):
    return load_config("grpo", micro_run(micro_base, *REMIX, f"train.steps={steps}", *extra))


def test_reincarnation_happens_at_s(micro_base, tmp_path, dense_reward):
    run = tmp_path / "run"
    train(_remix(micro_base, 4, *dense_reward), run_dir=run, progress=False)
    rows = _metrics(run)
    assert [r["reincarnated"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    # the off-policy phase: a replayed group at step 2, the two KL terms logged apart
    assert rows[1]["replayed_groups"] > 0
    for r in rows[:2]:
        assert r["kl"] == pytest.approx(0.5 * r["kl_ref"] + 0.5 * r["kl_behaviour"], rel=1e-5)
    assert rows[1]["kl_ref"] > 1e-6  # the policy has left the base
    # after S: no replay, the reference KL alone ...
    assert all(r["replayed_groups"] == 0 and "kl_ref" not in r for r in rows[2:])
    # ... and step 3's one update sees a reference equal to the policy (2 epochs would move it)
    assert rows[2]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[3]["kl"] > 1e-6
    ref = load_file(run / "references" / "step_2" / "model.safetensors")
    pol = load_file(run / "checkpoints" / "step_2" / "model.safetensors")
    assert ref.keys() == pol.keys() and all(torch.equal(ref[k], pol[k]) for k in ref)
    state = torch.load(run / "checkpoints" / "step_4" / "trainer_state.pt", weights_only=False)
    assert state["ref_step"] == 2
    # no more groups were remembered after S: the buffer holds groups of steps 1 and 2 only
    assert {g["step"] for g in state["replay"]["groups"]} <= {1, 2}


@pytest.mark.parametrize("stopped", [2, 3])
def test_resume_across_reincarnation_equals_uninterrupted(micro_base, tmp_path, dense_reward, stopped):
    """A run stopped at S (or after it) and resumed is still reincarnated: the same metrics and
    weights as the uninterrupted run."""
    train(_remix(micro_base, 4, *dense_reward), run_dir=tmp_path / "a", progress=False)
    train(_remix(micro_base, stopped, *dense_reward), run_dir=tmp_path / "b", progress=False)
    train(_remix(micro_base, 4, *dense_reward), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    pa = load_file(tmp_path / "a" / "checkpoints" / "step_4" / "model.safetensors")
    pb = load_file(tmp_path / "b" / "checkpoints" / "step_4" / "model.safetensors")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-6, atol=1e-7)


def test_kl_convex_moves_the_loss(micro_base, tmp_path, dense_reward):
    """The constraint is in the loss: lambda 0.5 and 1 give different updates from step 2 on."""
    runs = {}
    for lam in (0.5, 1.0):
        run = tmp_path / f"lam{lam}"
        cfg = _remix(micro_base, 2, *dense_reward, f"algo.kl_lambda={lam}", "algo.reincarnate_at=0")
        train(cfg, run_dir=run, progress=False)
        runs[lam] = _metrics(run)
    assert runs[0.5][1]["loss"] != pytest.approx(runs[1.0][1]["loss"], rel=1e-6)
    assert "kl_ref" not in runs[1.0][1] and "kl_behaviour" in runs[0.5][1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["algo.kl_lambda=1.5"], "'algo.kl_lambda' = 1.5 is out of range; expected in [0, 1]"),
        (["algo.kl_lambda=0.5"], "'algo.kl_lambda' = 0.5 with 'algo.beta' = 0"),
        (
            ["algo.kl_lambda=0.5", "algo.beta=0.1", "algo.kl_in='reward'"],
            "'algo.kl_lambda' = 0.5 with 'algo.kl_in' = 'reward'",
        ),
        (["algo.reincarnate_at=-1"], "'algo.reincarnate_at' = -1 is out of range"),
        (["algo.reincarnate_at=5", "model.lora.rank=4"], "'algo.reincarnate_at' = 5: policy"),
    ],
)
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("grpo", override)
    assert message in str(err.value)


def test_kl_lambda_with_a_scheduled_beta_is_accepted():
    cfg = load_config("grpo", ["algo.kl_lambda=0.5", "schedule.algo.beta=[[1, 0.0], [10, 0.1]]"])
    assert cfg.algo.kl_lambda == 0.5
