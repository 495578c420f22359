"""OmegaPRM's binary search for the first wrong step (hand-traced searches, the linear scan it must
equal, rollout counts) and the ``omega_steps`` step reward on the micro model, with a verifier that
knows which steps are wrong; and a 2-step pure_min run that reads its process rewards."""

from __future__ import annotations

import json
import math
import random

import pytest
from tests.conftest import micro_run

import rlvr.rollout.sampler as sampler_mod
from rlvr.data.prompts import format_prompt
from rlvr.models.hf import load_model
from rlvr.registry import KnobError
from rlvr.rewards import REWARDS
from rlvr.rewards.omega import OmegaSteps, first_error_search, first_error_search_many
from rlvr.train.config import is_step_reward, load_config
from rlvr.train.trainer import train

STEPS = ["s0", "s0 s1", "s0 s1 s2", "s0 s1 s2 s3", "s0 s1 s2 s3 s4"]  # 5 prefixes


def _oracle(first: int, calls: list[str] | None = None):
    """A rollout that succeeds exactly from the prefixes before step ``first``."""

    def rollout(prefix: str) -> bool:
        if calls is not None:
            calls.append(prefix)
        return STEPS.index(prefix) < first

    return rollout


def test_hand_traced_search_first_error_in_the_middle():
    # lo=0, hi=5: mid=2 -> c=0, hi=2; mid=1 -> c=1, lo=2; first error = 2, 2 checks x k=3 rollouts
    calls: list[str] = []
    out = first_error_search(STEPS, _oracle(2, calls), k=3)
    assert out.first_error == 2
    assert out.labels == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert out.mc == {2: 0.0, 1: 1.0}
    assert out.rollouts == 6
    assert calls == [STEPS[2]] * 3 + [STEPS[1]] * 3  # k rollouts per checked prefix, in order


def test_known_outcomes_skip_rollouts():
    right = first_error_search(STEPS, _oracle(0), k=4, outcome=True)  # accepted: nothing rolled out
    assert (right.labels, right.first_error, right.rollouts, right.mc) == ([1.0] * 5, None, 0, {})
    # wrong with all prefixes fine but the last: hi = 4 (c_4 = 0 known); mid=2 ok, lo=3; mid=3 ok
    wrong = first_error_search(STEPS, _oracle(4), k=2, outcome=False)
    assert wrong.first_error == 4 and wrong.labels == [1.0] * 4 + [0.0]
    assert wrong.mc == {2: 1.0, 3: 1.0} and wrong.rollouts == 4
    # unknown outcome and no wrong step: lo=0,hi=5: mid=2 ok lo=3; mid=4 ok lo=5 -> none
    none = first_error_search(STEPS, _oracle(5), k=1)
    assert none.first_error is None and none.labels == [1.0] * 5 and none.mc == {2: 1.0, 4: 1.0}
    empty = first_error_search([], _oracle(0), k=3)
    assert (empty.labels, empty.first_error, empty.rollouts) == ([], None, 0)


def test_a_partial_success_rate_counts_as_alive():
    # lo=0, hi=5: mid=2 succeeds once in 3 (c = 1/3 > 0): lo=3; mid=4 never: hi=4; mid=3 never: hi=3
    script = iter([True, False, False] + [False] * 6)
    out = first_error_search(STEPS, lambda p: next(script), k=3)
    assert out.mc == pytest.approx({2: 1 / 3, 4: 0.0, 3: 0.0})
    assert out.first_error == 3 and out.labels == [1.0, 1.0, 1.0, 0.0, 0.0] and out.rollouts == 9


def test_search_equals_the_linear_scan_and_is_logarithmic():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 17)
        first = rng.randint(0, n)  # n: no wrong step
        k = rng.randint(1, 4)
        wins = [k if j < first else 0 for j in range(n)]  # monotone success counts
        outcome = rng.choice([None, first == n] if first == n else [None, False])
        (got,) = first_error_search_many(
            [n], lambda qs, k, w=wins: [w[j] for _, j in qs], k=k, outcomes=[outcome]
        )
        linear = next((j for j in range(n) if wins[j] == 0), None)
        assert got.first_error == linear
        assert got.labels == [1.0 if j < (n if linear is None else linear) else 0.0 for j in range(n)]
        assert got.rollouts <= k * math.ceil(math.log2(n + 1))


def test_many_in_lock_step_equals_one_at_a_time():
    firsts, ks = [2, 0, 5, 4], 2
    rounds: list[list[tuple[int, int]]] = []

    def counts(queries, k):
        rounds.append(list(queries))
        return [k if j < firsts[i] else 0 for i, j in queries]

    many = first_error_search_many([5] * 4, counts, k=ks, outcomes=[None, False, True, None])
    singles = [
        first_error_search(STEPS, _oracle(f), k=ks, outcome=o)
        for f, o in zip(firsts, [None, False, True, None], strict=True)
    ]
    assert [(m.labels, m.first_error, m.mc, m.rollouts) for m in many] == [
        (s.labels, s.first_error, s.mc, s.rollouts) for s in singles
    ]
    assert rounds[0] == [(0, 2), (1, 2), (3, 2)]  # one query per unfinished search per round
    assert len(rounds) == 3


def test_search_errors():
    with pytest.raises(ValueError, match="k must be >= 1"):
        first_error_search(STEPS, _oracle(1), k=0)
    with pytest.raises(ValueError, match="one outcome per solution"):
        first_error_search_many([2, 3], lambda q, k: [0] * len(q), k=1, outcomes=[None])
    with pytest.raises(ValueError, match="successes out of k"):
        first_error_search_many([3], lambda q, k: [k + 1] * len(q), k=2)
    with pytest.raises(ValueError, match="counts for"):
        first_error_search_many([3], lambda q, k: [], k=2)


