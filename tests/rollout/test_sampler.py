"""The batched KV-cache sampler, its log-probs against the learner's recomputation, and Rollout."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.rollout import Rollout, generate, left_pad, sequence_logp
from rlvr.rollout.sampler import _top_p_filter

PROMPTS = [
    "<|user|>1 + 2 =<|end|><|assistant|>",
    "<|user|>17 - 3 + 5 =<|end|><|assistant|>",  # longest: the others are left-padded
    "<|user|>4 =<|end|><|assistant|>",
]


def _ids(tok):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _gen(model, tok, *, g=4, t=8, seed=0, **kw):
    return generate(
        model,
        _ids(tok),
        num_samples=g,
        max_new_tokens=t,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


# --------------------------------------------------------------------------------------------------
# left_pad and the top-p filter


def test_left_pad_values_and_shapes():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    ids, mask = left_pad([[3, 4]], pad_id=99)
    assert ids.tolist() == [[3, 4]] and mask.tolist() == [[1, 1]]
    ids, _ = left_pad([[1], [2, 3, 4]], pad_id=-1)  # the pad id is written as given
    assert ids.tolist() == [[-1, -1, 1], [2, 3, 4]]


def test_left_pad_refuses_an_empty_prompt():
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        left_pad([[1, 2], [], [3]], pad_id=0)


def test_top_p_keeps_tokens_whose_preceding_mass_is_below_top_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3], [0.25, 0.25, 0.25, 0.25]])
    logits = probs.log()
    ninf = float("-inf")
    # row 0 sorted: 0.5 (before: 0), 0.3 (before: 0.5), 0.15 (before: 0.8), 0.05 (before: 0.95)
    cases = {
        0.4: [False, True, False, False],  # only the top token
        0.7: [False, True, False, True],  # 0.5 + 0.3: the token that crosses 0.7 is kept
        0.85: [True, True, False, True],  # 0.15 is kept since 0.8 < 0.85
        0.99: [True, True, True, True],
    }
    for top_p, keep in cases.items():
        out = _top_p_filter(logits, top_p)
        assert out.shape == logits.shape
        for j, k in enumerate(keep):
            if k:
                assert out[0, j] == logits[0, j], (top_p, j)  # kept logits are unchanged
            else:
                assert out[0, j] == ninf, (top_p, j)
    # row 1, uniform: preceding masses 0, 0.25, 0.5, 0.75 -> top_p 0.6 keeps three of them
    assert int(torch.isfinite(_top_p_filter(logits, 0.6)[1]).sum()) == 3
    # the renormalised nucleus of row 0 at top_p 0.7 is (0.5, 0.3) / 0.8
    p = _top_p_filter(logits, 0.7)[0].softmax(-1)
    torch.testing.assert_close(p, torch.tensor([0.0, 0.625, 0.0, 0.375]))


# --------------------------------------------------------------------------------------------------
# generate: shapes, groups, masks


def test_generate_shapes_groups_and_prompts(micro_model):
    model, tok = micro_model
    ids = _ids(tok)
    b, g = len(ids), 4
    roll = _gen(model, tok, g=g, t=8)
    n = b * g
    assert len(roll) == n
    t = roll.completion_ids.shape[1]
    assert 1 <= t <= 8
    for name in ("completion_ids", "mask", "old_logp"):
        assert getattr(roll, name).shape == (n, t), name
    p = max(len(s) for s in ids)
    assert roll.prompt_ids.shape == roll.prompt_mask.shape == (n, p)
    assert roll.group.tolist() == [0] * g + [1] * g + [2] * g
    assert len(roll.finish) == n and roll.lengths.shape == (n,)
    pad_ids, pad_mask = left_pad(ids, tok.pad_token_id)
    for i in range(b):
        for r in range(i * g, i * g + g):  # rows i*G .. i*G+G-1 carry prompt i
            assert torch.equal(roll.prompt_ids[r], pad_ids[i])
            assert torch.equal(roll.prompt_mask[r], pad_mask[i])
            assert int(roll.prompt_mask[r].sum()) == len(ids[i])


def _check_row_invariants(roll, eos, pad, max_new):
    t = roll.completion_ids.shape[1]
    assert t == int(roll.lengths.max())  # generation stops as soon as every row is finished
    for r in range(len(roll)):
        row, m, n = roll.completion_ids[r].tolist(), roll.mask[r], int(roll.lengths[r])
        assert 1 <= n <= t
        assert m.tolist() == [1.0] * n + [0.0] * (t - n)  # 1 up to and including EOS, then 0
        assert int(m.sum()) == n
        assert eos not in row[: n - 1]  # the first EOS ends the completion
        if roll.finish[r] == "eos":
            assert row[n - 1] == eos
            assert row[n:] == [pad] * (t - n)  # padding after EOS
        else:
            assert roll.finish[r] == "length"
            assert n == t == max_new and eos not in row
        lp = roll.old_logp[r]
        assert bool((lp[:n] < 0).all()) and bool((lp[n:] == 0).all())


def test_generate_masks_lengths_and_finish(micro_model):
    model, tok = micro_model
    roll = _gen(model, tok, g=4, t=8, seed=0)
    _check_row_invariants(roll, tok.eos_token_id, tok.pad_token_id, 8)
    assert set(roll.finish) == {"eos", "length"}  # this seed exercises both endings


def test_generate_stops_early_when_all_rows_end(micro_model):
    """Greedy decoding of the micro model ends every prompt with EOS within a few tokens."""
    model, tok = micro_model
    roll = _gen(model, tok, g=2, t=20, temperature=0.0)
    assert roll.finish == ["eos"] * 6
    assert roll.completion_ids.shape[1] == int(roll.lengths.max()) < 20
    _check_row_invariants(roll, tok.eos_token_id, tok.pad_token_id, 20)
    # a limit below the EOS step turns the same rows into 'length' rows
    short = _gen(model, tok, g=2, t=1, temperature=0.0)
    assert short.completion_ids.shape[1] == 1
    torch.testing.assert_close(short.completion_ids, roll.completion_ids[:, :1])
    assert all(
        f == ("eos" if n == 1 else "length")
        for f, n in zip(short.finish, roll.lengths.tolist(), strict=True)
    )


def test_generate_is_seeded(micro_model):
    model, tok = micro_model
    a = _gen(model, tok, seed=3, t=6)
    b = _gen(model, tok, seed=3, t=6)
    c = _gen(model, tok, seed=4, t=6)
    for name in ("completion_ids", "mask", "old_logp", "lengths", "group", "prompt_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.finish == b.finish
    assert a.completion_ids.shape != c.completion_ids.shape or not torch.equal(
        a.completion_ids, c.completion_ids
    )


def test_generate_refuses_bad_sizes(micro_model):
    model, tok = micro_model
    with pytest.raises(ValueError, match="num_samples and max_new_tokens"):
        _gen(model, tok, g=0)
    with pytest.raises(ValueError, match="num_samples and max_new_tokens"):
        _gen(model, tok, t=0)


# --------------------------------------------------------------------------------------------------
# greedy decoding against full forwards


def test_greedy_first_token_is_argmax_of_full_forward(micro_model):
    model, tok = micro_model
    roll = _gen(model, tok, g=2, t=20, temperature=0.0)
    for i, ids in enumerate(_ids(tok)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        first = int(logits.argmax())
        assert roll.completion_ids[2 * i, 0] == roll.completion_ids[2 * i + 1, 0] == first
        # greedy old_logp is the log-prob under the unscaled distribution
        expect = torch.log_softmax(logits, -1)[first]
        assert float(roll.old_logp[2 * i, 0]) == pytest.approx(float(expect), abs=1e-5)


def test_greedy_rows_match_unpadded_full_forwards(micro_model):
    """Every greedy token is the argmax of an unpadded, uncached forward over prompt + prefix, and
    its log-prob matches: left padding, position ids and the per-sample cache views are right."""
    model, tok = micro_model
    roll = _gen(model, tok, g=2, t=20, temperature=0.0)
    for r in range(len(roll)):
        prompt = _ids(tok)[r // 2]
        comp = roll.completion_ids[r, : int(roll.lengths[r])].tolist()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + comp])).logits[0]
        steps = logits[len(prompt) - 1 : len(prompt) - 1 + len(comp)]  # [n, V]
        assert steps.argmax(-1).tolist() == comp, r
        expect = torch.log_softmax(steps, -1).gather(-1, torch.tensor(comp)[:, None])[:, 0]
        torch.testing.assert_close(roll.old_logp[r, : len(comp)], expect, rtol=0, atol=1e-4)


def test_tiny_top_p_is_greedy(micro_model):
    """A nucleus holding only the top token samples the argmax, whatever the generator."""
    model, tok = micro_model
    greedy = _gen(model, tok, g=2, t=6, temperature=0.0)
    nucleus = _gen(model, tok, g=2, t=6, temperature=0.7, top_p=1e-6, seed=11)
    assert torch.equal(nucleus.completion_ids, greedy.completion_ids)
    assert nucleus.finish == greedy.finish


# --------------------------------------------------------------------------------------------------
# behaviour log-probs and the learner's recomputation


@pytest.mark.parametrize("share", [True, False])
def test_old_logp_equals_sequence_logp(micro_model, share):
    model, tok = micro_model
    temp = 0.7
    roll = _gen(model, tok, g=4, t=8, seed=1, temperature=temp, top_p=0.9)
    with torch.no_grad():
        logp, ent = sequence_logp(
            model,
            roll.prompt_ids,
            roll.prompt_mask,
            roll.completion_ids,
            roll.mask,
            temperature=temp,
            share_prompts=share,
        )
    assert logp.shape == ent.shape == roll.mask.shape
    torch.testing.assert_close(logp * roll.mask, roll.old_logp, rtol=0, atol=1e-4)
    assert bool((ent >= -1e-5).all()) and bool((ent <= math.log(len(tok)) + 1e-4).all())


def test_shared_and_full_paths_give_equal_gradients(micro_model):
    model, tok = micro_model
    roll = _gen(model, tok, g=3, t=6, seed=2)
    grads, values = [], []
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        logp, _ = sequence_logp(
            model,
            roll.prompt_ids,
            roll.prompt_mask,
            roll.completion_ids,
            roll.mask,
            share_prompts=share,
        )
        total = (logp * roll.mask).sum()
        total.backward()
        values.append(float(total.detach()))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        g1, g2 = grads[0][k], grads[1][k]
        scale = float(g2.norm())
        assert scale > 0, k  # every parameter takes part
        assert float((g1 - g2).norm()) <= 1e-5 * scale, k


# --------------------------------------------------------------------------------------------------
# Rollout


def test_rollout_select_and_to():
    n = 4
    roll = Rollout(
        prompt_ids=torch.arange(n * 2).reshape(n, 2),
        prompt_mask=torch.ones(n, 2, dtype=torch.long),
        completion_ids=torch.arange(n * 3).reshape(n, 3) + 100,
        mask=torch.tensor([[1.0, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]]),
        old_logp=-torch.arange(n * 3, dtype=torch.float32).reshape(n, 3),
        lengths=torch.tensor([3, 1, 2, 3]),
        finish=["length", "eos", "eos", "length"],
        group=torch.tensor([0, 0, 1, 1]),
        rewards=torch.tensor([0.0, 1.0, 0.5, 0.25]),
        reward_parts=torch.arange(n * 2, dtype=torch.float32).reshape(n, 2),
        policy_version=7,
    )
    idx = torch.tensor([2, 0])
    sub = roll.select(idx)
    assert len(sub) == 2
    assert sub.prompt_ids.tolist() == [[4, 5], [0, 1]]
    assert sub.completion_ids.tolist() == [[106, 107, 108], [100, 101, 102]]
    assert sub.mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert sub.old_logp.tolist() == [[-6.0, -7.0, -8.0], [-0.0, -1.0, -2.0]]
    assert sub.lengths.tolist() == [2, 3]
    assert sub.finish == ["eos", "length"]
    assert sub.group.tolist() == [1, 0]
    assert sub.rewards.tolist() == [0.5, 0.0]
    assert sub.reward_parts.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert sub.ref_logp is None and sub.values is None and sub.entropy is None
    assert sub.policy_version == 7
    assert len(roll) == n and roll.finish == ["length", "eos", "eos", "length"]  # untouched
    moved = roll.to("cpu")
    assert torch.equal(moved.old_logp, roll.old_logp) and moved.finish == roll.finish
    assert moved.policy_version == 7 and moved.ref_logp is None
