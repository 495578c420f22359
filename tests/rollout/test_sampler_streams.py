"""Partition-independent sampling: per-row seed streams, inverse-CDF sampling, and the default path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr.rollout import generate, left_pad
from rlvr.rollout.sampler import sample_inverse_cdf, stream_seeds

PROMPTS = [
    "<|user|>1 + 2 =<|end|><|assistant|>",
    "<|user|>17 - 3 + 5 =<|end|><|assistant|>",  # longest: the others are left-padded
    "<|user|>4 =<|end|><|assistant|>",
]
G = 4


def _ids(tok):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _gen(model, tok, prompts, *, t=8, **kw):
    return generate(
        model,
        prompts,
        num_samples=G,
        max_new_tokens=t,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        **kw,
    )


def _rows(roll):
    """Each row's completion up to its length, and its old_logp there."""
    out = []
    for r in range(len(roll)):
        n = int(roll.lengths[r])
        out.append((roll.completion_ids[r, :n].tolist(), roll.old_logp[r, :n], roll.finish[r]))
    return out


def _assert_same_rows(a, b):
    assert len(a) == len(b)
    for r, ((ta, la, fa), (tb, lb, fb)) in enumerate(zip(a, b, strict=True)):
        assert ta == tb, r
        assert fa == fb, r
        torch.testing.assert_close(la, lb, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# sample_inverse_cdf


def test_inverse_cdf_hand_values_and_boundaries():
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]])  # [3, 3]
    # row 0: C = (0.2, 0.5, 1.0); row 1: C = (0, 0.5, 1.0); row 2: C = (0.25, 0.5, 1.0)
    cases = [
        ([0.0, 0.0, 0.0], [0, 1, 0]),  # row 1: token 0 has zero probability and is never taken
        ([0.1, 0.49, 0.2], [0, 1, 0]),
        ([0.25, 0.5, 0.25], [1, 2, 1]),  # u at a boundary C_v takes the next token (exact in float32)
        ([0.5, 0.999, 0.75], [2, 2, 2]),
    ]
    for u, expect in cases:
        assert sample_inverse_cdf(probs, torch.tensor(u)).tolist() == expect, u


def test_inverse_cdf_clamps_when_rounding_leaves_mass_below_u():
    # rows that sum to less than 1: u beyond the last cumulative value would index V
    probs = torch.tensor([[0.25, 0.25, 0.4999], [0.5, 0.4999, 0.0], [0.4999, 0.0, 0.0]])  # [3, 3]
    u = torch.tensor([0.99995, 0.99995, 0.9])
    # row 0 clamps to V - 1; rows 1 and 2 to their last token of positive probability, never a
    # zero-probability (for example top-p filtered) token
    assert sample_inverse_cdf(probs, u).tolist() == [2, 1, 0]


def test_inverse_cdf_frequencies_on_a_uniform_grid():
    """On M evenly spaced u, token v is taken exactly round(M * p_v) times (vectorised == loop)."""
    p = torch.tensor([0.1, 0.0, 0.35, 0.05, 0.5])
    m = 1000
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m  # [M]
    tok = sample_inverse_cdf(p.double().expand(m, -1), u)  # [M]
    counts = torch.bincount(tok, minlength=5)
    assert counts.tolist() == [100, 0, 350, 50, 500]
    cum = p.double().cumsum(0).tolist()
    loop = [next((v for v, c in enumerate(cum) if c > x), 4) for x in u.tolist()]
    assert tok.tolist() == loop


# --------------------------------------------------------------------------------------------------
# stream_seeds


