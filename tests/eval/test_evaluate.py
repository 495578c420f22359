"""evaluate(): maj@k, distinct answers and entropy by hand and against loops; batching for large n."""

from __future__ import annotations

import importlib
import math
import random

import numpy as np
import pytest
import torch

from rlvr.data.tasks import Problem
from rlvr.eval import (
    EvalResult,
    distinct_answers,
    encode_answers,
    evaluate,
    final_answer,
    majority_at_k,
    pass_at_k,
    plan_batches,
)

ev = importlib.import_module("rlvr.eval.evaluate")  # the module (rlvr.eval.evaluate is the function)

# ---------------------------------------------------------------- maj@k on synthetic samples


def maj_loop(answers: list[str | None], correct: list[bool], k: int) -> bool:
    """Reference maj@k of one problem: count votes, most votes wins, ties to the earliest answer."""
    votes: dict[str, int] = {}
    first: dict[str, int] = {}
    for j, a in enumerate(answers[:k]):
        if a is None:
            continue
        votes[a] = votes.get(a, 0) + 1
        first.setdefault(a, j)
    if not votes:
        return False
    best = max(votes.values())
    winner = min((a for a in votes if votes[a] == best), key=first.__getitem__)
    return correct[first[winner]]


HAND = [
    # answers, correct, {k: maj@k}
    (["3", "4", "4", None, "3"], [1, 0, 0, 0, 1], {1: True, 2: True, 4: False, 5: True}),
    ([None] * 5, [0] * 5, {1: False, 2: False, 4: False, 5: False}),
    (["a", "b", "c", "b", "a"], [0, 1, 0, 1, 0], {1: False, 2: False, 4: True, 5: False}),
    # no answer on the first sample: the first k samples with an answer vote
    ([None, "7", "8", "8", "7"], [1, 1, 0, 0, 1], {1: False, 2: True, 4: False, 5: True}),
    # the same answer, correct on one sample and not on another: the first carrier decides
    (["5", "5", "6", "6", "6"], [0, 1, 1, 1, 1], {1: False, 2: False, 4: False, 5: True}),
]


def test_majority_hand_values():
    ids = encode_answers([a for a, _, _ in HAND])
    ok = np.array([c for _, c, _ in HAND], dtype=bool)
    for k in (1, 2, 4, 5):
        got = majority_at_k(ids, ok, k)
        assert got.tolist() == [want[k] for _, _, want in HAND], k
        assert got.tolist() == [maj_loop(a, c, k) for a, c, _ in HAND]


def test_majority_vectorised_equals_loop_on_random_samples():
    rng = random.Random(0)
    for trial in range(30):
        p, n = rng.randint(1, 12), rng.choice([1, 2, 3, 8, 16, 33])
        pool = [None, "0", "1", "2", "3"][: rng.randint(2, 5)]
        answers = [[rng.choice(pool) for _ in range(n)] for _ in range(p)]
        correct = [[rng.random() < 0.4 for _ in range(n)] for _ in range(p)]
        ids = encode_answers(answers)
        ok = np.array(correct, dtype=bool)
        for k in range(1, n + 1):
            want = [maj_loop(a, c, k) for a, c in zip(answers, correct, strict=True)]
            assert majority_at_k(ids, ok, k).tolist() == want, (trial, k)


def test_majority_does_not_need_first_occurrence_ids():
    # ids relabelled by an arbitrary permutation: the tie rule still follows sample order
    answers = [["b", "a", "a", "b", "c"], ["x", "y", "z", "z", "y"]]
    ok = np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 1]], dtype=bool)
    ids = encode_answers(answers)
    perm = np.array([2, 0, 1])  # id j -> perm[j]
    relabelled = np.where(ids >= 0, perm[np.maximum(ids, 0)], -1)
    for k in range(1, 6):
        assert majority_at_k(relabelled, ok, k).tolist() == majority_at_k(ids, ok, k).tolist()
    # k = 4: "b" and "a" tie at 2 votes, "b" came first (correct); "z" has 2 votes (wrong)
    assert majority_at_k(relabelled, ok, 4).tolist() == [True, False]
    # k = 5: "y" and "z" tie at 2, "y" came first (correct)
    assert majority_at_k(relabelled, ok, 5).tolist() == [True, True]


def test_majority_bad_inputs():
    ids = encode_answers([["1", "2"]])
    with pytest.raises(ValueError, match="1 <= k <= n"):
        majority_at_k(ids, np.ones((1, 2), bool), 3)
    with pytest.raises(ValueError, match="same"):
        majority_at_k(ids, np.ones((2, 2), bool), 1)
    with pytest.raises(ValueError, match="problem 1 has 1 answers"):
        encode_answers([["1", "2"], ["1"]])


