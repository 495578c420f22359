"""likelihood_steps: the likelihood probe at every step boundary, on the micro model, with hand-built
step texts; and a 2-step pure_min run that reads its process rewards."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.data.prompts import format_prompt
from rlvr.models.hf import load_model
from rlvr.registry import KnobError
from rlvr.rewards import REWARDS
from rlvr.rewards.models import LikelihoodSteps, answer_logprobs
from rlvr.train.config import is_step_reward, load_config
from rlvr.train.trainer import train

PROMPTS = ["What is 1 + 2 + 3?", "What is 1 + 2 + 3?", "What is 4 + 4?"]
COMPS = [
    "1 + 2 = 3\n3 + 3 = 6\n<answer>6</answer>",  # 3 steps, the last one an answer
    "1 + 2 = 4\n\n<answer>7</answer>\n",  # 2 steps (a blank piece is no step)
    "",  # no step
]
ANSWERS = ["6", "6", "8"]


def _single(model, tok, context: str, target: str, reduce: str = "mean") -> float:
    """One unbatched probe: the log-likelihood of target after context, alone in its batch."""
    (lp,) = answer_logprobs(model, tok, [context], [target], batch_size=1)
    return float(sum(lp)) if reduce == "sum" else float(sum(lp) / len(lp))


def _hand_values(model, tok, prompt: str, completion: str, answer: str, reduce="mean"):
    """v_0..v_K by a plain loop of single forwards over hand-written prefixes."""
    base = format_prompt(tok, prompt)
    target = f"<answer>{answer}</answer>"
    lines = [x for x in completion.split("\n") if x.strip()]
    prefixes = [""] + ["\n".join(lines[: k + 1]) for k in range(len(lines) - 1)] + [completion]
    out = []
    for p in prefixes:
        reasoning = p[: p.rfind("<answer>")] if "<answer>" in p else p
        out.append(_single(model, tok, base + reasoning, target, reduce))
    return out


@pytest.fixture()
def policy(micro_base):
    model, tok = load_model(micro_base)
    model.train()
    return model, tok


def test_registered_as_a_step_reward_with_checked_knobs():
    assert is_step_reward("likelihood_steps") and not is_step_reward("likelihood")
    REWARDS.check_knobs("likelihood_steps", {"score": "value", "scale": "prob", "delimiter": "\n\n"})
    with pytest.raises(KnobError, match="score"):
        REWARDS.check_knobs("likelihood_steps", {"score": "sum"})
    with pytest.raises(KnobError, match="batch_size"):
        REWARDS.check_knobs("likelihood_steps", {"batch_size": 0})
    with pytest.raises(ValueError, match="delimiter"):
        LikelihoodSteps(delimiter="")
    with pytest.raises(ValueError, match="score must be"):
        LikelihoodSteps(score="sum")
    with pytest.raises(ValueError, match="scale must be"):
        LikelihoodSteps(scale="logit")
    with pytest.raises(ValueError, match="template must contain"):
        LikelihoodSteps(template="<answer>")


def test_values_match_a_loop_of_single_forwards(policy):
    model, tok = policy
    fn = REWARDS["likelihood_steps"](batch_size=3)
    assert fn.needs_policy
    got = fn.values(PROMPTS, COMPS, ANSWERS, policy)
    assert model.training  # restored after the no-grad probes
    hand = [_hand_values(model, tok, p, c, a) for p, c, a in zip(PROMPTS, COMPS, ANSWERS, strict=True)]
    assert [len(v) for v in got] == [4, 3, 2]  # K + 1 values (v_0 and the outcome without a step)
    for g, h in zip(got, hand, strict=True):
        assert g == pytest.approx(h, abs=1e-5)
    # v_0 is the prompt alone: the same for the two samples of the first prompt
    assert (
        got[0][0]
        == got[1][0]
        == pytest.approx(
            _single(model, tok, format_prompt(tok, PROMPTS[0]), "<answer>6</answer>"), abs=1e-5
        )
    )
    # the last step's prefix is the answer tag itself: stripped, so v_K's context ends after step 2
    assert got[0][3] == pytest.approx(
        _single(
            model, tok, format_prompt(tok, PROMPTS[0]) + "1 + 2 = 3\n3 + 3 = 6\n", "<answer>6</answer>"
        ),
        abs=1e-5,
    )
    # batch size does not change them
    one = REWARDS["likelihood_steps"](batch_size=1).values(PROMPTS, COMPS, ANSWERS, policy)
    for g, o in zip(got, one, strict=True):
        assert g == pytest.approx(o, abs=1e-5)


def test_gains_values_outcome_and_step_counts(policy):
    gain = REWARDS["likelihood_steps"]()
    value = REWARDS["likelihood_steps"](score="value")
    outcome = gain(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1, policy=policy)
    vals = gain.values(PROMPTS, COMPS, ANSWERS, policy)
    # the outcome is the likelihood reward on the whole completion, same normalisation
    plain = REWARDS["likelihood"]()(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1, policy=policy)
    assert outcome == pytest.approx(plain, abs=1e-6)
    assert outcome == pytest.approx([v[-1] for v in vals], abs=1e-6)
    # the trainer's later call (no answers, no policy) is served from the outcome call's cache
    s, m = gain.step_rewards(PROMPTS, COMPS)  # [N, S]
    assert s.shape == (3, 3) and m.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    for i, v in enumerate(vals):
        k = int(m[i].sum())
        assert k == len(v) - 1 if k else len(v) == 2  # one score per step
        hand_gain = [v[j + 1] - v[j] for j in range(k)]
        assert s[i, :k].tolist() == pytest.approx(hand_gain, abs=1e-5)
        assert float(s[i, :k].sum()) == pytest.approx(v[k] - v[0], abs=1e-5)  # telescopes
        assert s[i, k:].abs().sum() == 0
    assert value(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1, policy=policy) == (
        pytest.approx(outcome, abs=1e-6)
    )
    sv, mv = value.step_rewards(PROMPTS, COMPS)
    assert torch.equal(mv, m)
    assert sv[0].tolist() == pytest.approx(vals[0][1:], abs=1e-5)
    # with the probability scale the values are exp of the log values
    prob = REWARDS["likelihood_steps"](score="value", scale="prob")
    got = prob(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1, policy=policy)
    assert got == pytest.approx([math.exp(x) for x in outcome], rel=1e-5)
    sp, _ = prob.step_rewards(PROMPTS, COMPS)
    assert sp[1, :2].tolist() == pytest.approx([math.exp(x) for x in vals[1][1:]], rel=1e-5)


def test_sum_reduction_and_a_frozen_model(policy, micro_base):
    model, tok = policy
    summed = REWARDS["likelihood_steps"](reduce="sum")
    got = summed.values(PROMPTS[:1], COMPS[:1], ANSWERS[:1], policy)[0]
    hand = _hand_values(model, tok, PROMPTS[0], COMPS[0], ANSWERS[0], reduce="sum")
    assert got == pytest.approx(hand, abs=1e-4)
    frozen = REWARDS["likelihood_steps"](path=str(micro_base), device="cpu")
    assert not frozen.needs_policy
    out = frozen(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1)
    via_policy = REWARDS["likelihood_steps"]()(
        PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1, policy=policy
    )
    assert out == pytest.approx(via_policy, abs=1e-5)


def test_step_scores_recomputed_for_other_rows_and_errors(policy):
    fn = REWARDS["likelihood_steps"]()
    with pytest.raises(ValueError, match="no reference answer for the prompt"):
        fn.step_rewards(PROMPTS, COMPS)
    with pytest.raises(ValueError, match="no policy was passed"):
        fn(PROMPTS, COMPS, ANSWERS, [{}] * 3, group_size=1)
    fn(PROMPTS[:2], COMPS[:2], ANSWERS[:2], [{}] * 2, group_size=2, policy=policy)
    fn(PROMPTS[2:], COMPS[2:], ANSWERS[2:], [{}], group_size=1, policy=policy)
    s, m = fn.step_rewards(PROMPTS, COMPS)  # all the rows at once: recomputed, answers merged
    vals = fn.values(PROMPTS, COMPS, ANSWERS, policy)
    assert m.sum(1).tolist() == [3, 2, 0]
    assert s[0].tolist() == pytest.approx([vals[0][j + 1] - vals[0][j] for j in range(3)], abs=1e-5)
    with pytest.raises(ValueError, match="expected as many of each"):
        fn.values(PROMPTS, COMPS, ANSWERS[:1], policy)


def test_pure_min_reads_the_probe_step_rewards(micro_base, tmp_path, monkeypatch):
    """A 2-step pure_min run whose process rewards are the probe gains (weight 0: credit only)."""
    import rlvr.train.advantage as trainer_mod  # where the credit inputs are supplied

    seen = []
    real = trainer_mod.credit_inputs

    def spy(roll, needs, kl):
        out = real(roll, needs, kl)
        seen.append((out["process_rewards"].clone(), roll.mask.clone()))
        return out

    monkeypatch.setattr(trainer_mod, "credit_inputs", spy)
    cfg = load_config(
        "pure",
        micro_run(
            micro_base,
            "eval.before=false",
            "eval.after=false",
            "train.steps=2",
            "rewards={answer={weight=1.0}, likelihood_steps={weight=0.0, device='cpu'}}",
        ),
    )
    train(cfg, run_dir=tmp_path / "r", progress=False)
    assert len(seen) == 2
    for p, mask in seen:
        assert p.shape == mask.shape and bool(((p != 0) <= (mask > 0)).all())
        nz = p[p != 0]
        assert nz.numel() > 0 and not set(nz.tolist()) <= {-1.0, 1.0}  # gains, not arith's +-1
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)