def test_stream_seeds_do_not_depend_on_the_other_groups():
    full = stream_seeds(5, [0, 1, 2], [2, 2, 2])
    assert len(full) == 6 and len(set(full)) == 6
    assert all(0 <= s < 2**63 for s in full)
    assert stream_seeds(5, [0], [2]) + stream_seeds(5, [1, 2], [2, 2]) == full
    assert stream_seeds(5, [2, 0], [2, 2]) == full[4:6] + full[0:2]  # any order, any grouping
    assert stream_seeds(5, [1], [3])[:2] == full[2:4]  # sample k's seed does not depend on the size
    assert stream_seeds(5, [1], [0]) == []
    # the definition: SeedSequence(base, spawn_key=(group, k)), 64 bits shifted to 63
    state = np.random.SeedSequence(5, spawn_key=(2, 1)).generate_state(1, dtype=np.uint64)
    assert full[5] == int(state[0]) >> 1
    other = stream_seeds(6, [0, 1, 2], [2, 2, 2])
    assert not set(other) & set(full)


def test_stream_seeds_refuses_bad_arguments():
    with pytest.raises(ValueError, match="3 groups but 2 sizes"):
        stream_seeds(0, [0, 1, 2], [4, 4])
    with pytest.raises(ValueError, match="base must be >= 0"):
        stream_seeds(-1, [0], [4])
    with pytest.raises(ValueError, match="group -1 of size 4"):
        stream_seeds(0, [-1], [4])


# --------------------------------------------------------------------------------------------------
# generate: the default path (one uniform per row and step)


