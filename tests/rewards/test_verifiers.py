"""Answer extraction, the format reward and the reasoning-gym task verifier on real problems."""

from __future__ import annotations

import pytest

from rlvr.data.tasks import ReasoningGymTask
from rlvr.rewards import REWARDS, extract_answer, format_reward, make_task_reward

KW = {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}


@pytest.fixture(scope="module")
def problem():
    """The first held-out chain_sum problem (seed 0): '8 + 2 - 7 =', answer 3."""
    return ReasoningGymTask("chain_sum", seed=0, heldout_size=4, **KW).heldout[0]


# --------------------------------------------------------------------------------------------------
# extraction and format


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>42</answer>", "42"),
        ("<answer>  -7 \n</answer>", "-7"),  # stripped
        ("think <answer>1</answer> more <answer>2</answer> tail", "2"),  # the last block wins
        ("<answer>first\nsecond</answer>", "first\nsecond"),  # multi-line content
        ("<answer>\n 12\n</answer>", "12"),
        ("<answer></answer>", ""),  # present but empty: '' is not None
        ("no tags here", None),
        ("<answer>unterminated", None),
        ("42</answer>", None),
        ("", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>3</answer>", 1.0),
        ("  <answer>3</answer>\n", 1.0),  # surrounding whitespace is allowed
        ("<answer>a b\nc</answer>", 1.0),
        ("<answer></answer>", 1.0),
        ("x <answer>3</answer>", 0.0),  # text before the block
        ("<answer>3</answer> y", 0.0),  # text after the block
        ("<answer>1</answer><answer>2</answer>", 0.0),  # two blocks
        ("<answer><answer>3</answer>", 0.0),  # a tag inside the block
        ("<answer>3", 0.0),
        ("3", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward_wants_exactly_one_block(completion, expected):
    assert format_reward("q", completion, "3") == expected
    assert REWARDS["format"]()("q", completion, "3") == expected


# --------------------------------------------------------------------------------------------------
# the task verifier


def test_problem_is_the_expected_one(problem):
    assert problem.question.endswith("8 + 2 - 7 =")
    assert problem.answer == "3"
    assert problem.meta["source_dataset"] == "chain_sum"


def _score(fn, p, completion):
    return fn(p.question, completion, p.answer, **p.meta)


def test_task_reward_strict(problem):
    strict = make_task_reward()
    assert _score(strict, problem, "<answer>3</answer>") == 1.0
    assert _score(strict, problem, "<answer> 3 </answer>") == 1.0
    assert _score(strict, problem, "<answer>1</answer> then <answer>3</answer>") == 1.0
    assert _score(strict, problem, "<answer>4</answer>") == 0.0
    assert _score(strict, problem, "<answer>-3</answer>") == 0.0
    assert _score(strict, problem, "3") == 0.0  # no block, nothing extracted
    assert _score(strict, problem, "<answer>3</answer> then <answer>4</answer>") == 0.0
    # the right number inside a longer string: chain_sum gives partial credit, strict gives none
    assert _score(strict, problem, "<answer>the answer is 3 ok</answer>") == 0.0


def test_task_reward_partial_credit(problem):
    partial = REWARDS["answer"](partial_credit=True)
    assert _score(partial, problem, "<answer>3</answer>") == 1.0
    assert _score(partial, problem, "<answer>999</answer>") == 0.0
    assert _score(partial, problem, "no answer") == 0.0
    embedded = _score(partial, problem, "<answer>the answer is 3 ok</answer>")
    assert 0.0 < embedded < 1.0


def test_task_reward_needs_source_dataset(problem):
    fn = make_task_reward()
    meta = {k: v for k, v in problem.meta.items() if k != "source_dataset"}
    with pytest.raises(ValueError, match="source_dataset"):
        fn(problem.question, "<answer>3</answer>", problem.answer, **meta)
    # with nothing extracted, no scorer is needed: 0.0 without an error
    assert fn(problem.question, "3", problem.answer, **meta) == 0.0


def test_reward_registry():
    assert {"answer", "format"} <= set(REWARDS.names())
    assert "answer" in REWARDS and "format" in REWARDS
    assert REWARDS.knobs("answer") == {"partial_credit": False}
    assert REWARDS.knobs("format") == {}


def test_task_reward_builds_the_score_function_once_per_task(problem, monkeypatch):
    """reasoning-gym builds a dataset in every ``get_score_answer_fn`` call; the reward asks once."""
    import reasoning_gym

    from rlvr.rewards import verifiers

    calls: list[str] = []
    real = reasoning_gym.get_score_answer_fn

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(reasoning_gym, "get_score_answer_fn", counting)
    verifiers._score_answer_fn.cache_clear()
    try:
        fn = make_task_reward()
        assert [_score(fn, problem, "<answer>3</answer>") for _ in range(5)] == [1.0] * 5
        assert calls == ["chain_sum"]
    finally:
        verifiers._score_answer_fn.cache_clear()
