"""Branching rollouts (rlvr.rollout.branching): branch points, shared prefixes, group sizes, seeds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import completion_logits

from rlvr.algos.credit import prefix_tree, tree_td
from rlvr.rollout import generate
from rlvr.rollout.branching import critical_positions, generate_branched

PROMPTS = [
    "<|user|>1 + 2 =<|end|><|assistant|>",
    "<|user|>17 - 3 + 5 =<|end|><|assistant|>",
]


def _ids(tok):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _knobs(tok, t=8):
    return {"max_new_tokens": t, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id}


def _seed(s=0):
    return torch.Generator().manual_seed(s)


# --------------------------------------------------------------------------------------------------
# the branch points


def test_critical_positions_are_the_top_k_entropies_inside_each_row():
    ent = torch.tensor(
        [
            [0.9, 0.1, 0.7, 0.3, 0.8, 2.0],  # L = 5: position 5 is padding, position 0 is excluded
            [0.0, 0.5, 0.5, 0.2, 0.0, 0.0],  # a tie: the earlier position first
            [0.4, 0.3, 0.9, 0.6, 0.1, 0.0],  # first = 3: positions 3.. only
        ]
    )
    lengths, first = torch.tensor([5, 4, 5]), torch.tensor([1, 1, 3])
    got = critical_positions(ent, lengths, first, top_k=2)
    assert [[t for _, t in row] for row in got] == [[4, 2], [1, 2], [3, 4]]
    assert got[0][0][0] == pytest.approx(0.8)
    got = critical_positions(ent, lengths, first, top_k=2, threshold=0.55)
    assert [[t for _, t in row] for row in got] == [[4, 2], [], [3]]
    got = critical_positions(ent, lengths, first, top_k=10)  # never more than the eligible positions
    assert [[t for _, t in row] for row in got] == [[4, 2, 3, 1], [1, 2, 3], [3, 4]]


def test_critical_positions_skip_zero_entropy():
    ent = torch.tensor([[0.0, 0.0, 0.0, 0.3]])
    got = critical_positions(ent, torch.tensor([4]), torch.tensor([1]), top_k=3)
    assert got == [[(pytest.approx(0.3), 3)]]
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        critical_positions(ent, torch.tensor([4]), torch.tensor([1]), top_k=0)


# --------------------------------------------------------------------------------------------------
# a hand-made model: the entropy of each completion position is known


class _Cache:
    """A cache the sampler only reorders (the fake model needs no keys or values)."""

    def reorder_cache(self, idx):
        pass


class PositionLM(torch.nn.Module):
    """Logits that depend on the position only. The completion token at position c (prompt length
    P, so position id P + c) is drawn uniformly from 3 tokens {1, 2, 3} at c = 5 (entropy log 3), from
    2 tokens {1, 2} at c = 2 (log 2), and is token 4 everywhere else (entropy 0). Never EOS (0)."""

    def __init__(self, prompt_len: int, vocab: int = 6):
        super().__init__()
        self.p, self.vocab = prompt_len, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None, **kw):
        c = position_ids + 1 - self.p  # [N, q] completion position of the token predicted
        logits = torch.full((*c.shape, self.vocab), -1e4)  # [N, q, V]
        logits[..., 4] = 0.0
        at5, at2 = (c == 5)[..., None], (c == 2)[..., None]
        three = torch.tensor([-1e4, 0, 0, 0, -1e4, -1e4])
        two = torch.tensor([-1e4, 0, 0, -1e4, -1e4, -1e4])
        logits = torch.where(at5, three, torch.where(at2, two, logits))
        if kw.get("logits_to_keep") == 1:
            logits = logits[:, -1:]
        return SimpleNamespace(logits=logits, past_key_values=past_key_values or _Cache())


def _position_rollout(sizes, *, roots=1, width=2, top_k=1, depth=1, t=8, seed=0, threshold=0.0):
    prompts = [[5, 5, 5]] * len(sizes)  # P = 3 for every prompt
    return generate_branched(
        PositionLM(3),
        prompts,
        sizes,
        roots=roots,
        width=width,
        top_k=top_k,
        depth=depth,
        threshold=threshold,
        max_new_tokens=t,
        eos_id=0,
        pad_id=0,
        generator=_seed(seed),
    )


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_branches_start_at_the_highest_entropy_position():
    roll = _position_rollout([3])  # 1 root, its top-1 point is c = 5, 2 continuations
    ids = roll.completion_ids.tolist()
    assert roll.completion_ids.shape == (3, 8) and roll.lengths.tolist() == [8, 8, 8]
    for k in (1, 2):
        assert ids[k][:5] == ids[0][:5]  # the prefix before the critical token, shared
        assert ids[k][5] in (1, 2, 3) and ids[k][6:] == [4, 4]  # then sampled from c = 5 on
    assert ids[0][2] in (1, 2) and ids[0][5] in (1, 2, 3)
    assert roll.group.tolist() == [0, 0, 0] and roll.finish == ["length"] * 3
    # behaviour log-probs: log 1/3 at c = 5, log 1/2 at c = 2, 0 elsewhere, prefix ones included
    for row in roll.old_logp.tolist():
        assert row[5] == pytest.approx(-math.log(3)) and row[2] == pytest.approx(-math.log(2))
        assert sum(abs(x) for i, x in enumerate(row) if i not in (2, 5)) == pytest.approx(0, abs=1e-6)


def test_top_k_two_branches_at_both_uncertain_tokens_in_entropy_order():
    roll = _position_rollout([5], top_k=2)  # c = 5 (log 3) first, then c = 2 (log 2)
    ids = roll.completion_ids.tolist()
    assert [_shared(ids[0], ids[k]) >= 5 for k in (1, 2)] == [True, True]
    assert all(ids[k][:2] == ids[0][:2] and ids[k][2] in (1, 2) for k in (3, 4))
    assert roll.mask.sum().item() == 5 * 8


def test_group_size_is_exact_when_the_points_overshoot_and_when_they_run_out():
    roll = _position_rollout([4], top_k=2, width=2)  # 2 points x 2 = 4 > 3 needed: the last gets 1
    ids = roll.completion_ids.tolist()
    assert len(roll) == 4 and all(ids[k][:5] == ids[0][:5] for k in (1, 2))
    roll = _position_rollout([6], roots=1, width=2, top_k=2, depth=1)  # 4 branches, then 1 i.i.d.
    assert len(roll) == 6 and roll.group.tolist() == [0] * 6
    # depth 2: the branches from c = 5 have no uncertain token after it, those from c = 2 have c = 5
    roll = _position_rollout([7], roots=1, width=1, top_k=2, depth=2)
    ids = roll.completion_ids.tolist()
    assert len(roll) == 7
    # layer 1: rows 1 (from c = 5) and 2 (from c = 2); layer 2: row 3 branches row 2 at c = 5
    assert ids[1][:5] == ids[0][:5] and ids[2][:2] == ids[0][:2] and ids[3][:5] == ids[2][:5]
    # three groups of different sizes (a knapsack allocation): each exactly its size, group-major
    roll = _position_rollout([2, 5, 1], roots=2)
    assert roll.group.tolist() == [0, 0, 1, 1, 1, 1, 1, 2]


def test_a_threshold_above_every_entropy_leaves_iid_samples():
    roll = _position_rollout([4], threshold=2.0)  # log 3 < 2: no point, the group is filled i.i.d.
    ids = roll.completion_ids.tolist()
    assert len(roll) == 4 and all(row[6:] == [4, 4] and row[:2] == [4, 4] for row in ids)


def test_branching_rollout_is_reproducible_with_a_seed():
    a, b = _position_rollout([5, 5], top_k=2, seed=3), _position_rollout([5, 5], top_k=2, seed=3)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.old_logp, b.old_logp)
    others = [_position_rollout([5, 5], top_k=2, seed=s).completion_ids for s in range(4, 9)]
    assert any(not torch.equal(a.completion_ids, o) for o in others)


def test_bad_knobs_are_refused():
    for knob in ("roots", "width", "top_k", "depth"):
        with pytest.raises(ValueError, match=f"{knob} must be >= 1"):
            _position_rollout([3], **{knob: 0})
    with pytest.raises(ValueError, match="one size >= 1 per prompt"):
        generate_branched(
            PositionLM(3), [[5, 5, 5]], [2, 2], roots=1, max_new_tokens=4, eos_id=0, pad_id=0
        )


# --------------------------------------------------------------------------------------------------
# on the micro model


def test_roots_at_least_g_is_exactly_generate(micro_model):
    model, tok = micro_model
    ref = generate(model, _ids(tok), num_samples=4, generator=_seed(1), **_knobs(tok))
    got = generate_branched(model, _ids(tok), [4, 4], roots=4, generator=_seed(1), **_knobs(tok))
    for f in ("prompt_ids", "prompt_mask", "completion_ids", "mask", "old_logp", "lengths", "group"):
        assert torch.equal(getattr(ref, f), getattr(got, f)), f
    assert got.finish == ref.finish and got.entropy is None


def test_generate_entropy_flag_changes_no_token(micro_model):
    model, tok = micro_model
    ref = generate(model, _ids(tok), num_samples=3, generator=_seed(2), **_knobs(tok))
    got = generate(model, _ids(tok), num_samples=3, generator=_seed(2), entropy=True, **_knobs(tok))
    assert torch.equal(ref.completion_ids, got.completion_ids) and ref.entropy is None
    logits = completion_logits(model, got, 1.0)  # [N, T, V]
    ent = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1) * got.mask  # [N, T]
    assert torch.allclose(got.entropy, ent, atol=1e-4)


def test_micro_model_tree_shapes_shared_prefixes_and_log_probs(micro_model):
    model, tok = micro_model
    roll = generate_branched(
        model, _ids(tok), [6, 6], roots=2, width=2, top_k=1, depth=2, generator=_seed(0), **_knobs(tok)
    )
    n, t = roll.completion_ids.shape
    assert n == 12 and t <= 8 and roll.prompt_ids.shape[0] == 12 and len(roll.finish) == 12
    assert roll.group.tolist() == [0] * 6 + [1] * 6
    assert torch.equal(roll.mask.sum(1).long(), roll.lengths) and int(roll.lengths.max()) <= 8
    assert torch.equal(roll.prompt_ids[:6], roll.prompt_ids[:1].expand(6, -1))
    # every branch row shares a prefix of >= 1 token with an earlier row of its group
    ids = roll.completion_ids.tolist()
    for g in (0, 1):
        rows = [ids[g * 6 + k][: int(roll.lengths[g * 6 + k])] for k in range(6)]
        for k in range(2, 6):
            assert max(_shared(rows[k], rows[j]) for j in range(k)) >= 1
    # the behaviour log-probs of the full rows (prefix and continuation) match a plain forward
    logp = completion_logits(model, roll, 1.0).log_softmax(-1)  # [N, T, V]
    ref = logp.gather(-1, roll.completion_ids.unsqueeze(-1)).squeeze(-1) * roll.mask
    assert torch.allclose(roll.old_logp, ref, atol=1e-4)


def test_tree_td_finds_the_branching_tree():
    roll = _position_rollout([3], seed=3)  # rows 1, 2 branch row 0 at c = 5; seed 3: 3 tokens there
    assert [row[5] for row in roll.completion_ids.tolist()] == [1, 2, 3]
    tree = prefix_tree(roll.completion_ids, roll.mask, 3)
    assert torch.equal(tree.node[:, :5], tree.node[:1, :5].expand(3, -1))  # one path to c = 4
    assert len(set(tree.node[:, 5].tolist())) == 3  # and three children of it
    rewards = torch.tensor([[1.0, 0.0, 0.0]])
    adv = tree_td(rewards, roll.mask, completion_ids=roll.completion_ids, scale="none")  # [3, 8]
    # A_i = R_i - 1/3 on every token, plus delta_5 = V(y<=5) - V(y<5) = R_i - 1/3 at c = 5
    a = [2 / 3, -1 / 3, -1 / 3]
    want = torch.tensor([[x] * 5 + [2 * x] + [x] * 2 for x in a])
    assert torch.allclose(adv.float(), want, atol=1e-6)


def test_branch_pos_is_where_each_row_left_its_parent():
    # depth 2, as above: rows 1 (from row 0 at c = 5), 2 (from row 0 at c = 2), 3 (from row 2 at
    # c = 5); the 3 further rows are i.i.d. (the branches run out of uncertain tokens)
    roll = _position_rollout([7], roots=1, width=1, top_k=2, depth=2)
    assert roll.branch_pos.tolist() == [0, 5, 2, 5, 0, 0, 0]
    ids = roll.completion_ids.tolist()
    for k, t in enumerate(roll.branch_pos.tolist()):  # the copied prefix is an earlier row's
        assert t == 0 or any(ids[j][:t] == ids[k][:t] for j in range(k))
    assert roll.select(torch.tensor([3, 1])).branch_pos.tolist() == [5, 5]


def test_cat_gives_rows_of_an_unbranched_part_branch_pos_zero():
    tree = _position_rollout([3])  # branch_pos [0, 5, 5]
    flat = _position_rollout([2], roots=2)  # roots >= G: generate's own rollout, no branch_pos
    assert flat.branch_pos is None
    both = type(tree).cat([tree, flat])
    assert both.branch_pos.tolist() == [0, 5, 5, 0, 0]
    assert type(tree).cat([flat, flat]).branch_pos is None


def test_copied_tokens_metric_counts_the_branches_shared_prefixes():
    from rlvr.train.metrics import _copied

    roll = _position_rollout([3, 3])  # per group: a root and two branches at position 5
    assert _copied(roll, lambda t: t) == {"copied_tokens": 20.0}
    assert _copied(_position_rollout([2], roots=2), lambda t: t) == {}
