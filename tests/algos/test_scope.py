"""SCOPE's dual-path credit (``credit:scope``): hand values on one group of four, the neutral
setting, uniform weights at a large temperature, a plain loop, and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import CREDIT
from rlvr.algos.advantages import grpo
from rlvr.algos.credit import opd, scope
from rlvr.registry import KnobError

close = torch.testing.assert_close
LN3 = math.log(3)


def _batch():
    """B = 1 x G = 4, T = 2: rows 0, 1 correct (reward 1), rows 2, 3 wrong (reward 0); rows 1 and 3
    count only their first token (the 9s sit on masked positions).

    Student: mean log pi_old of row 0 = -0.5, of row 1 = -(0.5 + ln 3), so l^S = (0.5, 0.5 + ln 3).
    Teacher on the wrong rows: mean log pi_T of row 2 = -1, of row 3 = -(1 + ln 3), so
    l^T = (1, 1 + ln 3); d = teacher - old = [1, -0.5 | -ln 3]. The teacher's values on the correct
    rows are never read."""
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    old = torch.tensor([[-0.5, -0.5], [-(0.5 + LN3), 9.0], [-2.0, -0.5], [-1.0, 9.0]])
    teacher = torch.tensor([[-7.0, -7.0], [-7.0, 9.0], [-1.0, -1.0], [-(1.0 + LN3), 9.0]])
    return rewards, mask, old, teacher


def _scope(**knobs):
    rewards, mask, old, teacher = _batch()
    return scope(rewards, mask, old_logp=old, teacher_logp=teacher, **knobs)


def test_scope_hand_values_on_one_group_of_four():
    # tau = 1. Teacher path (rows 2, 3): softmax(-1, -1 - ln 3) = (3/4, 1/4), times n = 2: w^T =
    # (1.5, 0.5): the row the teacher finds likelier counts three times as much.
    # MLE path (rows 0, 1): softmax(0.5, 0.5 + ln 3) = (1/4, 3/4), times 2: w^S = (0.5, 1.5): the
    # row the student is less sure of counts three times as much.
    want = torch.tensor(
        [
            [0.5, 0.5],  # w^S_0 on every counted token
            [1.5, 0.0],  # w^S_1
            [1.5 * 1.0, 1.5 * -0.5],  # w^T_2 d
            [0.5 * -LN3, 0.0],  # w^T_3 d
        ]
    )
    close(_scope(), want)
    # coefficients scale each path; the outcome term adds grpo of (1, 1, 0, 0): +-0.5 / (std + eps),
    # std (unbiased) = sqrt(1/3)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    mixed = torch.tensor(
        [
            [0.25 + a, 0.25 + a],
            [0.75 + a, 0.0],
            [3.0 - a, -1.5 - a],
            [-LN3 - a, 0.0],
        ]
    )
    close(_scope(mle_coef=0.5, teacher_coef=2.0, outcome_coef=1.0), mixed)
    # tau = 2: the ratios become sqrt(3) : 1, w = 2 sqrt 3 / (1 + sqrt 3) and 2 / (1 + sqrt 3)
    hi, lo = 2 * math.sqrt(3) / (1 + math.sqrt(3)), 2 / (1 + math.sqrt(3))
    close(
        _scope(tau=2.0),
        torch.tensor([[lo, lo], [hi, 0.0], [hi, -0.5 * hi], [lo * -LN3, 0.0]]),
    )
    # correct_at above every reward: all four rows take the teacher path; softmax over the four
    # mean teacher log-probs (-7, -7, -1, -1 - ln 3)
    allw = _scope(correct_at=2.0)
    e = torch.tensor([math.exp(-7), math.exp(-7), math.exp(-1), math.exp(-1 - LN3)], dtype=torch.float64)
    w = (4 * e / e.sum()).float()
    d = torch.tensor([[-6.5, -6.5], [-7.0 - (-(0.5 + LN3)), 0.0], [1.0, -0.5], [-LN3, 0.0]])
    close(allw, w[:, None] * d)


def test_scope_without_its_paths_is_grpo_broadcast_to_the_bit():
    gen = torch.Generator().manual_seed(5)
    rewards = (torch.rand(3, 4, generator=gen) > 0.5).float()
    rewards[0] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    rewards[2] = 1.0  # a constant group
    mask = (torch.rand(12, 6, generator=gen) > 0.3).float()  # [N, T] with holes
    grpo_tok = torch.where(mask.bool(), grpo(rewards).reshape(-1, 1), 0.0)  # [N, T]
    junk = torch.randn(12, 6, generator=gen)
    for inputs in ({"old_logp": junk, "teacher_logp": junk}, {}):
        out = scope(rewards, mask, teacher_coef=0.0, mle_coef=0.0, outcome_coef=1.0, **inputs)
        assert torch.equal(out, grpo_tok)
        assert torch.equal(out, opd(rewards, mask, teacher_coef=0.0, outcome_coef=1.0, **inputs))


def test_scope_at_a_large_temperature_is_opd_on_wrong_rows_and_a_constant_on_right_ones():
    gen = torch.Generator().manual_seed(7)
    rewards = (torch.rand(4, 5, generator=gen) > 0.5).float()
    mask = (torch.rand(20, 6, generator=gen) > 0.3).float()
    mask[:, 0] = 1.0
    old, teacher = -torch.rand(20, 6, generator=gen) * 3, -torch.rand(20, 6, generator=gen) * 3
    right = (rewards.reshape(-1) >= 1.0)[:, None]  # [N, 1]
    kw = {"old_logp": old, "teacher_logp": teacher, "tau": 1e30}
    want = opd(rewards, mask, old_logp=old, teacher_logp=teacher, teacher_coef=0.7)
    got = scope(rewards, mask, teacher_coef=0.7, mle_coef=0.0, **kw)
    assert torch.equal(got, torch.where(right, 0.0, want))
    got = scope(rewards, mask, teacher_coef=0.0, mle_coef=0.3, **kw)
    assert torch.equal(got, torch.where(right & mask.bool(), 0.3, 0.0))


def _loop(rewards, mask, old, teacher, teacher_coef, mle_coef, outcome_coef, tau, correct_at):
    b, g = rewards.shape
    n, t = mask.shape
    out = torch.zeros(n, t, dtype=torch.float64)
    mean = {}
    for i in range(n):
        cnt = [j for j in range(t) if mask[i, j]]
        if cnt:
            mean[i] = (
                sum(float(teacher[i, j]) for j in cnt) / len(cnt),
                sum(float(old[i, j]) for j in cnt) / len(cnt),
            )
    for p in range(b):
        grp = [float(x) for x in rewards[p]]
        mu = sum(grp) / g
        sd = math.sqrt(sum((x - mu) ** 2 for x in grp) / (g - 1))
        rows = range(p * g, p * g + g)
        wrong = [i for i in rows if i in mean and grp[i - p * g] < correct_at]
        right = [i for i in rows if i in mean and grp[i - p * g] >= correct_at]
        zt = {i: math.exp(mean[i][0] / tau) for i in wrong}  # -l^T / tau
        zs = {i: math.exp(-mean[i][1] / tau) for i in right}  # +l^S / tau
        for i in rows:
            a = (grp[i - p * g] - mu) / (sd + 1e-6)
            for j in range(t):
                if not mask[i, j]:
                    continue
                v = outcome_coef * a
                if i in zt:
                    w = len(wrong) * zt[i] / sum(zt.values())
                    v += teacher_coef * w * float(teacher[i, j] - old[i, j])
                if i in zs:
                    v += mle_coef * len(right) * zs[i] / sum(zs.values())
                out[i, j] = v
    return out.float()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scope_matches_a_plain_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(4, 5, generator=gen) > 0.5).float() + 0.1 * (seed == 2)
    rewards[3] = 0.0  # a group without a correct row: its MLE path is empty
    mask = (torch.rand(20, 6, generator=gen) > 0.3).float()
    mask[4] = 0.0  # a row without counted tokens takes neither path
    old, teacher = -torch.rand(20, 6, generator=gen) * 3, -torch.rand(20, 6, generator=gen) * 3
    for knobs in ((1.0, 1.0, 0.0, 1.0, 1.0), (0.4, 2.0, 1.0, 0.25, 1.0), (1.5, 0.5, 0.3, 4.0, 0.5)):
        tc, mc, oc, tau, at = knobs
        got = scope(
            rewards,
            mask,
            old_logp=old,
            teacher_logp=teacher,
            teacher_coef=tc,
            mle_coef=mc,
            outcome_coef=oc,
            tau=tau,
            correct_at=at,
        )
        close(got, _loop(rewards, mask, old, teacher, *knobs), rtol=1e-5, atol=1e-6)


def test_scope_group_weights_average_one_per_path():
    gen = torch.Generator().manual_seed(3)
    rewards = (torch.rand(6, 8, generator=gen) > 0.5).float()
    mask = torch.ones(48, 5)
    old, teacher = -torch.rand(48, 5, generator=gen) * 3, -torch.rand(48, 5, generator=gen) * 3
    right = rewards >= 1.0  # [B, G]
    w_s = scope(rewards, mask, old_logp=old, teacher_logp=teacher, teacher_coef=0.0)[:, 0].view(6, 8)
    d = (teacher - old)[:, 0].view(6, 8)
    w_t = scope(rewards, mask, old_logp=old, teacher_logp=teacher, mle_coef=0.0)[:, 0].view(6, 8) / d
    for p in range(6):
        if right[p].any():
            close(w_s[p][right[p]].mean(), torch.tensor(1.0))
        if (~right[p]).any():
            close(w_t[p][~right[p]].mean(), torch.tensor(1.0))
        assert (w_s[p][~right[p]] == 0).all()


def test_scope_registration_errors_and_bounds():
    assert CREDIT["scope"] is scope
    assert CREDIT.needs("scope") == {"old_logp", "teacher_logp"}
    assert CREDIT.knobs("scope") == {
        "teacher_coef": 1.0,
        "mle_coef": 1.0,
        "outcome_coef": 0.0,
        "tau": 1.0,
        "correct_at": 1.0,
        "scale": "group",
        "eps": 1e-6,
    }
    bad = (
        {"teacher_coef": -1.0},
        {"mle_coef": -0.1},
        {"outcome_coef": -1.0},
        {"tau": 0.0},
        {"eps": -1.0},
    )
    for knobs in bad:
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("scope", knobs)
    CREDIT.check_knobs("scope", {"tau": 0.5, "correct_at": 0.5, "outcome_coef": 1.0})
    rewards, mask, old, teacher = _batch()
    with pytest.raises(ValueError, match="scope needs 'teacher_logp'"):
        scope(rewards, mask, old_logp=old)
    with pytest.raises(ValueError, match="scope needs 'old_logp'"):
        scope(rewards, mask, teacher_logp=teacher)
    with pytest.raises(ValueError, match="scope needs 'old_logp'"):
        scope(rewards, mask, teacher_coef=0.0)  # the MLE path reads the student's perplexity
    with pytest.raises(ValueError, match="teacher_logp must have the shape of mask"):
        scope(rewards, mask, old_logp=old, teacher_logp=teacher[:, :1])
    with pytest.raises(ValueError, match=r"rewards .* has 4 completions but mask has 3 rows"):
        scope(rewards, mask[:3], old_logp=old[:3], teacher_logp=teacher[:3])
    # the MLE path alone never reads the teacher
    scope(rewards, mask, old_logp=old, teacher_coef=0.0)
