"""Prompt selection strategies on synthetic success rates, the shared tracker, and DAPO's filter."""

from __future__ import annotations

import numpy as np
import pytest

from rlvr.data.samplers import SAMPLERS, PromptStats, informative_groups


def _stats(rates, attempts=100, step=0, categories=None):
    """A pool whose prompt i was seen once, at ``step``, with rates[i] * attempts successes."""
    s = PromptStats(len(rates), categories)
    for i, p in enumerate(rates):
        if p is not None:
            s.update(i, step=step, successes=p * attempts, attempts=attempts)
    return s


def test_counts_with_decay_hand_values():
    s = PromptStats(2)
    s.update(0, step=1, successes=2, attempts=4)
    s.update(0, step=3, successes=1, attempts=4)
    s.update(1, step=3, successes=4, attempts=4, abs_adv=0.5)
    succ, att = s.counts(step=3, decay=0.5)
    # prompt 0: 0.5^2 * 2 + 1 = 1.5 successes of 0.25 * 4 + 4 = 5 attempts
    np.testing.assert_allclose(succ, [1.5, 4.0])
    np.testing.assert_allclose(att, [5.0, 4.0])
    np.testing.assert_allclose(s.counts(step=3)[0], [3.0, 4.0])  # no decay
    np.testing.assert_allclose(s.success_rate(step=3), [(3 + 1) / (8 + 2), (4 + 1) / (4 + 2)])
    assert s.seen().tolist() == [2, 1] and s.last_step().tolist() == [3, 3]


def test_vectorised_counts_equal_the_loop_and_survive_a_round_trip():
    rng = np.random.default_rng(4)
    s = PromptStats(7)
    for step in range(200):  # more observations than the flat buffer's first capacity
        for i in rng.choice(7, 3, replace=False):
            s.update(int(i), step=step, successes=float(rng.integers(0, 5)), attempts=4)
    for decay in (1.0, 0.97, 0.5):
        want_s, want_a = np.zeros(7), np.zeros(7)  # the definition, one observation at a time
        for i, h in enumerate(s.history):
            for t, succ, att, _ in h:
                w = decay ** max(150 - t, 0)  # (observations after step 150 count in full)
                want_s[i] += w * succ
                want_a[i] += w * att
        got_s, got_a = s.counts(150, decay)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-12)
        np.testing.assert_allclose(got_a, want_a, rtol=1e-12)
        t = PromptStats(7)
        t.load_state_dict(s.state_dict())
        assert all(
            np.array_equal(x, y) for x, y in zip(t.counts(150, decay), (got_s, got_a), strict=True)
        )


def test_state_round_trip_and_size_check():
    s = _stats([0.1, None, 0.9], categories=["a", "b", "a"])
    t = PromptStats(3)
    t.load_state_dict(s.state_dict())
    assert t.history == s.history and t.categories == ["a", "b", "a"]
    with pytest.raises(ValueError, match="statistics of 3 prompts, the pool has 4"):
        PromptStats(4).load_state_dict(s.state_dict())


