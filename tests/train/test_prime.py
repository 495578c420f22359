"""PRIME: the implicit PRM's loss, the `prime` credit assigner, and the [prm] model in the loop (its
forward before the advantages, its update after the policy's, its state in the checkpoint)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.algos import CREDIT
from rlvr.algos.advantages import grpo
from rlvr.algos.credit import implicit_prm_loss, prime
from rlvr.registry import KnobError
from rlvr.rollout import sequence_logp
from rlvr.train.advantage import Advantages
from rlvr.train.config import ConfigError, load_config
from rlvr.train.learner import Learner
from rlvr.train.setup import setup_run
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}  # as tests/train/test_trainer.py


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **({"rtol": 1e-5, "atol": 1e-6} | kw))


# ---------------------------------------------------------------- the implicit PRM's loss


def test_implicit_prm_loss_hand_values_and_gradient():
    prm = torch.tensor([[-1.0, -2.0, 5.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0, 0.0], [-1.5, -2.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([1.0, 0.0])
    # s_0 = 0.5 * (1 - 1) = 0; s_1 = 0.5 * (1 + 2 - 0.5) = 1.25
    loss = implicit_prm_loss(prm, ref, mask, labels, beta=0.5)
    want = (-math.log(0.5) - math.log(1 - 1 / (1 + math.exp(-1.25)))) / 2
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss.backward()
    # d loss / d prm_{i,t} = beta * m_{i,t} * (sigma(s_i) - y_i) / N
    sig1 = 1 / (1 + math.exp(-1.25))
    grad = torch.tensor([[0.5 * -0.5 / 2] * 2 + [0.0], [0.5 * sig1 / 2] * 3])
    close(prm.grad, grad)
    assert torch.equal(implicit_prm_loss(prm, ref, mask, labels, beta=0.5), loss.detach())
    with pytest.raises(ValueError, match="labels must have shape"):
        implicit_prm_loss(prm, ref, mask, torch.ones(3))
    with pytest.raises(ValueError, match="beta must be > 0"):
        implicit_prm_loss(prm, ref, mask, labels, beta=0.0)


# ---------------------------------------------------------------- credit:prime


def test_prime_hand_values():
    rewards = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.5, 9.0]])  # the 9 sits on a masked position
    # totals 1.5 and 1.5: the leave-one-out baselines are 1.5 and 1.5; rewards-to-go at gamma 1:
    # row 0: 1.5, 1, 2; row 1: 1.5, 0.5; grpo: +-0.707106
    g = 0.5 / (math.sqrt(0.5) + 1e-6)
    out = prime(rewards, mask, implicit_rewards=r)
    close(out, torch.tensor([[g, g - 0.5, g + 0.5], [-g, -g - 1.0, 0.0]]))
    # no baseline, no outcome, gamma 0: each token its own implicit reward
    own = prime(rewards, mask, implicit_rewards=r, outcome_coef=0.0, loo=False, gamma=0.0)
    close(own, torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.5, 0.0]]))
    # gamma 0.5 with the baseline and prm_coef 2: row 0 R = (0.5 - 0.5 + 0.5, -1 + 1, 2) - 1.5
    half = prime(rewards, mask, implicit_rewards=r, outcome_coef=0.0, gamma=0.5, prm_coef=2.0)
    close(half[0], 2 * (torch.tensor([0.5, 0.0, 2.0]) - 1.5))
    with pytest.raises(ValueError, match="prime needs 'implicit_rewards'"):
        prime(rewards, mask)
    with pytest.raises(ValueError, match="G >= 2"):
        prime(torch.ones(2, 1), mask, implicit_rewards=r, outcome_coef=0.0)


def test_prime_without_the_prm_is_grpo_broadcast_to_the_bit():
    gen = torch.Generator().manual_seed(3)
    rewards = torch.rand(4, 5, generator=gen)
    rewards[2] = 0.25  # a constant group
    mask = (torch.rand(20, 7, generator=gen) > 0.3).float()
    want = torch.where(mask.bool(), grpo(rewards).reshape(-1, 1), 0.0)
    for r in (torch.randn(20, 7, generator=gen), None):  # not read at prm_coef = 0
        assert torch.equal(prime(rewards, mask, implicit_rewards=r, prm_coef=0.0), want)


@pytest.mark.parametrize("gamma", [0.0, 0.7, 1.0])
def test_prime_equals_a_plain_loop(gamma):
    gen = torch.Generator().manual_seed(11)
    b, g, t = 2, 3, 5
    rewards = (torch.rand(b, g, generator=gen) > 0.5).float()
    rewards[0] = torch.tensor([1.0, 0.0, 1.0])
    mask = (torch.rand(b * g, t, generator=gen) > 0.25).float()
    r = torch.randn(b * g, t, generator=gen)
    out = prime(rewards, mask, implicit_rewards=r, gamma=gamma, prm_coef=0.6, outcome_coef=1.3)
    outcome = grpo(rewards).reshape(-1)
    total = [sum(float(r[i, k]) for k in range(t) if mask[i, k]) for i in range(b * g)]
    for i in range(b * g):
        others = [total[j] for j in range(b * g) if j // g == i // g and j != i]
        base = sum(others) / len(others)
        for k in range(t):
            if not mask[i, k]:
                assert float(out[i, k]) == 0.0
                continue
            later = [s for s in range(k, t) if mask[i, s]]
            togo = sum(gamma**n * float(r[i, s]) for n, s in enumerate(later))  # counted steps
            want = 1.3 * float(outcome[i]) + 0.6 * (togo - base)
            assert float(out[i, k]) == pytest.approx(want, abs=1e-5)


def test_prime_registry_and_knob_bounds():
    assert CREDIT["prime"] is prime and CREDIT.needs("prime") == {"implicit_rewards"}
    for knobs in ({"prm_coef": -1.0}, {"outcome_coef": -0.1}, {"gamma": 1.5}, {"eps": -1.0}):
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("prime", knobs)


# ---------------------------------------------------------------- the [prm] model in the loop


def test_config_ties_the_prm_to_its_component():
    with pytest.raises(
        ConfigError, match=r"needs implicit_rewards from an implicit PRM; set prm\.enabled"
    ):
        load_config("grpo", ["algo.credit='prime'"])
    with pytest.raises(ConfigError, match=r"'prm\.enabled' trains an implicit PRM"):
        load_config("grpo", ["prm.enabled=true"])
    with pytest.raises(ConfigError, match="beta"):
        load_config("prime", ["prm.beta=0.0"])
    assert load_config("prime").prm.enabled


def test_the_prm_scores_before_and_learns_after(micro_base, tmp_path):
    """Step one: the PRM starts as the base (= the reference), so every implicit reward is 0; the
    trainer's advantages are the component's on them; the update lowers the PRM's loss on the
    batch's outcomes and moves the PRM, not the reference."""
    cfg = load_config("prime", micro_run(micro_base, "eval.before=false", "prm.lr=1e-2"))
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        state = run.state
        assert state.prm is not None and run.ref is not None and state.prm is not run.model
        roll = run.collector.collect(1).batch.roll
        adv = Advantages(
            run.comps, torch.ones(len(run.runner.names)), ref=run.ref, prm=state.prm, prm_beta=0.05
        )
        est = adv(roll, [4, 4], 0.0)
        assert float(roll.implicit_rewards.abs().max()) < 1e-6  # the PRM is the reference
        direct = CREDIT["prime"](
            roll.rewards.view(2, 4), roll.mask, implicit_rewards=roll.implicit_rewards
        )
        torch.testing.assert_close(est.adv, direct)
        learner = Learner(
            run.model, run.optimizer, run.comps, cfg, prm=state.prm, prm_optimizer=state.prm_optimizer
        )
        labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # both classes
        rows_in = (roll.prompt_ids, roll.prompt_mask, roll.completion_ids, roll.attention)

        def loss_now() -> float:
            with torch.no_grad():
                logp = sequence_logp(state.prm, *rows_in)[0]
            return float(implicit_prm_loss(logp, roll.ref_logp, roll.mask, labels, beta=0.05))

        ref_before = {k: v.clone() for k, v in run.ref.state_dict().items()}
        before = loss_now()
        assert before == pytest.approx(math.log(2), rel=1e-5)  # s = 0 everywhere
        out = learner.update_prm(roll, labels)
        assert out["prm_loss"] == pytest.approx(before, rel=1e-6)  # one mini-batch: the loss before
        assert loss_now() < before
        assert all(torch.equal(v, ref_before[k]) for k, v in run.ref.state_dict().items())
        adv.forwards(roll)  # the next step's implicit rewards: beta (log pi_prm - log pi_ref)
        m = roll.mask.bool()
        with torch.no_grad():
            want = 0.05 * (sequence_logp(state.prm, *rows_in)[0] - roll.ref_logp) * roll.mask
        torch.testing.assert_close(roll.implicit_rewards, want)
        assert float(roll.implicit_rewards[m].abs().max()) > 0
        with pytest.raises(ValueError, match="verifier's outcomes"):
            learner.update(roll, est, [4, 4], torch.Generator(), 0.0)
    finally:
        run.collector.rounds.close()


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_prime_resume_equals_uninterrupted(micro_base, tmp_path, dense_reward):
    """The PRM's weights and optimizer are in the checkpoint: a run resumed at step 2 trains steps 3
    and 4 as the uninterrupted one (the micro model never answers, so the verifier labels are 0 and
    the PRM learns to lower every sequence's implicit reward)."""

    def cfg(steps):
        extra = ["eval.before=false", "eval.after=false", "train.checkpoint_every=2", "prm.lr=1e-2"]
        return load_config("prime", micro_run(micro_base, *dense_reward, *extra, f"train.steps={steps}"))

    train(cfg(4), run_dir=tmp_path / "a", progress=False)
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    saved = torch.load(
        tmp_path / "b" / "checkpoints" / "step_2" / "trainer_state.pt", weights_only=False
    )
    assert {"prm", "prm_optimizer"} <= set(saved)
    train(cfg(4), run_dir=tmp_path / "b", resume=True, progress=False)
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a[0]["prm_loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert a[3]["prm_loss"] < a[0]["prm_loss"]  # labels 0: the PRM's loss falls
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