def test_encode_and_distinct_answers():
    answers = [["3", "4", "4", None, "3"], [None] * 3 + [None, None], ["a", "b", "c", "d", "e"]]
    ids = encode_answers(answers)
    assert ids.tolist() == [[0, 1, 1, -1, 0], [-1] * 5, [0, 1, 2, 3, 4]]
    assert distinct_answers(ids).tolist() == [2, 0, 5]
    rng = np.random.default_rng(0)
    raw = rng.integers(-1, 6, size=(20, 9))  # arbitrary ids, -1 = no answer
    want = [len({int(x) for x in row if x >= 0}) for row in raw]
    assert distinct_answers(raw).tolist() == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("<answer> 1  2 </answer>", "1 2"),  # whitespace collapsed
        ("<answer>5</answer> then <answer>6</answer>", "6"),  # the last tag
        ("so the sum is \\boxed{7}.", "7"),  # no tag: boxed
        ("3 + 4 = 7", "7"),  # no tag, no box: the last number
        ("<answer>12</answer> \\boxed{9}", "12"),  # the tag comes first
        ("no answer here", None),
        ("<answer> </answer>", None),  # an empty answer is no answer
    ],
)
def test_final_answer(text, want):
    assert final_answer(text) == want


# ---------------------------------------------------------------- batching plan


@pytest.mark.parametrize(
    ("problems", "n", "bp", "cap"),
    [(10, 8, 64, 4096), (10, 8, 3, 4096), (7, 64, 64, 100), (3, 10, 64, 4)],
)
def test_plan_batches_is_bounded_and_complete(problems, n, bp, cap):
    plan = plan_batches(problems, n, batch_prompts=bp, max_batch_seqs=cap)
    assert [s for s, _, _ in plan] == list(np.cumsum([0] + [c for _, c, _ in plan[:-1]]))
    assert sum(c for _, c, _ in plan) == problems
    for _, count, splits in plan:
        assert sum(splits) == n and count <= bp
        assert all(count * g <= cap for g in splits)
    # n = 10 with 4 sequences per call: one problem at a time in calls of 4, 4, 2
    assert plan_batches(2, 10, batch_prompts=64, max_batch_seqs=4) == [
        (0, 1, [4, 4, 2]),
        (1, 1, [4, 4, 2]),
    ]
    with pytest.raises(ValueError, match="max_batch_seqs"):
        plan_batches(2, 4, batch_prompts=1, max_batch_seqs=0)


# ---------------------------------------------------------------- evaluate on the micro model


def _problems(count: int) -> list[Problem]:
    return [Problem(question=f"What is {i} + 1?", answer=str(i + 1), meta={}) for i in range(count)]


