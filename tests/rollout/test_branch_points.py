"""Branch-point rules (rlvr.rollout.branch_points) and the tree a branching rollout records: hand
values for each rule, the uniform rule's seed and range, Rollout.parent against the shared prefixes."""

from __future__ import annotations

import math

import pytest
import torch
from tests.rollout.test_branching import PositionLM, _ids, _knobs, _seed

from rlvr.rollout import Rollout
from rlvr.rollout.branch_points import BRANCH_POINTS, boundary_ids, critical_positions
from rlvr.rollout.branching import generate_branched


def _ts(points):
    return [[t for _, t in row] for row in points]


# --------------------------------------------------------------------------------------------------
# each rule on hand-built inputs


def test_the_registry_holds_the_five_rules_with_their_needs():
    assert BRANCH_POINTS.names() == ["entropy", "low_prob", "step", "uniform", "value"]
    assert BRANCH_POINTS.needs("entropy") == {"entropy"}
    assert BRANCH_POINTS.needs("uniform") == {"generator"}
    assert BRANCH_POINTS.needs("step") == {"completion_ids", "step_ids"}
    assert BRANCH_POINTS.needs("low_prob") == {"logp"}
    assert BRANCH_POINTS.knobs("entropy") == {"top_k": 1, "threshold": 0.0}
    assert BRANCH_POINTS.knobs("low_prob") == {"top_k": 1, "max_prob": 0.9}
    assert BRANCH_POINTS.needs("value") == {"values", "completion_ids"}
    assert BRANCH_POINTS.knobs("value") == {"top_k": 1, "explore": 0.0}


def test_entropy_rule_is_critical_positions():
    ent = torch.tensor([[0.9, 0.1, 0.7, 0.3, 0.8, 2.0], [0.4, 0.3, 0.9, 0.6, 0.1, 0.0]])
    lengths, first = torch.tensor([5, 5]), torch.tensor([1, 3])
    for k, thr in ((1, 0.0), (2, 0.0), (10, 0.5)):
        got = BRANCH_POINTS["entropy"](lengths, first, entropy=ent, top_k=k, threshold=thr)
        assert got == critical_positions(ent, lengths, first, top_k=k, threshold=thr)
    got = BRANCH_POINTS["entropy"](lengths, first, entropy=ent, top_k=2)
    assert _ts(got) == [[4, 2], [3, 4]] and got[0][0][0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="'entropy' needs 'entropy'"):
        BRANCH_POINTS["entropy"](lengths, first, top_k=1)


def test_step_rule_takes_the_positions_after_a_boundary_token_earliest_first():
    # token 9 ends a step; rows are right-padded with 0
    ids = torch.tensor(
        [
            [1, 9, 2, 3, 9, 4, 9],  # L = 7: after the 9s at 1, 4 (t = 2, 5); the 9 at 6 is last
            [9, 9, 2, 9, 0, 0, 0],  # L = 4, first = 3: t = 1, 2 are before first, t = 4 is past L
            [1, 2, 3, 4, 5, 6, 7],  # no boundary
        ]
    )
    lengths, first = torch.tensor([7, 4, 7]), torch.tensor([1, 3, 1])
    got = BRANCH_POINTS["step"](lengths, first, completion_ids=ids, step_ids=[9], top_k=3)
    assert got == [[(-2.0, 2), (-5.0, 5)], [], []]
    got = BRANCH_POINTS["step"](lengths, first, completion_ids=ids, step_ids=[9], top_k=1)
    assert got == [[(-2.0, 2)], [], []]
    got = BRANCH_POINTS["step"](lengths, first, completion_ids=ids, step_ids=[3, 9], top_k=9)
    assert _ts(got) == [[2, 4, 5], [], [3]]
    assert BRANCH_POINTS["step"](lengths, first, completion_ids=ids, step_ids=[], top_k=2) == [[]] * 3


