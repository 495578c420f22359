"""The policy's own no-grad forward before the update: ``sum_pi_sq`` for the optimal token baseline."""

from __future__ import annotations

import torch
from tests.conftest import completion_logits, micro_run

from rlvr.algos import CREDIT
from rlvr.train.advantage import Advantages
from rlvr.train.components import build_components
from rlvr.train.config import load_config
from rlvr.train.setup import setup_run


def _full_sum_pi_sq(model, roll, temperature):
    """[N, T] sum_v softmax(z / temperature)_v^2 from one plain forward's whole logits."""
    return torch.softmax(completion_logits(model, roll, temperature), -1).pow(2).sum(-1)  # [N, T]


def test_the_trainer_supplies_sum_pi_sq_of_the_policy(micro_base, tmp_path):
    cfg = load_config(
        "optimal_token_baseline", micro_run(micro_base, "rollout.temperature=0.7", "eval.before=false")
    )
    run = setup_run(cfg, run_dir=tmp_path / "run", progress=False)
    try:
        roll = run.collector.collect(1).batch.roll
        assert roll.sum_pi_sq is None  # not a field the sampler fills
        adv = Advantages(run.comps, torch.ones(len(run.runner.names)), policy=run.model, temperature=0.7)
        est = adv(roll, [4, 4], 0.0)
        m = roll.mask.bool()
        assert roll.sum_pi_sq.shape == roll.mask.shape
        want = _full_sum_pi_sq(run.model, roll, 0.7)
        torch.testing.assert_close(roll.sum_pi_sq[m], want[m], rtol=1e-4, atol=1e-6)
        # pi of the sampled token under the same policy: w = 1 - 2 pi + S >= 0 up to rounding
        w = 1 - 2 * roll.old_logp.exp() + roll.sum_pi_sq
        assert float(w[m].min()) > -1e-4
        direct = CREDIT["optimal_token_baseline"](
            roll.rewards.view(2, 4), roll.mask, old_logp=roll.old_logp, sum_pi_sq=roll.sum_pi_sq
        )
        torch.testing.assert_close(est.adv, direct)
        # a recipe whose components do not read the policy's distribution runs no such forward
        grpo = build_components(load_config("grpo", micro_run(micro_base)))
        roll.sum_pi_sq = None
        Advantages(grpo, torch.ones(2), policy=run.model).forwards(roll)
        assert roll.sum_pi_sq is None
    finally:
        run.collector.rounds.close()


def test_a_sharded_policy_is_refused():
    import pytest

    from rlvr.train.config import ConfigError

    with pytest.raises(ConfigError, match="a forward of the policy over the batch"):
        load_config("optimal_token_baseline", ["scale.shard=fsdp", "scale.learners=2"])