class Recorder:
    """A per-sample verifier that remembers every completion (in call order) and calls a sample
    correct when its text has an even number of characters: deterministic, about half correct."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, prompt: str, completion: str, answer: str, **meta) -> float:
        self.calls.append((prompt, completion))
        return 1.0 if len(completion) % 2 == 0 else 0.0


@pytest.mark.parametrize(("n", "cap"), [(8, 4096), (8, 3), (256, 100)])
def test_evaluate_matches_a_recount_of_its_samples(micro_model, monkeypatch, n, cap):
    """Every number of the result recomputed by plain loops from the completions the verifier saw
    and the rollouts the sampler returned; n = 256 runs in calls of at most 100 sequences."""
    model, tok = micro_model
    rolls = []
    real = ev.generate

    def spy(*a, **kw):
        roll = real(*a, **kw)
        assert roll.mask.shape[0] <= cap
        rolls.append(roll)
        return roll

    monkeypatch.setattr(ev, "generate", spy)
    problems = _problems(5 if n == 8 else 2)
    rec = Recorder()
    res = evaluate(model, tok, problems, rec, n=n, max_new_tokens=5, max_batch_seqs=cap, seed=3)

    assert len(rec.calls) == len(problems) * n
    texts = [[rec.calls[i * n + j][1] for j in range(n)] for i in range(len(problems))]
    for i, p in enumerate(problems):  # the verifier saw the problem's own prompt for its n samples
        assert all(p.question in rec.calls[i * n + j][0] for j in range(n))
    ok = [[len(t) % 2 == 0 for t in row] for row in texts]
    answers = [[final_answer(t) for t in row] for row in texts]
    assert res.n == n and res.correct == [sum(r) for r in ok]
    ks = [2**i for i in range(int(math.log2(n)) + 1)]
    assert sorted(res.pass_at) == ks == sorted(res.maj_at)
    for k in ks:
        want = np.mean([pass_at_k(n, c, k) for c in res.correct])
        assert res.pass_at[k] == pytest.approx(want)
        want = np.mean([maj_loop(a, c, k) for a, c in zip(answers, ok, strict=True)])
        assert res.maj_at[k] == pytest.approx(want)
        lo, hi = res.maj_ci[k]
        assert lo <= res.maj_at[k] <= hi
    assert res.distinct == [len({a for a in row if a is not None}) for row in answers]
    assert res.distinct_answers == pytest.approx(np.mean(res.distinct))
    # entropy: mean of -log p over every completion token of every rollout
    num = sum(float((-r.old_logp * r.mask).sum()) for r in rolls)
    den = sum(float(r.mask.sum()) for r in rolls)
    assert res.entropy == pytest.approx(num / den) and res.entropy > 0
    lengths = torch.cat([r.lengths for r in rolls]).float()
    assert res.mean_length == pytest.approx(float(lengths.mean()))
    n_ok = sum(map(sum, ok))
    split = res.length_correct * n_ok + res.length_wrong * (len(problems) * n - n_ok)
    assert split == pytest.approx(float(lengths.sum()))  # the two means split the same samples
    assert res.voted == [maj_vote(row) for row in answers]


def test_lengths_by_outcome_are_the_means_over_correct_and_wrong_samples():
    # 2 problems x 3 samples, lengths in the order of ok_rows (prompt-major)
    res = ev.outcome_result(
        [2, 0],
        [[True, False, True], [False, False, False]],
        [["1", "2", "1"], [None, "3", "3"]],
        n=3,
        seed=0,
        lengths=[4.0, 10.0, 6.0, 7.0, 8.0, 9.0],
        samples=[],
        entropy=0.1,
    )
    assert res.length_correct == 5.0  # (4 + 6) / 2
    assert res.length_wrong == 8.5  # (10 + 7 + 8 + 9) / 4
    assert res.mean_length == pytest.approx(44 / 6)
    none_right = ev.outcome_result(
        [0], [[False, False]], [[None, None]], n=2, seed=0, lengths=[3.0, 5.0], samples=[], entropy=0.1
    )
    assert math.isnan(none_right.length_correct) and none_right.length_wrong == 4.0


def maj_vote(row: list[str | None]) -> str | None:
    seen = [a for a in row if a is not None]
    if not seen:
        return None
    best = max(seen.count(a) for a in seen)
    return next(a for a in seen if seen.count(a) == best)


def test_evaluate_uses_the_exact_entropy_when_the_rollout_has_it(micro_model, monkeypatch):
    model, tok = micro_model
    real = ev.generate

    def with_entropy(*a, **kw):
        roll = real(*a, **kw)
        roll.entropy = torch.full_like(roll.old_logp, 0.7)  # [N, T]
        return roll

    monkeypatch.setattr(ev, "generate", with_entropy)
    res = evaluate(model, tok, _problems(3), Recorder(), n=4, max_new_tokens=4)
    assert res.entropy == pytest.approx(0.7)


def test_summary_keeps_old_keys_and_adds_new_ones():
    res = EvalResult(
        n=2,
        correct=[1, 0],
        pass_at={1: 0.25, 2: 0.5},
        ci={1: (0.0, 0.5), 2: (0.0, 1.0)},
        mean_length=3.0,
        maj_at={1: 0.5, 2: 0.5},
        maj_ci={1: (0.0, 1.0), 2: (0.0, 1.0)},
        distinct=[2, 1],
        voted=["4", None],
        entropy=0.4,
    )
    s = res.summary()
    for key in ("mean_length", "pass@1", "pass@1_ci_low", "pass@2_ci_high"):
        assert key in s
    assert s["maj@2"] == 0.5 and s["maj@1_ci_high"] == 1.0
    assert s["distinct_answers"] == 1.5 and s["entropy"] == 0.4
    # the old constructor still works, and its summary has only the old keys
    old = EvalResult(n=1, correct=[1], pass_at={1: 1.0}, ci={1: (1.0, 1.0)}, mean_length=2.0)
    assert set(old.summary()) == {"mean_length", "pass@1", "pass@1_ci_low", "pass@1_ci_high"}