def test_low_prob_rule_takes_spo_cutpoints_lowest_probability_first():
    probs = torch.tensor([[0.5, 0.95, 0.2, 0.8, 0.99, 0.1]])  # L = 5: position 5 is padding
    lengths, first = torch.tensor([5]), torch.tensor([1])  # position 0 is before first
    logp = probs.log()  # [1, 6]
    got = BRANCH_POINTS["low_prob"](lengths, first, logp=logp, top_k=3)
    assert _ts(got) == [[2, 3]]
    assert [s for s, _ in got[0]] == pytest.approx([0.8, 0.2])  # score 1 - p
    got = BRANCH_POINTS["low_prob"](lengths, first, logp=logp, top_k=3, max_prob=0.5)
    assert _ts(got) == [[2]]
    got = BRANCH_POINTS["low_prob"](lengths, torch.tensor([0]), logp=logp, top_k=1, max_prob=1.0)
    assert _ts(got) == [[2]]  # first = 0: p = 0.5 at t = 0 is the second lowest


def test_uniform_rule_is_reproducible_and_stays_inside_each_row():
    lengths, first = torch.tensor([6, 3, 8, 1]), torch.tensor([1, 2, 5, 1])

    def draw(seed, k):
        return BRANCH_POINTS["uniform"](lengths, first, generator=_seed(seed), top_k=k)

    assert draw(0, 2) == draw(0, 2)
    assert any(draw(0, 2) != draw(s, 2) for s in range(1, 6))
    for s in range(20):
        got = draw(s, 2)
        for row, n, f in zip(got, lengths.tolist(), first.tolist(), strict=True):
            ts = [t for _, t in row]
            assert len(ts) == min(2, max(0, n - f)) and len(set(ts)) == len(ts)
            assert all(f <= t < n for t in ts)
            assert [u for u, _ in row] == sorted((u for u, _ in row), reverse=True)
    # every eligible position, once, when top_k covers them all; the scores are the generator's draws
    got = draw(7, 10)
    assert [sorted(_ts(got)[r]) for r in range(4)] == [[1, 2, 3, 4, 5], [2], [5, 6, 7], []]
    u = torch.rand(4, 8, generator=_seed(7))  # [R, T] the one draw
    assert got[0] == sorted(((u[0, t].item(), t) for t in range(1, 6)), reverse=True)


def test_boundary_ids_are_the_tokens_that_contain_the_delimiter(micro_model):
    _, tok = micro_model
    ids = boundary_ids(tok)
    assert ids and all("\n" in tok.decode([i]) for i in ids)
    assert all("\n" not in tok.decode([i]) for i in range(len(tok)) if i not in ids)
    line = tok("1 + 2 = 3\n3 + 4 = 7", add_special_tokens=False)["input_ids"]
    assert sum(i in ids for i in line) == 1
    with pytest.raises(ValueError, match="delimiter must not be empty"):
        boundary_ids(tok, "")


# --------------------------------------------------------------------------------------------------
# the tree: parent and branch_pos


def _consistent(roll: Rollout, sizes: list[int]) -> None:
    """Each group's rows: a root has parent -1 and branch_pos 0; a branch's parent is an earlier row
    of its group whose first branch_pos tokens it shares."""
    ids, lens = roll.completion_ids.tolist(), roll.lengths.tolist()
    start = 0
    for size in sizes:
        for k in range(size):
            p, t = int(roll.parent[start + k]), int(roll.branch_pos[start + k])
            if p < 0:
                assert t == 0
                continue
            assert p < k and 1 <= t <= lens[start + p] and t < lens[start + k]
            assert ids[start + k][:t] == ids[start + p][:t]
        start += size


def _position(sizes, points, *, seed=0, **kw):
    knobs = {"roots": 1, "width": 2, "top_k": 1, "depth": 1, "max_new_tokens": 8} | kw
    return generate_branched(
        PositionLM(3),
        [[5, 5, 5]] * len(sizes),
        sizes,
        points=points,
        eos_id=0,
        pad_id=0,
        generator=_seed(seed),
        **knobs,
    )


