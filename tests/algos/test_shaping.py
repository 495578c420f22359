"""Reward shaping: hand-computed values, boundaries, neutral settings, vectorised == loop."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import INPUTS, SHAPING
from rlvr.algos.shaping import (
    budget_length,
    cosine_length,
    drpo,
    grpo_lambda,
    overlong,
    par,
    preference_as_reward,
    prm_clip,
    prm_delta,
)
from rlvr.registry import KnobError


def t(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def close(a: torch.Tensor, b: torch.Tensor | list, tol: float = 1e-6) -> bool:
    b = b if isinstance(b, torch.Tensor) else t(b)
    return torch.allclose(a.float(), b.float(), atol=tol, rtol=0)


def random_batch(seed: int, b: int = 6, g: int = 5, max_len: int = 20):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (b, g), generator=gen).float()  # [B, G]
    correct = torch.randint(0, 2, (b, g), generator=gen).float()  # [B, G]
    rewards = correct + 0.1 * torch.rand((b, g), generator=gen)  # [B, G]
    return rewards, lengths, correct


# ---------------------------------------------------------------- registry


def test_registry_names_needs_and_inputs():
    assert set(SHAPING.names()) == {
        "overlong",
        "cosine_length",
        "grpo_lambda",
        "drpo",
        "par",
        "stcr",
        "ssl",
        "budget_length",
    }
    for name in SHAPING:
        assert SHAPING.needs(name) <= INPUTS["shaping"], name
    assert SHAPING.needs("overlong") == {"lengths", "max_len"}
    assert SHAPING.needs("cosine_length") == {"lengths", "correct", "max_len"}
    assert "lengths" not in SHAPING.knobs("drpo")
    assert SHAPING.needs("stcr") == {"lengths", "correct", "max_len"}


def test_registry_knob_checks():
    SHAPING.check_knobs("overlong", {"buffer": 4, "coef": 0.5})
    SHAPING.check_knobs("par", {"ref": "group_mean"})
    SHAPING.check_knobs("par", {"ref": 1})
    with pytest.raises(KnobError, match="buffer"):
        SHAPING.check_knobs("overlong", {"buffer": 0})
    with pytest.raises(KnobError, match="mode"):
        SHAPING.check_knobs("cosine_length", {"mode": "add"})
    with pytest.raises(KnobError, match="threshold"):
        SHAPING.check_knobs("grpo_lambda", {"threshold": 1.5})
    with pytest.raises(KnobError, match="ref"):
        SHAPING.check_knobs("par", {"ref": "median"})


def test_trainer_style_call_with_needed_inputs_only():
    rewards, lengths, correct = random_batch(0)
    shape_in = {"lengths": lengths, "correct": correct, "max_len": 20}
    for name in SHAPING:
        fn = SHAPING[name]
        out = fn(rewards, **{k: shape_in[k] for k in fn.needs})
        assert out.shape == rewards.shape and torch.isfinite(out).all(), name


def test_shape_errors_name_the_field():
    r = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"rewards must have shape \[B, G\]"):
        overlong(torch.zeros(6), lengths=torch.zeros(6), max_len=10)
    with pytest.raises(ValueError, match="lengths must have the shape"):
        overlong(r, lengths=torch.zeros(3, 2), max_len=10)
    with pytest.raises(ValueError, match="correct must hold only 0 and 1"):
        drpo(r, lengths=torch.zeros(2, 3), correct=torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        drpo(r, lengths=-torch.ones(2, 3), correct=torch.zeros(2, 3))


# ---------------------------------------------------------------- overlong (DAPO)


def test_overlong_hand_values_and_boundaries():
    # L_max = 10, L_buf = 4: soft zone (6, 10]
    lengths = t([[0, 5, 6, 7], [8, 9, 10, 10]])
    rewards = torch.ones(2, 4)
    out = overlong(rewards, lengths=lengths, max_len=10, buffer=4)
    assert close(out, [[1, 1, 1, 0.75], [0.5, 0.25, 0.0, 0.0]])
    # exactly at L_max - L_buf: no penalty; exactly at L_max: -1
    assert out[0, 2] == 1.0 and out[1, 2] == 0.0


def test_overlong_beyond_limit_and_override():
    # budget 20, override L_max = 10, buffer 4: beyond 10 -> -1
    lengths = t([[6, 8, 10, 11, 20]])
    out = overlong(torch.zeros(1, 5), lengths=lengths, max_len=20, buffer=4, l_max=10)
    assert close(out, [[0, -0.5, -1, -1, -1]])


def test_overlong_default_buffer_and_coef():
    # L_max = 20 -> default buffer 4; coef 0.5 halves the penalty
    lengths = t([[16, 18, 20]])
    out = overlong(torch.zeros(1, 3), lengths=lengths, max_len=20)
    assert close(out, [[0, -0.5, -1]])
    out = overlong(torch.zeros(1, 3), lengths=lengths, max_len=20, coef=0.5)
    assert close(out, [[0, -0.25, -0.5]])


def test_overlong_neutral_and_bad_buffer():
    rewards, lengths, _ = random_batch(1, max_len=20)
    assert close(overlong(rewards, lengths=lengths, max_len=20, coef=0.0), rewards)
    # short completions are never touched
    assert close(overlong(rewards, lengths=lengths.clamp(max=10), max_len=20, buffer=10), rewards)
    with pytest.raises(ValueError, match="buffer must be in"):
        overlong(rewards, lengths=lengths, max_len=20, buffer=21)


def overlong_loop(rewards, lengths, max_len, buffer, coef):
    out = rewards.clone()
    for b in range(rewards.shape[0]):
        for g in range(rewards.shape[1]):
            length = float(lengths[b, g])
            if length <= max_len - buffer:
                p = 0.0
            elif length <= max_len:
                p = (max_len - buffer - length) / buffer
            else:
                p = -1.0
            out[b, g] = rewards[b, g] + coef * p
    return out


@pytest.mark.parametrize("seed", range(3))
def test_overlong_vectorised_equals_loop(seed):
    rewards, lengths, _ = random_batch(seed, max_len=24)
    got = overlong(rewards, lengths=lengths, max_len=24, buffer=7, l_max=20, coef=0.7)
    assert close(got, overlong_loop(rewards, lengths, 20, 7, 0.7))


# ---------------------------------------------------------------- cosine length


def test_cosine_hand_values_replace_mode():
    # L_max = 10; correct: 2 -> 1, wrong: -10 -> 0, exceed -10
    lengths = t([[0, 5, 9, 10], [0, 5, 10, 3]])
    correct = t([[1, 1, 1, 1], [0, 0, 0, 0]])
    out = cosine_length(torch.zeros(2, 4), lengths=lengths, correct=correct, max_len=10, mode="replace")
    c9 = 1 + 0.5 * (1 + math.cos(0.9 * math.pi))
    w3 = -10 * 0.5 * (1 + math.cos(0.3 * math.pi))
    assert close(out, [[2.0, 1.5, c9, -10.0], [-10.0, -5.0, -10.0, w3]], tol=1e-5)


def test_cosine_swap_mode_keeps_other_components():
    # reward = correctness (weight 1) + 0.5 * format; swap replaces only the correctness part
    lengths = t([[5, 5]])
    correct = t([[1, 0]])
    rewards = correct + 0.5  # both formatted
    out = cosine_length(rewards, lengths=lengths, correct=correct, max_len=10)
    assert close(out, [[1.5 + 0.5, -5.0 + 0.5]])
    out = cosine_length(rewards, lengths=lengths, correct=correct, max_len=10, coef=2.0)
    assert close(out, [[1.5 + 2 * 0.5, 0.5 + 2 * -5.0]])


def test_cosine_neutral_settings_and_preferences():
    rewards, lengths, correct = random_batch(2, max_len=20)
    lengths = lengths.clamp(max=19)
    neutral = dict(correct_short=1.0, correct_long=1.0, wrong_short=0.0, wrong_long=0.0)
    out = cosine_length(rewards, lengths=lengths, correct=correct, max_len=20, **neutral)
    assert close(out, rewards, tol=1e-6)
    # shorter correct answers earn more, longer wrong ones are punished less
    ls = t([[2, 8], [2, 8]])
    ok = t([[1, 1], [0, 0]])
    c = cosine_length(torch.zeros(2, 2), lengths=ls, correct=ok, max_len=20, mode="replace")
    assert c[0, 0] > c[0, 1] and c[1, 0] < c[1, 1]


def cosine_loop(lengths, correct, limit, cs, cl, ws, wl, ex):
    out = torch.zeros_like(lengths)
    for b in range(lengths.shape[0]):
        for g in range(lengths.shape[1]):
            length = float(lengths[b, g])
            short, long_ = (cs, cl) if correct[b, g] == 1 else (ws, wl)
            if length >= limit:
                out[b, g] = ex
            else:
                out[b, g] = long_ + (short - long_) * 0.5 * (1 + math.cos(math.pi * length / limit))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_cosine_vectorised_equals_loop(seed):
    rewards, lengths, correct = random_batch(seed, max_len=30)
    knobs = dict(correct_short=3.0, correct_long=0.5, wrong_short=-4.0, wrong_long=-1.0, exceed=-7.0)
    got = cosine_length(rewards, lengths=lengths, correct=correct, max_len=30, l_max=25, **knobs)
    want = rewards + cosine_loop(lengths, correct, 25, 3.0, 0.5, -4.0, -1.0, -7.0) - correct
    assert close(got, want, tol=1e-5)


# ---------------------------------------------------------------- GRPO-lambda


def test_grpo_lambda_hand_values():
    lengths = t([[2, 4, 6, 10], [2, 4, 6, 10]])
    correct = t([[1, 1, 1, 0], [1, 0, 0, 0]])  # ratios 0.75 and 0.25
    out = grpo_lambda(correct.clone(), lengths=lengths, correct=correct)
    # group 0: lam = 0.5 - (L - 2) / 8 = [0.5, 0.25, 0, -0.5]; the wrong one keeps min(0, lam)
    assert close(out[0], [1.5, 1.25, 1.0, -0.5])
    assert close(out[1], correct[1])  # below the threshold: 0/1 rewards untouched


def test_grpo_lambda_wrong_short_answer_gets_no_bonus():
    lengths = t([[10, 2, 6, 6]])
    correct = t([[1, 0, 1, 1]])
    out = grpo_lambda(torch.zeros(1, 4), lengths=lengths, correct=correct)
    # lam = 0.5 - (L - 2) / 8 = [-0.5, 0.5, 0, 0]; wrong short: min(0, 0.5) = 0
    assert close(out, [[-0.5, 0.0, 0.0, 0.0]])


def test_grpo_lambda_threshold_boundary_top_fraction_and_neutral():
    lengths = t([[2, 6], [2, 6], [2, 6]])
    correct = t([[1, 1], [1, 0], [1, 0]])  # ratios 1, 0.5, 0.5
    out = grpo_lambda(torch.zeros(3, 2), lengths=lengths, correct=correct, threshold=0.5)
    assert close(out, [[0.5, -0.5], [0.5, -0.5], [0.5, -0.5]])  # 0.5 >= 0.5 is selected
    out = grpo_lambda(torch.zeros(3, 2), lengths=lengths, correct=correct, threshold=0.51)
    assert close(out, [[0.5, -0.5], [0, 0], [0, 0]])
    # top_fraction 0.5 -> ceil(1.5) = 2 groups: the best, then the first of the tie
    out = grpo_lambda(torch.zeros(3, 2), lengths=lengths, correct=correct, top_fraction=0.5)
    assert close(out, [[0.5, -0.5], [0.5, -0.5], [0, 0]])
    rewards, ls, ok = random_batch(3)
    assert close(grpo_lambda(rewards, lengths=ls, correct=ok, coef=0.0), rewards)
    assert close(
        grpo_lambda(rewards, lengths=ls, correct=ok, threshold=1.0),
        torch.where(
            ok.mean(1, keepdim=True) == 1, grpo_lambda(rewards, lengths=ls, correct=ok), rewards
        ),
    )


def test_grpo_lambda_equal_lengths_give_zero():
    out = grpo_lambda(torch.ones(1, 3), lengths=t([[4, 4, 4]]), correct=torch.ones(1, 3))
    assert close(out, torch.ones(1, 3))


def grpo_lambda_loop(rewards, lengths, correct, threshold, top_fraction, coef):
    b, g = rewards.shape
    acc = [float(correct[i].mean()) for i in range(b)]
    order = sorted(range(b), key=lambda i: -acc[i])  # stable
    top = set(order[: math.ceil(top_fraction * b)])
    out = rewards.clone()
    for i in range(b):
        if acc[i] < threshold or i not in top:
            continue
        lo, hi = float(lengths[i].min()), float(lengths[i].max())
        for j in range(g):
            lam = 0.0 if hi == lo else 0.5 - (float(lengths[i, j]) - lo) / (hi - lo)
            out[i, j] = rewards[i, j] + coef * (lam if correct[i, j] == 1 else min(0.0, lam))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_grpo_lambda_vectorised_equals_loop(seed):
    rewards, lengths, correct = random_batch(seed, b=9)
    for thr, frac in ((0.4, 1.0), (0.2, 0.3), (0.0, 0.5)):
        got = grpo_lambda(rewards, lengths=lengths, correct=correct, threshold=thr, top_fraction=frac)
        assert close(got, grpo_lambda_loop(rewards, lengths, correct, thr, frac, 1.0), tol=1e-5)


# ---------------------------------------------------------------- DRPO


def test_drpo_hand_values():
    lengths = t([[2, 4, 9, 20]])
    correct = t([[1, 1, 1, 0]])
    out = drpo(correct.clone(), lengths=lengths, correct=correct, coef=0.7)
    # mean over correct = 5, span = 7: bonus = (5 - L) / 7
    assert close(out, [[1 + 0.7 * 3 / 7, 1 + 0.7 * 1 / 7, 1 - 0.7 * 4 / 7, 0.0]])


def test_drpo_wrong_untouched_zero_sum_and_ordering():
    _, lengths, correct = random_batch(5, b=20)
    out = drpo(correct.clone(), lengths=lengths, correct=correct, coef=0.9)
    delta = out - correct  # [B, G]
    assert (delta[correct == 0] == 0).all()
    assert close((delta * correct).sum(1), torch.zeros(20), tol=1e-5)
    assert (delta.abs() < 0.9).all()
    for i in range(20):  # every correct answer stays above every wrong one
        if correct[i].any() and (correct[i] == 0).any():
            assert out[i][correct[i] == 1].min() > out[i][correct[i] == 0].max()


def test_drpo_fewer_than_two_correct_or_equal_lengths_is_neutral():
    rewards = t([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    lengths = t([[3, 5, 9], [4, 4, 1]])
    correct = t([[1, 0, 0], [1, 1, 0]])
    assert close(drpo(rewards, lengths=lengths, correct=correct), rewards)
    assert close(drpo(rewards, lengths=lengths * 0 + 3, correct=correct, coef=0.0), rewards)


def drpo_loop(rewards, lengths, correct, coef):
    out = rewards.clone()
    for i in range(rewards.shape[0]):
        ls = [float(lengths[i, j]) for j in range(rewards.shape[1]) if correct[i, j] == 1]
        if len(ls) < 2 or max(ls) == min(ls):
            continue
        mean, span = sum(ls) / len(ls), max(ls) - min(ls)
        for j in range(rewards.shape[1]):
            if correct[i, j] == 1:
                out[i, j] = rewards[i, j] + coef * (mean - float(lengths[i, j])) / span
    return out


@pytest.mark.parametrize("seed", range(3))
def test_drpo_vectorised_equals_loop(seed):
    rewards, lengths, correct = random_batch(seed, b=12, g=6)
    got = drpo(rewards, lengths=lengths, correct=correct, coef=0.3)
    assert close(got, drpo_loop(rewards, lengths, correct, 0.3), tol=1e-5)


# ---------------------------------------------------------------- PAR


def test_par_values():
    r = t([[0.0, 2.0, -1.0]])
    assert close(par(r), torch.sigmoid(r))
    assert close(par(r, ref=2.0), [[1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**3)]])
    # group mean of [0, 2, -1] = 1/3
    assert close(par(r, ref="group_mean"), torch.sigmoid(r - 1 / 3))
    out = par(torch.randn(4, 5) * 100, ref="group_mean")
    assert ((out >= 0) & (out <= 1)).all()
    with pytest.raises(ValueError, match="group_mean"):
        par(r, ref="median")  # type: ignore[arg-type]


def test_preference_as_reward_broadcasts_and_centres():
    r = t([[1.0, 3.0], [0.0, -2.0]])
    ref = t([[1.0], [-2.0]])  # [B, 1]
    out = preference_as_reward(r, ref)
    assert close(out, [[0.5, torch.sigmoid(t(2.0))], [torch.sigmoid(t(2.0)), 0.5]])


# ---------------------------------------------------------------- PRM clip / delta


def test_prm_clip_hand_values():
    r = t([[0.9, 0.3, 0.6], [0.2, 0.7, 0.1]])
    m = t([[1, 1, 1], [1, 0, 0]])
    assert close(prm_clip(r, m), [[0.0, -0.2, 0.0], [-0.3, 0.0, 0.0]])
    assert close(prm_clip(r, m, eta=0.0), torch.zeros(2, 3))  # scores >= 0, eta 0: all zero
    assert (prm_clip(torch.rand(5, 7), torch.ones(5, 7)).sum(1) <= 0).all()  # bounded above by 0


def test_prm_delta_hand_values_and_telescoping():
    r = t([[0.9, 0.3, 0.6], [0.2, 0.7, 0.1], [0.4, 0.8, 0.0]])
    m = t([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    out = prm_delta(r, m)
    assert close(out, [[0.6, -0.3, 0.6], [0.2, 0.0, 0.0], [-0.4, 0.8, 0.0]], tol=1e-6)
    # the sum of the shaped rewards equals the first step's reward
    assert close(out.sum(1), r[:, 0], tol=1e-6)


def test_prm_mask_errors():
    with pytest.raises(ValueError, match="prefix"):
        prm_delta(torch.zeros(1, 3), t([[1, 0, 1]]))
    with pytest.raises(ValueError, match=r"\[N, S\]"):
        prm_clip(torch.zeros(2, 3), torch.ones(3, 2))


def prm_loop(r, m, mode, eta=0.5):
    out = torch.zeros_like(r)
    for i in range(r.shape[0]):
        k_last = int(m[i].sum()) - 1
        for k in range(k_last + 1):
            if mode == "clip":
                out[i, k] = min(float(r[i, k]) - eta, 0.0)
            else:
                out[i, k] = r[i, k] - r[i, k + 1] if k < k_last else r[i, k]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_prm_vectorised_equals_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand((7, 6), generator=gen)  # [N, S]
    n_steps = torch.randint(0, 7, (7,), generator=gen)
    m = (torch.arange(6).unsqueeze(0) < n_steps.unsqueeze(1)).float()  # [N, S] prefixes
    assert close(prm_clip(r, m, eta=0.4), prm_loop(r, m, "clip", 0.4))
    assert close(prm_delta(r, m), prm_loop(r, m, "delta"), tol=1e-6)


# ---------------------------------------------------------------- budget-relative length reward


def test_budget_length_hand_values():
    r = t([[1.0, 1.0, 0.0, 1.0]])
    lengths = t([[0.0, 5.0, 2.0, 12.0]])
    correct = t([[1.0, 1.0, 0.0, 1.0]])
    got = budget_length(r, lengths=lengths, correct=correct, max_len=10, coef=0.5)
    # correct: 1 + 0.5 (1 - 0/10), 1 + 0.5 (1 - 5/10); wrong: no bonus; over the budget: none
    assert close(got, [[1.5, 1.25, 0.0, 1.0]])
    # l_max overrides the generation budget
    got = budget_length(r, lengths=lengths, correct=correct, max_len=10, coef=1.0, l_max=20)
    assert close(got, [[2.0, 1.75, 0.0, 1.4]])


def test_budget_length_neutral_bounds_and_tighter_budget():
    rewards, lengths, correct = random_batch(0)
    assert close(budget_length(rewards, lengths=lengths, correct=correct, max_len=20, coef=0.0), rewards)
    bonus = budget_length(rewards, lengths=lengths, correct=correct, max_len=20) - rewards
    assert bool((bonus >= 0).all()) and bool((bonus < 0.5 + 1e-6).all())
    assert bool((bonus[correct == 0] == 0).all())
    # a tighter budget never pays more for the same completion
    tight = budget_length(rewards, lengths=lengths, correct=correct, max_len=10) - rewards
    assert bool((tight <= bonus + 1e-6).all())
    with pytest.raises(KnobError, match="coef"):
        SHAPING.check_knobs("budget_length", {"coef": -1.0})
    with pytest.raises(ValueError, match="length limit must be >= 1"):
        budget_length(rewards, lengths=lengths, correct=correct, max_len=0)


@pytest.mark.parametrize("seed", range(3))
def test_budget_length_vectorised_equals_loop(seed):
    rewards, lengths, correct = random_batch(seed)
    got = budget_length(rewards, lengths=lengths, correct=correct, max_len=16, coef=0.3)
    want = rewards.clone()
    for b in range(rewards.shape[0]):
        for g in range(rewards.shape[1]):
            if correct[b, g] == 1:
                want[b, g] += 0.3 * (1 - min(float(lengths[b, g]), 16.0) / 16.0)
    assert close(got, want)
