"""Advantage estimators: hand-computed values, invariants, loop-vs-vectorised."""

from __future__ import annotations

import pytest
import torch

from rlvr.algos import ADVANTAGES
from rlvr.algos.advantages import dr_grpo, grpo, rloo

close = torch.testing.assert_close

# two groups of G = 4
R = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 4.0]])


def test_registered_names():
    assert ADVANTAGES["grpo"] is grpo
    assert ADVANTAGES["dr_grpo"] is dr_grpo
    assert ADVANTAGES["rloo"] is rloo


# ---------------------------------------------------------------- grpo


def test_grpo_hand_values():
    # row 0: mean .5, centred ±.5, unbiased var = 4 * .25 / 3 = 1/3, std = .57735 -> ±.866025
    # row 1: mean 1, centred [-1, -1, -1, 3], var = (1 + 1 + 1 + 9) / 3 = 4, std 2
    #        -> [-.5, -.5, -.5, 1.5]
    want = torch.tensor([[0.866025, -0.866025, -0.866025, 0.866025], [-0.5, -0.5, -0.5, 1.5]])
    close(grpo(R, eps=0.0), want)
    # the default eps = 1e-6 changes these only in the 6th digit
    close(grpo(R), want, atol=1e-5, rtol=0)


def test_grpo_eps_is_added_to_the_std():
    # [0, 2]: mean 1, std = sqrt((1 + 1) / 1) = 1.414214; eps = 1 -> ±1 / 2.414214 = ±.414214
    close(grpo(torch.tensor([[0.0, 2.0]]), eps=1.0), torch.tensor([[-0.414214, 0.414214]]))


def test_grpo_integer_rewards_are_accepted():
    out = grpo(R.long(), eps=0.0)
    assert out.dtype == torch.float32
    close(out, grpo(R, eps=0.0))