def test_parent_and_branch_pos_on_a_hand_built_tree():
    # depth 2 (as in test_branching): rows 1 (row 0 at c = 5), 2 (row 0 at c = 2), 3 (row 2 at c = 5)
    roll = _position([7], "entropy", width=1, top_k=2, depth=2)
    assert roll.branch_pos.tolist() == [0, 5, 2, 5, 0, 0, 0]
    assert roll.parent.tolist() == [-1, 0, 0, 2, -1, -1, -1]
    _consistent(roll, [7])
    sub = roll.select(torch.tensor([3, 1]))
    assert sub.parent.tolist() == [2, 0] and sub.branch_pos.tolist() == [5, 5]
    flat = _position([2], "entropy", roots=2)  # roots >= G: generate's own rollout
    assert flat.parent is None
    both = Rollout.cat([roll, flat])
    assert both.parent.tolist() == [-1, 0, 0, 2, -1, -1, -1, -1, -1]
    assert both.branch_pos.tolist() == [0, 5, 2, 5, 0, 0, 0, 0, 0]
    assert Rollout.cat([flat, flat]).parent is None


def test_low_prob_branches_at_the_least_likely_token():
    # p = 1/3 at c = 5 and 1/2 at c = 2, 1 elsewhere: the lowest first, as the entropy's highest
    roll = _position([5], "low_prob", top_k=2)
    assert roll.branch_pos.tolist() == [0, 5, 5, 2, 2] and roll.parent.tolist() == [-1, 0, 0, 0, 0]
    roll = _position([3], "low_prob", top_k=2, max_prob=0.4)  # only p = 1/3 < 0.4
    assert roll.branch_pos.tolist() == [0, 5, 5]
    roll = _position([3], "low_prob", max_prob=0.3)  # no token below 0.3: i.i.d. fill
    assert roll.branch_pos.tolist() == [0, 0, 0] and roll.parent.tolist() == [-1, -1, -1]


def test_step_branches_after_the_first_boundary_token():
    # token 4 at c = 0, 1, 3, 4, 6, 7 ends a step: the earliest point is t = 1 (after c = 0)
    roll = _position([3], "step", step_ids=[4])
    assert roll.branch_pos.tolist() == [0, 1, 1] and roll.parent.tolist() == [-1, 0, 0]
    roll = _position([5], "step", step_ids=[4], top_k=2)  # t = 1 and t = 2
    assert roll.branch_pos.tolist() == [0, 1, 1, 2, 2]
    _consistent(roll, [5])
    assert _position([3], "step").branch_pos.tolist() == [0, 0, 0]  # no step_ids: i.i.d. fill


def test_uniform_branching_is_reproducible_and_inside_the_budget():
    a = _position([6, 6], "uniform", top_k=2, seed=3)
    b = _position([6, 6], "uniform", top_k=2, seed=3)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.branch_pos, b.branch_pos)
    assert torch.equal(a.parent, b.parent)
    pos = {tuple(_position([6], "uniform", top_k=2, seed=s).branch_pos.tolist()) for s in range(8)}
    assert len(pos) > 1  # the points move with the seed
    for p in pos:
        assert all(t == 0 or 1 <= t < 8 for t in p)
    _consistent(a, [6, 6])
    assert int(a.lengths.max()) <= 8 and len(a) == 12


def test_unknown_rule_is_refused():
    with pytest.raises(KeyError, match="unknown branch-point rule 'mcts'; valid names: entropy"):
        _position([3], "mcts")


# --------------------------------------------------------------------------------------------------
# one real branched group per rule on the micro model