def _pick(name, stats, b, step, rng):
    """A sampler's indices (an allocating sampler's counts are dropped; group size 4)."""
    inputs = {"group_size": 4} if "group_size" in SAMPLERS[name].needs else {}
    out = SAMPLERS[name](stats, b, step, rng, **inputs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_returns_distinct_indices_in_range(name):
    stats = _stats([0.0, 0.2, 0.5, 0.7, 1.0, None, None, 0.4], categories=list("aabbccdd"))
    rng = np.random.default_rng(0)
    for step in range(5):
        idx = _pick(name, stats, 4, step, rng)
        assert len(idx) == 4 and len(set(idx.tolist())) == 4
        assert all(0 <= i < 8 for i in idx)
    with pytest.raises(ValueError, match="cannot pick 9 distinct prompts from a pool of 8"):
        _pick(name, stats, 9, 0, rng)


def test_samplers_are_reproducible():
    stats = _stats([0.1, 0.5, 0.9, None, 0.3, 0.6])
    for name in SAMPLERS.names():
        a = _pick(name, stats, 3, 2, np.random.default_rng(7))
        b = _pick(name, stats, 3, 2, np.random.default_rng(7))
        assert a.tolist() == b.tolist(), name


def test_vade_equals_a_loop_over_prompts():
    stats = PromptStats(5)
    for i, (succ, t) in enumerate([(0, 1), (4, 2), (2, 0), (1, 3), (3, 3)]):
        stats.update(i, step=t, successes=succ, attempts=4)
    got = SAMPLERS["vade"](stats, 2, 3, np.random.default_rng(1), decay=0.8, prior_a=1.0, prior_b=2.0)
    rng = np.random.default_rng(1)
    alpha, beta = [], []
    for h in stats.history:
        (t, succ, att, _), w = h[0], 0.8 ** (3 - h[0][0])
        alpha.append(1.0 + w * succ)
        beta.append(2.0 + w * (att - succ))
    theta = rng.beta(np.array(alpha), np.array(beta))
    info = [th * (1 - th) for th in theta]
    expected = sorted(range(5), key=lambda i: -info[i])[:2]
    assert got.tolist() == expected


def test_vade_prefers_uncertain_prompts():
    """Prompts always solved or never solved (with much evidence) are almost never picked."""
    rates = [0.0] * 10 + [1.0] * 10 + [0.5] * 5
    stats = _stats(rates, attempts=64)
    rng = np.random.default_rng(0)
    picks = np.concatenate([SAMPLERS["vade"](stats, 5, 0, rng) for _ in range(200)])
    assert np.mean(picks >= 20) > 0.95


def test_vade_decay_returns_old_evidence_to_the_prior():
    """A prompt solved always long ago looks uncertain again under strong decay."""
    stats = PromptStats(2)
    stats.update(0, step=0, successes=64, attempts=64)  # old: always solved
    stats.update(1, step=100, successes=64, attempts=64)  # recent: always solved
    rng = np.random.default_rng(0)
    picks = [int(SAMPLERS["vade"](stats, 1, 100, rng, decay=0.9)[0]) for _ in range(200)]
    assert np.mean(np.array(picks) == 0) > 0.95
    picks = [int(SAMPLERS["vade"](stats, 1, 100, rng, decay=1.0)[0]) for _ in range(200)]
    assert 0.2 < np.mean(np.array(picks) == 0) < 0.8  # no decay: both equally certain


def test_difficulty_targeted_picks_nearest_to_target():
    rates = [0.0, 0.1, 0.45, 0.9, 0.55, 1.0, 0.3]
    stats = _stats(rates, attempts=1000)
    idx = SAMPLERS["difficulty_targeted"](stats, 3, 0, np.random.default_rng(0), temperature=0.0)
    assert sorted(idx.tolist()) == [2, 4, 6]  # |p - 0.5| = 0.05, 0.05, 0.2
    idx = SAMPLERS["difficulty_targeted"](
        stats, 2, 0, np.random.default_rng(0), temperature=0.0, target=0.1
    )
    assert sorted(idx.tolist()) == [0, 1]
    rng = np.random.default_rng(0)
    picks = np.concatenate(
        [SAMPLERS["difficulty_targeted"](stats, 1, 0, rng, temperature=0.05) for _ in range(500)]
    )
    counts = np.bincount(picks, minlength=7)
    assert counts[2] + counts[4] > 0.8 * 500 and counts[0] + counts[5] < 10


def test_curriculum_grows_from_easy_to_hard():
    rates = [0.95, 0.9, 0.1, 0.05, 0.5, 0.6, 0.2, 0.8]  # easiest: 0, 1, 7, 5
    stats = _stats(rates, attempts=1000)
    rng = np.random.default_rng(0)
    early = np.concatenate([SAMPLERS["curriculum"](stats, 2, 0, rng, start=0.5) for _ in range(100)])
    assert set(early.tolist()) == {0, 1, 7, 5}
    late = np.concatenate(
        [SAMPLERS["curriculum"](stats, 2, 100, rng, start=0.5, ramp_steps=100) for _ in range(200)]
    )
    assert set(late.tolist()) == set(range(8))
    mid = SAMPLERS["curriculum"]
    assert len(mid(stats, 6, 0, rng, start=0.25)) == 6  # at least b prompts are eligible


def test_sec_category_values_and_preference():
    cats = ["easy"] * 4 + ["hard"] * 4
    stats = PromptStats(8, cats)
    stats.update(0, step=1, successes=4, attempts=4, abs_adv=0.0)
    stats.update(4, step=1, successes=2, attempts=4, abs_adv=1.0)
    stats.update(5, step=2, successes=2, attempts=4, abs_adv=0.6)
    from rlvr.data.samplers import _category_value

    assert _category_value(stats, "easy", 0.5) == 0.0
    assert _category_value(stats, "hard", 0.5) == pytest.approx(0.5 * 0.5 * 1.0 + 0.5 * 0.6)  # 0.55
    rng = np.random.default_rng(0)
    picks = np.concatenate([SAMPLERS["sec"](stats, 1, 3, rng, temperature=0.1) for _ in range(300)])
    assert np.mean(picks >= 4) > 0.95  # exp(5.5) : 1
    both = SAMPLERS["sec"](stats, 8, 3, rng)  # more picks than one category holds
    assert sorted(both.tolist()) == list(range(8))


def test_informative_groups_hand_values():
    r = np.array([[1, 1, 1], [0, 1, 0], [0.5, 0.5, 0.5], [0.2, 0.2, 0.21]])
    assert informative_groups(r).tolist() == [False, True, False, True]
    assert informative_groups(r, atol=0.05).tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        informative_groups(np.zeros(3))


# ---------------------------------------------------------------------------------------- knapsack


def test_knapsack_value_hand_values():
    from rlvr.data.samplers import knapsack_value

    # p = 0.5, n = 2: (1 - 0.25 - 0.25) * 0.5 * 0.25 = 0.0625
    assert knapsack_value(2, 0.5) == pytest.approx(0.0625)
    # p = 0.1, n = 4: (1 - 1e-4 - 0.6561) * 0.1 * 0.81
    assert knapsack_value(4, 0.1) == pytest.approx((1 - 1e-4 - 0.6561) * 0.081)
    assert knapsack_value(10, 0.0) == 0 and knapsack_value(10, 1.0) == 0


def test_knapsack_allocation_is_optimal_against_brute_force():
    import itertools

    from rlvr.data.samplers import knapsack_allocation, knapsack_value

    rng = np.random.default_rng(0)
    for _ in range(30):
        b = int(rng.integers(2, 5))
        p = rng.uniform(0.01, 0.99, size=b)
        lo, hi = 1, 6
        budget = int(rng.integers(b * lo, b * hi + 1))
        got = knapsack_allocation(p, budget, min_rollouts=lo, max_rollouts=hi)
        assert got.sum() == budget and got.min() >= lo and got.max() <= hi
        best = max(
            knapsack_value(np.array(n), p).sum()
            for n in itertools.product(range(lo, hi + 1), repeat=b)
            if sum(n) == budget
        )
        assert knapsack_value(got, p).sum() == pytest.approx(best, rel=1e-12)


def test_knapsack_moves_budget_from_easy_to_hard_prompts():
    from rlvr.data.samplers import knapsack_allocation

    # a nearly solved prompt, a hard one, two in the middle; 4 x 8 = 32 rollouts
    n = knapsack_allocation(np.array([0.97, 0.05, 0.5, 0.4]), 32, min_rollouts=2, max_rollouts=20)
    assert n[0] == 2  # saturated: the minimum
    assert n[1] > 8  # hard: more than the uniform 8, to get a non-zero gradient at all
    assert n.sum() == 32
    with pytest.raises(ValueError, match="budget of 100"):
        knapsack_allocation(np.array([0.5, 0.5]), 100, min_rollouts=2, max_rollouts=20)


def test_knapsack_sampler_uses_shared_stats():
    stats = PromptStats(6)
    for i, (s, a) in enumerate([(8, 8), (0, 8), (4, 8), (8, 8), (0, 8), (4, 8)]):
        stats.update(i, step=1, successes=s, attempts=a)
    idx, n = SAMPLERS["knapsack"](stats, 6, 2, np.random.default_rng(0), group_size=4, max_rollouts=12)
    assert sorted(idx.tolist()) == list(range(6)) and n.sum() == 24
    by_prompt = dict(zip(idx.tolist(), n.tolist(), strict=True))
    # posterior means: 9/10 (easy), 1/10 (hard), 1/2: the easy ones get the minimum
    assert by_prompt[0] == by_prompt[3] == 2
    assert by_prompt[2] > 2 and by_prompt[1] > 2
    with pytest.raises(ValueError, match="min_rollouts"):
        SAMPLERS["knapsack"](stats, 2, 2, np.random.default_rng(0), group_size=40)
