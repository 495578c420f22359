"""Loss aggregations: hand values on a ragged mask, masking, linearity (exact micro-batching)."""

from __future__ import annotations

import pytest
import torch

from rlvr.algos import AGGREGATIONS

close = torch.testing.assert_close

NAMES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"]

# three sequences of lengths 3, 1, 2 in T_max = 4; the 50s sit on masked positions
LOSS = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 50.0, 50.0, 50.0], [-2.0, 6.0, 50.0, 50.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])

# masked sum = 1 + 2 + 3 + 4 - 2 + 6 = 14 over 6 tokens; per-row sums 6, 4, 4; lengths 3, 1, 2
HAND = {
    "token_mean": 14 / 6,  # 2.333333
    "seq_mean_token_mean": (6 / 3 + 4 / 1 + 4 / 2) / 3,  # (2 + 4 + 2) / 3 = 2.666667
    "seq_mean_token_sum": (6 + 4 + 4) / 3,  # 4.666667
    "constant": 14 / (3 * 4),  # N * T_max = 12 -> 1.166667
}


def test_all_registered():
    assert sorted(AGGREGATIONS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_hand_values(name):
    out = AGGREGATIONS[name](LOSS, MASK)
    assert out.dim() == 0
    assert float(out) == pytest.approx(HAND[name], rel=1e-6)


def test_constant_with_max_tokens():
    # 14 / (N * max_tokens) = 14 / (3 * 7) = .666667
    assert float(AGGREGATIONS["constant"](LOSS, MASK, max_tokens=7)) == pytest.approx(14 / 21)
    # the normaliser ignores how many tokens the mask holds
    half = MASK.clone()
    half[0, 2] = 0.0  # masked sum 11
    assert float(AGGREGATIONS["constant"](LOSS, half, max_tokens=7)) == pytest.approx(11 / 21)


def test_constant_uses_padded_width_not_longest_sequence():
    # same data padded to T = 6: longest sequence is still 3, but T_max = mask.shape[-1] = 6
    loss = torch.cat([LOSS, torch.full((3, 2), 50.0)], dim=1)
    mask = torch.cat([MASK, torch.zeros(3, 2)], dim=1)
    assert float(AGGREGATIONS["constant"](loss, mask)) == pytest.approx(14 / 18)
    # the other three do not depend on padding
    for name in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        assert float(AGGREGATIONS[name](loss, mask)) == pytest.approx(HAND[name], rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_masked_positions_do_not_matter(name):
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        junk = torch.randn(3, 4, generator=g) * 1e4
        other = torch.where(MASK.bool(), LOSS, junk)
        assert float(AGGREGATIONS[name](other, MASK)) == pytest.approx(HAND[name], rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_empty_mask_gives_zero_not_nan(name):
    out = AGGREGATIONS[name](LOSS, torch.zeros(3, 4))
    assert float(out) == 0.0


def test_seq_mean_token_mean_counts_an_empty_row_as_zero():
    # row 1 fully masked: (6/3 + 0 + 4/2) / 3 = 4/3
    mask = MASK.clone()
    mask[1] = 0.0
    assert float(AGGREGATIONS["seq_mean_token_mean"](LOSS, mask)) == pytest.approx(4 / 3)


# ---------------------------------------------------------------- linearity


def _data(seed, n=7, t=5):
    g = torch.Generator().manual_seed(seed)
    l1, l2 = torch.randn(n, t, generator=g), torch.randn(n, t, generator=g)
    mask = (torch.rand(n, t, generator=g) > 0.4).float()
    mask[:, 0] = 1.0  # every sequence has at least one token
    return l1, l2, mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (2.5, -0.7), (0.0, 3.0)])
def test_linear_in_the_loss(name, a, b):
    l1, l2, mask = _data(1)
    agg = AGGREGATIONS[name]
    close(agg(a * l1 + b * l2, mask), a * agg(l1, mask) + b * agg(l2, mask))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "chunks",
    [
        [range(0, 3), range(3, 7)],
        [range(0, 1), range(1, 7)],
        [range(0, 2), range(2, 5), range(5, 7)],
    ],
)
def test_micro_batches_embedded_in_zeros_sum_to_full(name, chunks):
    # what the trainer does: each micro-batch's per-token loss is placed in a zero [N, T] tensor,
    # aggregated with the full mask, and the results (and gradients) are summed
    l1, _, mask = _data(2)
    agg = AGGREGATIONS[name]
    x_full = l1.clone().requires_grad_(True)
    full = agg(x_full * 1.0, mask)
    full.backward()

    x = l1.clone().requires_grad_(True)
    total = torch.zeros(())
    for rows in chunks:
        idx = torch.tensor(list(rows))
        emb = torch.zeros_like(l1).index_copy(0, idx, x[idx])
        part = agg(emb, mask)
        part.backward()
        total = total + part.detach()
    close(total, full.detach())
    close(x.grad, x_full.grad)
    # and a single chunk alone is not the full value (the test can tell them apart)
    idx = torch.tensor(list(chunks[0]))
    alone = agg(torch.zeros_like(l1).index_copy(0, idx, l1[idx]), mask)
    assert not torch.allclose(alone, full.detach())