@pytest.mark.parametrize("points", ["uniform", "step", "low_prob"])
def test_micro_model_tree_per_rule(micro_model, points):
    model, tok = micro_model
    # the micro model's short replies hold no newline: for 'step' every token ends a step here
    steps = list(range(len(tok))) if points == "step" else []
    roll = generate_branched(
        model,
        _ids(tok),
        [6, 6],
        roots=2,
        width=2,
        top_k=2,
        depth=2,
        points=points,
        step_ids=steps,
        generator=_seed(0),
        **_knobs(tok, 12),
    )
    assert len(roll) == 12 and roll.group.tolist() == [0] * 6 + [1] * 6
    assert torch.equal(roll.mask.sum(1).long(), roll.lengths) and int(roll.lengths.max()) <= 12
    assert roll.parent.shape == roll.branch_pos.shape == (12,)
    _consistent(roll, [6, 6])
    assert int((roll.parent >= 0).sum()) >= 4  # both groups branched
    if points == "step":  # the earliest boundaries first: t = 1 in each of the 2 roots, 2 rows each
        assert roll.branch_pos.tolist() == [0, 0, 1, 1, 1, 1] * 2
        assert roll.parent.tolist() == [-1, -1, 0, 0, 1, 1] * 2
    if points == "low_prob":  # each branch re-sampled a token that had p < 0.9 in its parent
        for k in (roll.parent >= 0).nonzero().squeeze(1).tolist():
            g0, t = (k // 6) * 6, int(roll.branch_pos[k])
            assert math.exp(roll.old_logp[g0 + int(roll.parent[k]), t]) < 0.9


def test_every_input_a_rule_may_need_is_supplied():
    from rlvr.rollout.branch_points import INPUTS
    from rlvr.rollout.branching import _inputs, _Row

    rows = [_Row([3, 4], [-0.5, -0.1], [0.9, 0.2], "length", 1), _Row([5], [-1.0], [0.4], "eos", 2)]
    calls = []

    def value_fn(p_ids, p_mask, ids, mask):  # V(s_t) = 10 * row + t + the prompt's length
        calls.append((p_ids.tolist(), p_mask.tolist(), ids.tolist(), mask.tolist()))
        return 10.0 * torch.arange(2.0)[:, None] + torch.arange(2.0)[None, :] + p_mask.sum(1, True)

    got = _inputs(INPUTS, rows, [8, 9], 0, [7], None, torch.device("cpu"), value_fn)
    assert set(got) == INPUTS and got["step_ids"] == [7] and got["generator"] is None
    assert calls == [([[8, 9], [8, 9]], [[1, 1], [1, 1]], [[3, 4], [5, 0]], [[1, 1], [1, 0]])]
    assert got["values"].tolist() == [[2.0, 3.0], [12.0, 0.0]]  # 0 on padding
    assert got["completion_ids"].tolist() == [[3, 4], [5, 0]]
    assert torch.allclose(got["logp"], torch.tensor([[-0.5, -0.1], [-1.0, 0.0]]))
    assert torch.allclose(got["entropy"], torch.tensor([[0.9, 0.2], [0.4, 0.0]]))
    assert all(BRANCH_POINTS.needs(n) <= INPUTS for n in BRANCH_POINTS)


# --------------------------------------------------------------------------------------------------
# the value rule: the critic's V(s_t) plus a visit bonus


def test_visits_count_the_rows_through_each_prefix_by_hand():
    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0], [1, 7, 8, 9]])  # right-padded with 0
    lengths = torch.tensor([3, 2, 4])
    from rlvr.rollout.branch_points import visits

    # t = 0: the root (3 rows); t = 1: [1] (3); t = 2: [1, 2] (rows 0, 1), [1, 7] (row 2);
    # t = 3: [1, 2, 3] (row 0; row 1 ended at 2: past its length nothing); the padding never agrees
    assert visits(ids, lengths).tolist() == [[3, 3, 2, 1], [3, 3, 2, 0], [3, 3, 1, 1]]
    assert visits(ids[:1], lengths[:1]).tolist() == [[1, 1, 1, 1]]