@pytest.mark.parametrize(("b", "g"), [(1, 2), (5, 8), (3, 16)])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_sums_to_zero_per_group(b, g, scale):
    r = torch.rand(b, g, generator=torch.Generator().manual_seed(b * 100 + g)) * 3
    a = grpo(r, scale=scale)
    assert a.shape == (b, g)
    close(a.sum(1), torch.zeros(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("value", [0.0, 1.0, 3.0, -2.5, 0.5, 0.375])
@pytest.mark.parametrize("g", [2, 4, 7, 8, 16])
def test_grpo_constant_group_gives_exactly_zero(value, g):
    # a second, non-constant group in the batch must not disturb the constant one
    r = torch.stack([torch.full((g,), value), torch.arange(g, dtype=torch.float32)])
    for scale in ("group", "batch", "none"):
        a = grpo(r, scale=scale)
        assert torch.equal(a[0], torch.zeros(g)), (scale, a[0])
    assert (a[1] != 0).any()


@pytest.mark.parametrize(("value", "g"), [(0.1, 8), (1.2, 8), (3.3, 16)])
def test_grpo_constant_non_dyadic_group_gives_exactly_zero(value, g):
    a = grpo(torch.full((1, g), value))
    # allow float noise of the size of the rewards' rounding, not of eps-scaled noise
    close(a, torch.zeros(1, g), atol=1e-6, rtol=0)


def test_grpo_scale_none_equals_dr_grpo():
    r = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grpo(r, scale="none"), dr_grpo(r))
    assert torch.equal(grpo(R, scale="none"), dr_grpo(R))


def test_grpo_scale_batch_hand_values():
    # all 8 rewards: mean 6/8 = .75; squared deviations 2 * .0625 + 5 * .5625 + 3.25^2 = 13.5;
    # unbiased var 13.5 / 7 = 1.928571, std 1.388730 (one divisor for the whole batch)
    # group-centred: [.5, -.5, -.5, .5] and [-1, -1, -1, 3]
    # .5 / 1.388730 = .360041;  1 / 1.388730 = .720082;  3 / 1.388730 = 2.160247
    want = torch.tensor(
        [[0.360041, -0.360041, -0.360041, 0.360041], [-0.720082, -0.720082, -0.720082, 2.160247]]
    )
    close(grpo(R, scale="batch", eps=0.0), want)


def test_grpo_scale_batch_uses_one_divisor():
    r = torch.rand(5, 8, generator=torch.Generator().manual_seed(1))
    batch, none = grpo(r, scale="batch", eps=0.0), grpo(r, scale="none")
    ratio = none / batch  # one std for every entry
    close(ratio, torch.full_like(ratio, float(ratio[0, 0])))
    # and that std is the batch std of all B*G rewards, computed by hand
    flat = [float(x) for x in r.flatten()]
    m = sum(flat) / len(flat)
    std = (sum((x - m) ** 2 for x in flat) / (len(flat) - 1)) ** 0.5
    assert float(ratio[0, 0]) == pytest.approx(std, rel=1e-5)


def test_grpo_scale_group_differs_from_batch():
    assert not torch.allclose(grpo(R, scale="group"), grpo(R, scale="batch"))


def test_grpo_bad_scale_raises():
    with pytest.raises(ValueError, match="scale"):
        grpo(R, scale="nope")
    with pytest.raises(ValueError, match="scale"):
        grpo(R, scale="Group")


@pytest.mark.parametrize("fn", [grpo, dr_grpo, rloo])
@pytest.mark.parametrize("shape", [(8,), (2, 3, 4), ()])
def test_wrong_rank_raises(fn, shape):
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        fn(torch.rand(shape))


# ---------------------------------------------------------------- dr_grpo


def test_dr_grpo_hand_values():
    # row 0: mean .5 -> ±.5;  row 1: mean 1 -> [-1, -1, -1, 3]; no std division
    close(dr_grpo(R), torch.tensor([[0.5, -0.5, -0.5, 0.5], [-1.0, -1.0, -1.0, 3.0]]))


# ---------------------------------------------------------------- rloo


def test_rloo_hand_values():
    # row 0: A_0 = 1 - (0 + 0 + 1) / 3 = 2/3;  A_1 = 0 - (1 + 0 + 1) / 3 = -2/3
    # row 1: A_0 = 0 - (0 + 0 + 4) / 3 = -4/3; A_3 = 4 - 0 = 4
    want = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [-4 / 3, -4 / 3, -4 / 3, 4.0]])
    close(rloo(R), want)
    # G = 2: [3, 1] -> [3 - 1, 1 - 3]
    close(rloo(torch.tensor([[3.0, 1.0]])), torch.tensor([[2.0, -2.0]]))


@pytest.mark.parametrize("g", [2, 3, 5, 8])
def test_rloo_is_scaled_dr_grpo(g):
    r = torch.rand(4, g, generator=torch.Generator().manual_seed(g))
    close(rloo(r), g / (g - 1) * dr_grpo(r))


def test_rloo_vectorised_equals_loop_over_others():
    r = torch.rand(3, 6, generator=torch.Generator().manual_seed(2))
    b, g = r.shape
    loop = torch.empty(b, g)
    for bi in range(b):
        for i in range(g):
            others = [float(r[bi, j]) for j in range(g) if j != i]
            loop[bi, i] = float(r[bi, i]) - sum(others) / len(others)
    close(rloo(r), loop)


def test_rloo_constant_group_is_zero_and_sums_to_zero():
    r = torch.rand(4, 5, generator=torch.Generator().manual_seed(3))
    close(rloo(r).sum(1), torch.zeros(4), atol=1e-6, rtol=0)
    assert torch.equal(rloo(torch.full((2, 4), 2.0)), torch.zeros(2, 4))


def test_rloo_single_sample_raises():
    with pytest.raises(ValueError, match="G >= 2"):
        rloo(torch.rand(3, 1))
