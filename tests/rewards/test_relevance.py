"""relevance (R^3): log p(prompt | response) - log p(prompt) on the micro model against a hand loop
of unbatched forwards, the regularisers by hand, the neutral setting, errors, and a 2-step run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.models.hf import load_model
from rlvr.registry import KnobError
from rlvr.rewards import REWARDS
from rlvr.rewards.models import RelevanceReward, relevance_regularizer
from rlvr.train.config import load_config
from rlvr.train.trainer import train

PROMPTS = ["What is 1 + 2 + 3?", "What is 1 + 2 + 3?", "What is 4 + 4?"]
COMPS = ["1 + 2 = 3, 3 + 3 = 6. <answer>6</answer>", "", "4 4 4 4 4 4 4 4"]


def _hand_logprobs(model, tok, context: str, target: str) -> list[float]:
    """One forward per target token on the unpadded prefix (context and target tokenized apart)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    tgt = tok(target, add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for j, token in enumerate(tgt):
            ids = torch.tensor([ctx + tgt[:j]])
            logits = model(input_ids=ids).logits[0, -1].double()  # [V]
            out.append(logits.log_softmax(-1)[token].item())
    return out


def _hand_rel(model, tok, prompt: str, completion: str, reduce: str = "mean") -> float:
    def agg(x: list[float]) -> float:
        return sum(x) if reduce == "sum" else sum(x) / len(x)

    with_ = agg(_hand_logprobs(model, tok, completion + "\n\nQuestion: ", prompt))
    without = agg(_hand_logprobs(model, tok, "\n\nQuestion: ", prompt))
    return with_ - without


@pytest.fixture()
def policy(micro_base):
    model, tok = load_model(micro_base)
    model.train()
    return model, tok


def test_regularizer_hand_values():
    # "a b a b a b": 6 words; bigrams ab ba ab ba ab, 2 distinct of 5 -> rep = 0.6; L = 6/12 = 0.5
    text = "a b a b a b"
    assert relevance_regularizer(text, length_coef=1.0, length_target=12, ngram=2) == 0.5
    assert relevance_regularizer(text, repeat_coef=1.0, ngram=2) == pytest.approx(-0.6)  # a penalty
    got = relevance_regularizer(text, length_coef=0.4, length_target=12, repeat_coef=0.5, ngram=2)
    assert got == pytest.approx(0.4 * 0.5 - 0.5 * 0.6)
    # trigrams aba bab aba bab: 2 distinct of 4 -> 0.5; the length incentive is capped at 1
    assert relevance_regularizer(text, length_coef=2.0, length_target=3, repeat_coef=1.0) == (
        pytest.approx(2.0 - 0.5)
    )
    assert relevance_regularizer("x y z w", repeat_coef=1.0, ngram=2) == 0.0  # no repeat
    assert relevance_regularizer("a a", repeat_coef=1.0, ngram=3) == 0.0  # fewer words than n
    assert relevance_regularizer("", length_coef=1.0, repeat_coef=1.0) == 0.0
    assert relevance_regularizer(text) == 0.0  # both weights 0


def test_registered_with_checked_knobs():
    assert "relevance" in REWARDS
    REWARDS.check_knobs("relevance", {"length_coef": 0.2, "repeat_coef": 1.0, "ngram": 2})
    for bad in ({"length_coef": -0.1}, {"repeat_coef": -1.0}, {"ngram": 0}, {"length_target": 0}):
        with pytest.raises(KnobError, match=next(iter(bad))):
            REWARDS.check_knobs("relevance", bad)
    with pytest.raises(KnobError, match="reduce"):
        REWARDS.check_knobs("relevance", {"reduce": "max"})
    with pytest.raises(ValueError, match="must contain"):
        RelevanceReward(template="Question: ")
    with pytest.raises(ValueError, match="only field"):
        RelevanceReward(template="{response} {answer}")
    with pytest.raises(ValueError, match="some text to condition"):
        RelevanceReward(template="{response}  ")
    with pytest.raises(ValueError, match="length_coef and repeat_coef"):
        RelevanceReward(length_coef=-1.0)
    with pytest.raises(ValueError, match="reduce must be"):
        RelevanceReward(reduce="max")


def test_relevance_equals_a_hand_loop(policy):
    model, tok = policy
    fn = REWARDS["relevance"](batch_size=2)
    assert fn.needs_policy
    got = fn(PROMPTS, COMPS, ["6", "6", "8"], [{}] * 3, group_size=1, policy=policy)
    assert model.training  # restored after the no-grad forwards
    hand = [_hand_rel(model.eval(), tok, p, c) for p, c in zip(PROMPTS, COMPS, strict=True)]
    assert got == pytest.approx(hand, abs=1e-4)
    assert got[1] == 0.0  # an empty response: the conditioned text is the unconditioned one
    assert got[0] != 0.0 and got[2] != 0.0
    summed = REWARDS["relevance"](reduce="sum", batch_size=5)
    hand_sum = [_hand_rel(model, tok, p, c, "sum") for p, c in zip(PROMPTS, COMPS, strict=True)]
    assert summed.relevance(PROMPTS, COMPS, policy) == pytest.approx(hand_sum, abs=1e-3)


def test_neutral_setting_and_regularised_sum(policy):
    base = REWARDS["relevance"](batch_size=4)
    rel = base.relevance(PROMPTS, COMPS, policy)
    zero = REWARDS["relevance"](length_coef=0.0, repeat_coef=0.0, ngram=2, batch_size=4)
    assert zero(PROMPTS, COMPS, [""] * 3, [{}] * 3, group_size=1, policy=policy) == rel  # bitwise
    reg = REWARDS["relevance"](length_coef=0.5, length_target=8, repeat_coef=2.0, ngram=2)
    got = reg(PROMPTS, COMPS, [""] * 3, [{}] * 3, group_size=1, policy=policy)
    # COMPS[0]: 8 words (L = 1), no repeated bigram; COMPS[1]: empty; COMPS[2]: 8 words, bigram
    # "4 4" 7 times, 1 distinct (rep = 6/7)
    extra = [0.5 * 1.0, 0.0, 0.5 * 1.0 - 2.0 * (6 / 7)]
    assert got == pytest.approx([r + e for r, e in zip(rel, extra, strict=True)], abs=1e-12)


def test_a_response_that_helps_predict_the_prompt_scores_higher(policy):
    # restating the prompt makes it far more likely than an unrelated reply does
    prompt = "What is 7 + 5 + 2? Give the sum."
    fn = REWARDS["relevance"]()
    copy, other = fn.relevance([prompt, prompt], [prompt, "zzz qqq"], policy)
    assert copy > other


def test_own_model_and_errors(policy, micro_base, tmp_path):
    own = REWARDS["relevance"](path=str(micro_base), device="cpu")
    assert not own.needs_policy
    args = (PROMPTS[:1], COMPS[:1], ["6"], [{}])
    assert own(*args, group_size=1) == pytest.approx(
        RelevanceReward()(*args, group_size=1, policy=policy), abs=1e-5
    )
    with pytest.raises(ValueError, match="relevance reward with path = ''"):
        RelevanceReward()(*args, group_size=1)
    with pytest.raises(FileNotFoundError, match="relevance model"):
        RelevanceReward(path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        RelevanceReward().relevance([" "], ["x"], policy)
    with pytest.raises(ValueError, match="1 prompts but 2 completions"):
        RelevanceReward().relevance(["p"], ["x", "y"], policy)


def test_a_two_step_run_with_the_relevance_reward(micro_base, tmp_path):
    cfg = load_config(
        "grpo",
        micro_run(
            micro_base,
            "eval.before=false",
            "eval.after=false",
            "train.steps=2",
            "rewards={answer={weight=0.0}, relevance={weight=1.0, device='cpu', repeat_coef=0.5}}",
        ),
    )
    train(cfg, run_dir=tmp_path / "r", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert all(math.isfinite(r["reward/relevance"]) for r in rows)  # the component was scored