def test_value_rule_takes_the_highest_values_inside_each_row_ties_earlier():
    values = torch.tensor(
        [
            [0.1, 0.5, 0.9, 0.3, 0.9, 5.0],  # L = 5: 5.0 is padding; t = 0 is before first
            [0.7, 0.2, 0.2, 0.8, 0.0, 0.0],  # L = 4, first = 2: t = 2, 3 only
        ]
    )
    ids = torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]])
    lengths, first = torch.tensor([5, 4]), torch.tensor([1, 2])
    rule = BRANCH_POINTS["value"]
    got = rule(lengths, first, values=values, completion_ids=ids, top_k=9)
    assert _ts(got) == [[2, 4, 1, 3], [3, 2]]  # the tie 0.9 at t = 2 and 4: the earlier first
    assert [s for s, _ in got[0]] == pytest.approx([0.9, 0.9, 0.5, 0.3])
    got = rule(lengths, first, values=values, completion_ids=ids, top_k=1)
    assert got == [[(pytest.approx(0.9), 2)], [(pytest.approx(0.8), 3)]]
    got = rule(lengths, torch.tensor([5, 4]), values=values, completion_ids=ids, top_k=2)
    assert got == [[], []]  # first = L: nothing to branch at
    with pytest.raises(ValueError, match="'value' needs 'values'"):
        rule(lengths, first, completion_ids=ids, top_k=1)
    with pytest.raises(ValueError, match=r"values .* and completion_ids .* differ"):
        rule(lengths, first, values=values, completion_ids=ids[:, :4], top_k=1)


def test_value_rule_visit_bonus_by_hand():
    # three rows through the prefixes [1] (3 rows), [1, 2] (rows 0, 1), then each its own
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 6], [1, 7, 8, 9]])
    lengths, first = torch.tensor([4, 4, 4]), torch.tensor([1, 1, 1])
    flat = torch.tensor([[0.0, 0.5, 0.5, 0.5]]).repeat(3, 1)  # [3, 4] the same value everywhere
    rule = BRANCH_POINTS["value"]
    assert _ts(rule(lengths, first, values=flat, completion_ids=ids, top_k=1)) == [[1], [1], [1]]
    got = rule(lengths, first, values=flat, completion_ids=ids, top_k=3, explore=1.0)
    b = [math.sqrt(math.log(3) / n) for n in (3, 2, 1)]  # sqrt(ln R / n), R = 3
    assert got[0] == [
        (pytest.approx(0.5 + b[2]), 3),  # the state visited once
        (pytest.approx(0.5 + b[1]), 2),  # [1, 2]: twice
        (pytest.approx(0.5 + b[0]), 1),  # [1]: by all three
    ]
    assert _ts(got)[2] == [2, 3, 1]  # row 2 leaves the others after its first token
    # a high enough value wins over the bonus: 2.0 + b(3) > 0.5 + b(1)
    peak = flat.clone()
    peak[0, 1] = 2.0
    got = rule(lengths, first, values=peak, completion_ids=ids, top_k=1, explore=1.0)
    assert got[0] == [(pytest.approx(2.0 + b[0]), 1)]
    # one row: ln 1 = 0, no bonus whatever explore is
    one = rule(lengths[:1], first[:1], values=flat[:1], completion_ids=ids[:1], top_k=3, explore=5.0)
    assert one == [[(0.5, 1), (0.5, 2), (0.5, 3)]]


def test_value_rule_explore_zero_is_the_value_order_bit_for_bit():
    from rlvr.rollout.branch_points import _best, _inside

    g = _seed(4)
    for _ in range(5):
        values = torch.randn(5, 7, generator=g)  # [R, T]
        lengths = torch.randint(1, 8, (5,), generator=g)
        first = torch.randint(0, 3, (5,), generator=g)
        for vocab in (2, 50):  # many shared prefixes, or almost none: the visits change, not the points
            ids = torch.randint(1, vocab, (5, 7), generator=g)
            got = BRANCH_POINTS["value"](lengths, first, values=values, completion_ids=ids, top_k=3)
            assert got == _best(values, _inside(lengths, first, 7), 3, "value")
            for row, v in zip(got, values.tolist(), strict=True):
                assert all(s == v[t] for s, t in row)  # the scores are the values themselves