# ---------------------------------------------------------------- the step reward on the micro model


@pytest.fixture()
def policy(micro_base):
    model, tok = load_model(micro_base)
    model.train()
    return model, tok


def _bad_checker(prompt: str, text: str, answer: str, **meta) -> float:
    """A verifier that knows the wrong steps: a text that contains the marker is wrong."""
    return 0.0 if "<<BAD>>" in text else 1.0


PROMPTS = ["What is 2 + 2?", "What is 2 + 2?", "What is 3 + 3?"]
COMPS = [
    "1 + 1 = 2\n2 + 2 = 4\n<<BAD>> 4 + 4 = 9\n9 + 1 = 10\n<answer>10</answer>",  # 5 steps, 2 wrong
    "2 + 2 = 4\n<answer>4</answer>",  # accepted: no rollout
    "",  # no step
]


def test_registered_as_a_step_reward_with_checked_knobs():
    assert is_step_reward("omega_steps")
    REWARDS.check_knobs("omega_steps", {"k": 2, "verifier": "exact_match", "delimiter": "\n\n"})
    for bad in ({"k": 0}, {"max_new_tokens": 0}, {"temperature": -1.0}):
        with pytest.raises(KnobError, match=next(iter(bad))):
            REWARDS.check_knobs("omega_steps", bad)
    with pytest.raises(ValueError, match="names no reward"):
        OmegaSteps(verifier="nope")
    with pytest.raises(ValueError, match="per-sample reward"):
        OmegaSteps(verifier="likelihood")
    with pytest.raises(ValueError, match="nonzero"):
        OmegaSteps(wrong=0.0)
    with pytest.raises(ValueError, match="delimiter"):
        OmegaSteps(delimiter="")


def test_step_scores_from_policy_rollouts(policy, monkeypatch):
    _, tok = policy
    heads: list[list[int]] = []
    real = sampler_mod.generate

    def spy(model, prompts, **kw):
        heads.extend(list(p) for p in prompts)
        assert kw["num_samples"] == 3 and kw["max_new_tokens"] == 5
        return real(model, prompts, **kw)

    monkeypatch.setattr(sampler_mod, "generate", spy)
    fn = REWARDS["omega_steps"](k=3, max_new_tokens=5, verifier="exact_match")
    fn.check = _bad_checker
    out = fn(PROMPTS, COMPS, ["10", "4", "6"], [{}, {}, {}], group_size=1, policy=policy)
    assert out == [-1.0, 1.0, 0.0]
    # completion 0 is rejected: hi = 4; mid=2 holds the marker (c = 0) -> hi=2; mid=1 -> c = 1, lo=2
    lines = COMPS[0].split("\n")
    want = [format_prompt(tok, PROMPTS[0]) + "\n".join(lines[:j]) for j in (3, 2)]
    assert heads == tok(want, add_special_tokens=False)["input_ids"]
    a, b, c = fn.searches
    assert (a.first_error, a.mc, a.rollouts) == (2, {2: 0.0, 1: 1.0}, 6)
    assert (b.labels, b.rollouts) == ([1.0, 1.0], 0) and c.labels == []
    scores, mask = fn.step_rewards(PROMPTS, COMPS)  # the outcome call's cache: no new rollout
    assert len(heads) == 2
    assert mask.tolist() == [[1.0] * 5, [1, 1, 0, 0, 0], [0.0] * 5]
    assert scores[0].tolist() == [1.0, 1.0, -1.0, -1.0, -1.0]
    assert scores[1, :2].tolist() == [1.0, 1.0]
    again, _ = fn.step_rewards(PROMPTS[:1], COMPS[:1])  # other rows: searched again, same labels
    assert again[0].tolist() == scores[0].tolist() and len(heads) == 4
    with pytest.raises(ValueError, match="no reference answer"):
        fn.step_rewards(["unseen"], ["a\nb"])
    with pytest.raises(ValueError, match="no policy"):
        fn(PROMPTS, COMPS, ["10", "4", "6"], [{}, {}, {}], group_size=1)


def test_sampled_rollouts_repeat_with_the_seed(policy):
    def odd(prompt: str, text: str, answer: str, **meta) -> float:
        return float(len(text) % 2)  # depends on the sampled continuation

    runs = []
    for _ in range(2):
        fn = OmegaSteps(k=4, max_new_tokens=6, verifier="exact_match", seed=7)
        fn.check = odd
        fn(PROMPTS[:1], ["a\nbb\nccc\nddd"], ["x"], [{}], group_size=1, policy=policy)
        runs.append([(s.mc, s.labels) for s in fn.searches])
    assert runs[0] == runs[1] and runs[0][0][0]


def test_pure_min_reads_the_omega_step_rewards(micro_base, tmp_path, monkeypatch):
    """A 2-step pure_min run whose process rewards are the search labels (weight 0: credit only)."""
    import rlvr.train.advantage as trainer_mod

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
            "rewards={answer={weight=1.0}, "
            "omega_steps={weight=0.0, k=2, max_new_tokens=4, verifier='answer', delimiter=' '}}",
        ),
    )
    train(cfg, run_dir=tmp_path / "r", progress=False)
    assert len(seen) == 2
    for p, mask in seen:
        assert p.shape == mask.shape and bool(((p != 0) <= (mask > 0)).all())
        nz = p[p != 0]
        assert nz.numel() > 0 and set(nz.tolist()) <= {-1.0, 1.0}
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)
