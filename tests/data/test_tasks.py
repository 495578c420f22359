"""reasoning-gym tasks: a held-out split that never leaks into training; resumable streams."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlvr.data.prompts import INSTRUCTION, format_prompt
from rlvr.data.tasks import Problem, ReasoningGymTask
from rlvr.models.tiny import CHAT_TEMPLATE, _train_tokenizer

KW = {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}


def _task(seed=0, heldout_size=256, **kw):
    return ReasoningGymTask("chain_sum", seed=seed, heldout_size=heldout_size, **{**KW, **kw})


def _qs(problems):
    return [p.question for p in problems]


def test_heldout_is_distinct_and_of_the_requested_size():
    task = _task(heldout_size=256)
    qs = _qs(task.heldout)
    assert len(qs) == 256 and len(set(qs)) == 256
    for p in task.heldout:
        assert isinstance(p, Problem)
        assert p.meta["source_dataset"] == "chain_sum"
        assert p.entry == {"question": p.question, "answer": p.answer, "metadata": p.meta}
        assert int(p.answer) == eval(p.meta["expression"])  # a true reference answer
    # a smaller held-out set is a prefix of a larger one (same split seed)
    assert _qs(_task(heldout_size=40).heldout) == qs[:40]


def test_training_stream_never_yields_a_heldout_question():
    task = _task(heldout_size=256)
    held = set(_qs(task.heldout))
    train = task.next(3000)
    assert len(train) == 3000
    assert not held & set(_qs(train))
    # chain_sum has only a few thousand distinct questions, so some items were really skipped
    assert task.position > 3000


def test_heldout_depends_on_split_seed_not_training_seed():
    a = ReasoningGymTask("chain_sum", seed=0, heldout_seed=5, heldout_size=32, **KW)
    b = ReasoningGymTask("chain_sum", seed=9, heldout_seed=5, heldout_size=32, **KW)
    c = ReasoningGymTask("chain_sum", seed=0, heldout_seed=6, heldout_size=32, **KW)
    assert _qs(a.heldout) == _qs(b.heldout)
    assert _qs(a.heldout) != _qs(c.heldout)
    assert _qs(a.next(20)) != _qs(b.next(20))  # the training seed orders the stream


def test_same_seed_same_stream():
    a, b = _task(seed=3, heldout_size=16), _task(seed=3, heldout_size=16)
    for n in (1, 7, 30):
        pa, pb = a.next(n), b.next(n)
        assert len(pa) == n
        assert [(p.question, p.answer) for p in pa] == [(p.question, p.answer) for p in pb]
    assert a.position == b.position


def test_state_dict_resumes_the_exact_stream():
    full = _task(seed=1, heldout_size=64)
    first = full.next(25)
    state = full.state_dict()
    assert state == {"position": full.position} and full.position >= 25
    rest = full.next(40)

    resumed = _task(seed=1, heldout_size=64)
    resumed.load_state_dict(state)
    assert _qs(resumed.next(40)) == _qs(rest)
    assert resumed.position == full.position
    # and the stream is not simply restarted
    assert _qs(rest[:25]) != _qs(first)


def test_unknown_task_name_is_named():
    with pytest.raises(ValueError, match="'no_such_task'"):
        ReasoningGymTask("no_such_task", heldout_size=4)


def test_bad_task_kwargs_are_a_value_error():
    with pytest.raises(ValueError, match="chain_sum"):
        ReasoningGymTask("chain_sum", heldout_size=4, no_such_knob=1)


def test_too_few_distinct_questions():
    # two one-digit terms: at most 10 * 10 * 2 = 200 distinct questions
    small = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    with pytest.raises(ValueError, match="fewer than 500 distinct questions"):
        ReasoningGymTask("chain_sum", heldout_size=500, **small)
    assert len(ReasoningGymTask("chain_sum", heldout_size=50, **small).heldout) == 50


def test_different_seeds_give_unrelated_streams():
    a = _qs(_task(seed=0, heldout_size=16).next(50))
    b = _qs(_task(seed=1, heldout_size=16).next(50))
    assert len(set(a) & set(b)) < 10  # ~4000 distinct questions: chance overlap is about 1


# --------------------------------------------------------------------------------------------------
# prompts


def test_format_prompt_uses_the_chat_template():
    # the tokenizer that the tiny base build makes (the micro model's), without building a model
    tok = _train_tokenizer(["<|user|>1 + 2 =<|end|><|assistant|><answer>3</answer>"] * 4, 300)
    assert tok.chat_template == CHAT_TEMPLATE
    text = format_prompt(tok, "1 + 2 =")
    assert text == f"<|user|>1 + 2 =\n{INSTRUCTION}<|end|><|assistant|>"
    assert text.endswith("<|assistant|>")
    assert format_prompt(tok, "1 + 2 =", instruction="") == "<|user|>1 + 2 =<|end|><|assistant|>"


def test_format_prompt_plain_fallback():
    for tok in (SimpleNamespace(), SimpleNamespace(chat_template=None)):
        assert format_prompt(tok, "1 + 2 =") == f"1 + 2 =\n{INSTRUCTION}\nAnswer: "
        assert format_prompt(tok, "Q", instruction="Be brief.") == "Q\nBe brief.\nAnswer: "
        assert format_prompt(tok, "Q", instruction="") == "Q\nAnswer: "


def test_a_mixture_draws_its_families_by_weight_with_a_seed():
    from collections import Counter

    from rlvr.data.solutions import solve
    from rlvr.data.tasks import mixture_kwargs
    from rlvr.rewards.verifiers import make_task_reward

    mix = {
        "chain_sum": {"weight": 3.0, "min_terms": 2, "max_terms": 3},
        "gcd": {"weight": 1.0, "max_value": 60},
    }

    def mixture(seed):
        return ReasoningGymTask("composite", seed=seed, heldout_size=16, **mixture_kwargs(mix))

    drawn = mixture(0).next(800)
    counts = Counter(p.meta["source_dataset"] for p in drawn)
    assert set(counts) == {"chain_sum", "gcd"}
    assert 0.70 < counts["chain_sum"] / 800 < 0.80  # weight 3 of 4 (binomial sd 0.015)
    assert _qs(mixture(0).next(50)) == _qs(drawn[:50])  # the same seed, the same draws
    assert _qs(mixture(1).next(50)) != _qs(drawn[:50])
    assert not set(_qs(drawn)) & set(_qs(mixture(0).heldout))
    # each family keeps its own generation knobs and is scored by its own scorer
    assert all(p.meta["num_terms"] <= 3 for p in drawn if p.meta["source_dataset"] == "chain_sum")
    reward = make_task_reward()
    for p in drawn[:40]:
        text = solve(p)
        assert reward(p.question, text, p.answer, **p.meta) == 1.0, (p.question, text)
        assert reward(p.question, "<answer>-12345</answer>", p.answer, **p.meta) == 0.0