def _value_position(sizes, value_fn, *, points="value", **kw):
    knobs = {"roots": 1, "width": 2, "top_k": 1, "depth": 1, "max_new_tokens": 8} | kw
    return generate_branched(
        PositionLM(3),
        [[5, 5, 5]] * len(sizes),
        sizes,
        points=points,
        eos_id=0,
        pad_id=0,
        generator=_seed(0),
        value_fn=value_fn,
        **knobs,
    )


def test_value_branching_expands_the_state_of_highest_value():
    calls = []

    def peak_at_3(p_ids, p_mask, ids, mask):  # V(s_t) = -(t - 3)^2: the state y_<3 is the best
        calls.append((p_ids.shape, ids.shape, mask.sum(1).tolist()))
        t = torch.arange(ids.shape[1], dtype=torch.float32)  # [T]
        return (-((t - 3.0) ** 2)).expand(ids.shape[0], -1) * mask  # [R, T]

    roll = _value_position([3, 3], peak_at_3)
    assert roll.branch_pos.tolist() == [0, 3, 3] * 2 and roll.parent.tolist() == [-1, 0, 0] * 2
    _consistent(roll, [3, 3])
    assert calls == [((1, 3), (1, 8), [8])] * 2  # once per group and layer, on its one root
    calls.clear()  # depth 2: the second layer's rows (first = 4) branch at their best t >= 4
    roll = _value_position([5], peak_at_3, depth=2, width=2, top_k=1)
    assert roll.branch_pos.tolist() == [0, 3, 3, 4, 4] and roll.parent.tolist() == [-1, 0, 0, 1, 1]
    assert calls == [((1, 3), (1, 8), [8]), ((2, 3), (2, 8), [8, 8])]
    with pytest.raises(ValueError, match="needs 'values'; pass value_fn"):
        _value_position([3], None)


def test_value_fn_is_not_called_for_another_rule():
    def spy(*args):
        raise AssertionError("value_fn called for a rule that does not need values")

    for points in ("entropy", "uniform", "low_prob"):
        roll = _value_position([3], spy, points=points)
        assert len(roll) == 3 and roll.parent.tolist()[0] == -1
    assert _value_position([1], spy).parent is None  # roots >= G: no layer, no call


def test_micro_model_tree_guided_by_a_critic(micro_model):
    from rlvr.models.critic import ProbeValue

    model, tok = micro_model
    critic = ProbeValue(model)
    torch.manual_seed(0)
    torch.nn.init.normal_(critic.head.weight)  # a critic with an opinion (a new one says 0)
    seen = []

    def value_fn(*rows_in):
        v = critic(*rows_in)  # [R, T]
        seen.append(v.clone())
        return v

    roll = generate_branched(
        model,
        _ids(tok),
        [6, 6],
        roots=2,
        width=2,
        top_k=2,
        points="value",
        value_fn=value_fn,
        generator=_seed(0),
        **_knobs(tok, 12),
    )
    assert len(roll) == 12 and len(seen) == 2
    _consistent(roll, [6, 6])
    lens = roll.lengths.tolist()
    for g, v in zip((0, 6), seen, strict=True):
        # the 2 points of the group: the 2 highest V(s_t), 1 <= t < L, over its 2 roots
        cands = sorted((-v[k, t].item(), k, t) for k in (0, 1) for t in range(1, lens[g + k]))
        want = [(k, t) for _, k, t in cands[:2]]
        got = [(int(roll.parent[g + j]), int(roll.branch_pos[g + j])) for j in (2, 4)]
        assert got == want
        assert roll.parent[g + 2 : g + 6].tolist() == [want[0][0]] * 2 + [want[1][0]] * 2