def _reference_default(model, prompts, *, t, eos, pad, seed):
    """The default sampler without a cache: every step a full forward over prompt + prefix, then one
    uniform per row, ``torch.rand(N)`` from one generator, and the token where the cumulative
    distribution first exceeds it (a loop over the rows)."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = left_pad(prompts, pad)  # [B, P]
    ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)  # [N, P]
    n = ids.shape[0]
    done = torch.zeros(n, dtype=torch.bool)  # [N]
    cols = []
    for _ in range(t):
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [N, P + k]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]  # [N, V]
        probs = logits.float().softmax(-1)  # [N, V]
        u = torch.rand(n, generator=gen)  # [N]
        tok = torch.tensor([int((probs[i].cumsum(0) <= u[i]).sum()) for i in range(n)])  # [N]
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        cols.append(tok)
        done = done | (tok == eos)
        if bool(done.all()):
            break
        ids = torch.cat([ids, tok[:, None]], 1)
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype)], 1)
    return torch.stack(cols, 1)  # [N, T]


def test_default_path_is_one_uniform_per_row_and_step_from_the_generator(micro_model):
    model, tok = micro_model
    prompts = _ids(tok)
    roll = _gen(model, tok, prompts, generator=torch.Generator().manual_seed(3))
    ref = _reference_default(model, prompts, t=8, eos=tok.eos_token_id, pad=tok.pad_token_id, seed=3)
    assert torch.equal(roll.completion_ids, ref)
    again = _gen(model, tok, prompts, generator=torch.Generator().manual_seed(3), row_seeds=None)
    assert torch.equal(again.completion_ids, roll.completion_ids)
    assert torch.equal(again.old_logp, roll.old_logp)


# --------------------------------------------------------------------------------------------------
# generate with row_seeds


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_row_seeds_make_rows_independent_of_the_batching(micro_model, top_p):
    model, tok = micro_model
    prompts = _ids(tok)
    seeds = stream_seeds(11, range(3), [G] * 3)
    kw = {"temperature": 1.0, "top_p": top_p}
    whole = _gen(model, tok, prompts, row_seeds=seeds, **kw)
    # prompt 0 alone (no padding), then prompts 1 and 2 (prompt 2 padded to prompt 1)
    first = _gen(model, tok, prompts[:1], row_seeds=seeds[:G], **kw)
    rest = _gen(model, tok, prompts[1:], row_seeds=seeds[G:], **kw)
    assert first.prompt_ids.shape[1] < whole.prompt_ids.shape[1]  # really a different padding
    _assert_same_rows(_rows(whole), _rows(first) + _rows(rest))
    # reversed order: rows follow their seeds, not their position in the batch
    rev = _gen(model, tok, prompts[::-1], row_seeds=seeds[2 * G :] + seeds[G : 2 * G] + seeds[:G], **kw)
    w = _rows(whole)
    _assert_same_rows(_rows(rev), w[2 * G :] + w[G : 2 * G] + w[:G])
    assert len({tuple(r[0]) for r in w}) > 3  # the rows really are sampled, not all alike


def test_row_seeds_reproduce_and_ignore_the_generator(micro_model):
    model, tok = micro_model
    prompts = _ids(tok)
    seeds = stream_seeds(0, range(3), [G] * 3)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    a = _gen(model, tok, prompts, row_seeds=seeds, generator=gen)
    assert torch.equal(gen.get_state(), state)  # the generator is not drawn from
    b = _gen(model, tok, prompts, row_seeds=seeds, generator=torch.Generator().manual_seed(2))
    for name in ("completion_ids", "mask", "old_logp", "lengths", "group"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = _gen(model, tok, prompts, row_seeds=stream_seeds(1, range(3), [G] * 3))
    assert a.completion_ids.shape != c.completion_ids.shape or not torch.equal(
        a.completion_ids, c.completion_ids
    )


def test_row_seeds_with_a_tiny_nucleus_are_greedy(micro_model):
    model, tok = micro_model
    prompts = _ids(tok)
    greedy = _gen(model, tok, prompts, t=6, temperature=0.0)
    seeds = stream_seeds(3, range(3), [G] * 3)
    nucleus = _gen(model, tok, prompts, t=6, temperature=0.7, top_p=1e-6, row_seeds=seeds)
    assert torch.equal(nucleus.completion_ids, greedy.completion_ids)


def test_temperature_zero_ignores_the_seeds(micro_model):
    model, tok = micro_model
    prompts = _ids(tok)
    greedy = _gen(model, tok, prompts, temperature=0.0)
    for base in (0, 9):
        seeded = _gen(
            model, tok, prompts, temperature=0.0, row_seeds=stream_seeds(base, range(3), [G] * 3)
        )
        assert torch.equal(seeded.completion_ids, greedy.completion_ids)
        assert torch.equal(seeded.old_logp, greedy.old_logp)


def test_row_seeds_length_is_checked(micro_model):
    model, tok = micro_model
    for temperature in (1.0, 0.0):
        with pytest.raises(ValueError, match=r"row_seeds has 11 entries but there are 12 rows"):
            _gen(model, tok, _ids(tok), row_seeds=list(range(11)), temperature=temperature)


class _EosWhen(torch.nn.Module):
    """The micro model with the EOS logit raised by 30 where (last position + last token) % 3 == 0,
    so that rows finish at different steps; records the rows of every forward."""

    def __init__(self, inner, eos):
        super().__init__()
        self.inner, self.eos, self.rows = inner, eos, []

    def forward(self, input_ids, position_ids=None, **kw):
        out = self.inner(input_ids=input_ids, position_ids=position_ids, **kw)
        if position_ids is None:
            position_ids = kw["attention_mask"].long().cumsum(-1) - 1
        hit = ((position_ids[:, -1] + input_ids[:, -1]) % 3 == 0).float()  # [R]
        out.logits[:, -1, self.eos] += 30.0 * hit
        self.rows.append(input_ids.shape[0])
        return out


def test_finished_rows_leave_the_batch_and_the_tokens_stay_the_same(micro_model):
    model, tok = micro_model
    eos = tok.eos_token_id
    wrapped = _EosWhen(model, eos)
    prompts = _ids(tok)
    roll = _gen(wrapped, tok, prompts, t=10, generator=torch.Generator().manual_seed(5))
    n = len(prompts) * G
    assert min(wrapped.rows[1:]) < n  # some decode step ran on fewer rows than the batch
    assert 0 < roll.finish.count("eos") < n  # rows finished at different steps
    ref = _reference_default(
        wrapped, prompts, t=roll.completion_ids.shape[1], eos=eos, pad=tok.pad_token_id, seed=5
    )
    assert torch.equal(roll.completion_ids, ref)
    # the lengths and the mask follow the first EOS of each row
    for r in range(n):
        row = roll.completion_ids[r].tolist()
        k = row.index(eos) + 1 if eos in row else len(row)
        assert int(roll.lengths[r]) == k
        assert roll.mask[r].tolist() == [1.0] * k + [0.0] * (len(row) - k)
