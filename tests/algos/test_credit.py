"""Token-level credit assignment: hand values, reductions to the outcome estimators, plain-loop
references, masked tokens."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos.advantages import ADVANTAGES, dr_grpo, grpo
from rlvr.algos.credit import (
    CREDIT,
    aligndistil,
    gae,
    gigpo,
    opd,
    optimal_token_baseline,
    prefix_tree,
    pure_min,
    reinforce_pp_token,
    rover,
    segment_ids,
    spo_segment,
    tree_td,
)
from rlvr.registry import KnobError

close = torch.testing.assert_close


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _right_mask(lengths: list[int], t: int) -> torch.Tensor:
    return (torch.arange(t) < torch.tensor(lengths)[:, None]).float()  # [N, T]


def _per_token(adv_bg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return adv_bg.reshape(-1, 1) * mask  # [N, T]


# one group of G = 4 over T = 3: rows 0, 1, 2 open with token 1; rows 0, 1 share "1 2"
IDS = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 6], [7, 8, 9]])
M4 = torch.ones(4, 3)
R4 = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
# the same group with no shared prefix
IDS_FREE = torch.tensor([[1, 2, 3], [4, 2, 3], [5, 2, 3], [6, 2, 3]])


def _random_batch(seed: int, b: int = 3, g: int = 5, t: int = 7, vocab: int = 2):
    """Small vocabulary: many shared prefixes, duplicates, and completions that are prefixes of
    others."""
    gen = _gen(seed)
    ids = torch.randint(0, vocab, (b * g, t), generator=gen)
    lengths = torch.randint(1, t + 1, (b * g,), generator=gen)
    mask = (torch.arange(t) < lengths[:, None]).float()
    rewards = torch.randint(0, 3, (b, g), generator=gen).float()
    return rewards, mask, ids


# ---------------------------------------------------------------- plain-Python references


def _ref_gae(rew, values, mask, gamma, lam):
    n, t = rew.shape
    adv = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        steps = [k for k in range(t) if mask[i, k] > 0]
        last, next_v = 0.0, 0.0
        for k in reversed(steps):
            delta = float(rew[i, k]) + gamma * next_v - float(values[i, k])
            last = delta + gamma * lam * last
            next_v = float(values[i, k])
            adv[i, k] = last
    return adv


def _paths(ids, mask, g):
    """Per row: its group and its tokens up to the last counted one."""
    out = []
    for i in range(ids.shape[0]):
        counted = [k for k in range(ids.shape[1]) if mask[i, k] > 0]
        length = counted[-1] + 1 if counted else 0
        out.append((i // g, tuple(int(x) for x in ids[i, :length])))
    return out


def _ref_value(paths, r, group, prefix):
    """Mean outcome over the group's completions through a prefix."""
    vals = [r[i] for i, (gi, p) in enumerate(paths) if gi == group and p[: len(prefix)] == prefix]
    return sum(vals) / len(vals)


def _ref_uniform_q(paths, r, group, prefix):
    """V^U(prefix): uniform mean over sampled next tokens and 'stop' (recursive)."""
    rows = [i for i, (gi, p) in enumerate(paths) if gi == group and p[: len(prefix)] == prefix]
    stop = [r[i] for i in rows if len(paths[i][1]) == len(prefix)]
    nxt = sorted({paths[i][1][len(prefix)] for i in rows if len(paths[i][1]) > len(prefix)})
    children = [_ref_uniform_q(paths, r, group, (*prefix, a)) for a in nxt]
    if stop:
        children.append(sum(stop) / len(stop))
    return sum(children) / len(children)


def _ref_branch(paths, group, prefix):
    rows = [i for i, (gi, p) in enumerate(paths) if gi == group and p[: len(prefix)] == prefix]
    nxt = {paths[i][1][len(prefix)] for i in rows if len(paths[i][1]) > len(prefix)}
    stops = any(len(paths[i][1]) == len(prefix) for i in rows)
    return len(nxt) + stops >= 2


# ---------------------------------------------------------------- registry


def test_registered_names_and_needs():
    assert set(CREDIT.names()) == {
        "gae",
        "reinforce_pp_token",
        "pure_min",
        "spo_segment",
        "tree_td",
        "gigpo",
        "rover",
        "gigpo_turns",
        "turn_grpo",
        "gated_turns",
        "hiper",
        "optimal_token_baseline",
        "opd",
        "rto",
        "vps_progress",
        "aligndistil",
        "prime",
        "oprl",
        "oprl_turns",
        "srpo",
        "scope",
    }
    assert CREDIT["gae"] is gae and CREDIT["rover"] is rover
    assert CREDIT.needs("gae") == {"values"}
    assert CREDIT.needs("reinforce_pp_token") == {"kl"}
    assert CREDIT.needs("pure_min") == {"process_rewards"}
    assert CREDIT.needs("spo_segment") == {"old_logp", "completion_ids"}
    for name in ("tree_td", "gigpo", "rover"):
        assert CREDIT.needs(name) == {"completion_ids"}
    assert CREDIT.needs("optimal_token_baseline") == {"old_logp", "sum_pi_sq"}
    assert CREDIT.knobs("optimal_token_baseline") == {"handle_zero_tail": True, "eps": 1e-8}
    assert CREDIT["opd"] is opd and CREDIT.needs("opd") == {"old_logp", "teacher_logp"}
    assert CREDIT.knobs("opd") == {
        "teacher_coef": 1.0,
        "outcome_coef": 0.0,
        "gamma": 0.0,
        "scale": "group",
        "eps": 1e-6,
    }
    # needed inputs are not knobs
    assert CREDIT.knobs("gae") == {"gamma": 1.0, "lam": 1.0, "whiten": False, "eps": 1e-8}
    assert "completion_ids" not in CREDIT.knobs("tree_td")


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("gae", {"lam": 1.5}),
        ("reinforce_pp_token", {"kl_coef": -0.1}),
        ("spo_segment", {"threshold": 0.0}),
        ("spo_segment", {"max_segments": 0}),
        ("spo_segment", {"estimator": "critic"}),
        ("tree_td", {"scale": "batch"}),
        ("gigpo", {"omega": -1.0}),
        ("rover", {"baseline": "mean"}),
        ("optimal_token_baseline", {"eps": -1.0}),
    ],
)
def test_bad_knobs_are_refused(name, knobs):
    with pytest.raises(KnobError):
        CREDIT.check_knobs(name, knobs)


# ---------------------------------------------------------------- GAE


def test_gae_lambda_gamma_one_is_future_reward_minus_value():
    values = torch.tensor([[0.5, 0.25, 0.75]])
    adv, ret = gae(torch.tensor([1.0]), torch.ones(1, 3), values=values)
    close(adv, torch.tensor([[0.5, 0.75, 0.25]]))
    close(ret, torch.ones(1, 3))
    # per-token rewards: sum of future rewards - value
    rew = torch.tensor([[0.5, -1.0, 2.0]])
    adv, ret = gae(rew, torch.ones(1, 3), values=values)
    close(adv, torch.tensor([[1.5 - 0.5, 1.0 - 0.25, 2.0 - 0.75]]))
    close(ret, torch.tensor([[1.5, 1.0, 2.0]]))


def test_gae_hand_values_discounted():
    # delta2 = 1 - .75 = .25; delta1 = .9*.75 - .25 = .425; delta0 = .9*.25 - .5 = -.275
    # A2 = .25; A1 = .425 + .45*.25 = .5375; A0 = -.275 + .45*.5375 = -.033125
    values = torch.tensor([[0.5, 0.25, 0.75]])
    adv, ret = gae(torch.tensor([[1.0]]), torch.ones(1, 3), values=values, gamma=0.9, lam=0.5)
    close(adv, torch.tensor([[-0.033125, 0.5375, 0.25]]))
    close(ret, torch.tensor([[0.466875, 0.7875, 1.0]]))


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.95, 0.9), (1.0, 0.5), (0.0, 1.0)])
def test_gae_equals_plain_loop_with_holes(gamma, lam):
    gen = _gen(3)
    mask = _right_mask([5, 3, 6, 1], 6)
    mask[0, 2] = 0  # a tool-output token inside a sequence: skipped, not a step
    mask[2, 1] = mask[2, 4] = 0
    rew = torch.randn(4, 6, generator=gen)
    values = torch.randn(4, 6, generator=gen)
    adv, ret = gae(rew, mask, values=values, gamma=gamma, lam=lam)
    want = _ref_gae(rew * mask, values, mask, gamma, lam)
    close(adv, want.float() * mask)
    close(ret, ((want + values.double()) * mask).float())


def test_gae_outcome_shapes_agree_and_go_on_last_counted_token():
    mask = _right_mask([3, 2, 1, 3], 3)
    values = torch.rand(4, 3, generator=_gen(1))
    r = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    by_bg = gae(r, mask, values=values, gamma=0.9, lam=0.8)
    by_n = gae(r.reshape(-1), mask, values=values, gamma=0.9, lam=0.8)
    tok = torch.zeros(4, 3)
    tok[0, 2], tok[1, 1], tok[2, 0], tok[3, 2] = 1.0, 0.0, 2.0, -1.0
    by_tok = gae(tok, mask, values=values, gamma=0.9, lam=0.8)
    for a, b in zip(by_bg, by_n, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(by_bg, by_tok, strict=True):
        close(a, b)


def test_gae_masked_positions_change_nothing():
    mask = _right_mask([3, 1], 4)
    rew = torch.randn(2, 4, generator=_gen(5))
    values = torch.randn(2, 4, generator=_gen(6))
    adv, ret = gae(rew, mask, values=values, gamma=0.9, lam=0.7)
    junk = (1 - mask) * 100.0
    adv2, ret2 = gae(rew + junk, mask, values=values - junk, gamma=0.9, lam=0.7)
    assert torch.equal(adv, adv2) and torch.equal(ret, ret2)
    assert torch.equal(adv * (1 - mask), torch.zeros(2, 4))
    assert torch.equal(ret * (1 - mask), torch.zeros(2, 4))


def test_gae_whiten_and_no_gradient_into_the_critic():
    mask = _right_mask([4, 2, 3], 4)
    values = torch.randn(3, 4, generator=_gen(7), requires_grad=True)
    adv, ret = gae(torch.tensor([1.0, 0.0, 2.0]), mask, values=values, gamma=0.9, lam=0.95, whiten=True)
    assert not adv.requires_grad and not ret.requires_grad
    vals = adv[mask.bool()]
    close(vals.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    close(vals.std(), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert torch.equal(adv * (1 - mask), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="needs 'values'"):
        gae(torch.tensor([1.0, 0.0, 2.0]), mask)


# ---------------------------------------------------------------- REINFORCE++


def test_reinforce_pp_token_hand_values():
    # row 0: r = [-.1*.5, 1 - .1*1] = [-.05, .9] -> returns [.85, .9]; row 1 (one token): [-.2]
    # whitened over the three tokens: mean .516667, unbiased std .621155
    mask = _right_mask([2, 1], 2)
    kl = torch.tensor([[0.5, 1.0], [2.0, 7.0]])
    adv = reinforce_pp_token(torch.tensor([1.0, 0.0]), mask, kl=kl, kl_coef=0.1)
    close(adv, torch.tensor([[0.536635, 0.617130], [-1.153765, 0.0]]))


def test_reinforce_pp_token_discounted_equals_loop():
    mask = _right_mask([4, 2, 3, 4], 4)
    mask[0, 1] = 0
    r = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    kl = torch.rand(4, 4, generator=_gen(2))
    adv = reinforce_pp_token(r, mask, kl=kl, kl_coef=0.2, gamma=0.9)
    tok = torch.zeros(4, 4, dtype=torch.float64)
    for i, length in enumerate([4, 2, 3, 4]):
        tok[i, length - 1] = r.reshape(-1)[i]
    tok = tok - 0.2 * kl.double()
    ret = _ref_gae(tok * mask, torch.zeros(4, 4), mask, 0.9, 1.0)
    vals = ret[mask.bool()]
    close(adv, (((ret - vals.mean()) / (vals.std() + 1e-8)) * mask).float())


def test_reinforce_pp_token_without_kl_and_group_baseline():
    mask = _right_mask([3, 1, 2, 3], 3)
    r = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match="needs 'kl'"):
        reinforce_pp_token(r, mask)
    a = reinforce_pp_token(r, mask, kl_coef=0.0)
    # gamma = 1, no KL: every token of a completion carries its outcome, then whitening
    tok = r.reshape(-1, 1).expand(4, 3)[mask.bool()]
    close(a[mask.bool()], (tok - tok.mean()) / (tok.std() + 1e-8))
    # with the group baseline, shifting a whole group changes nothing
    shifted = r + torch.tensor([[5.0], [-2.0]])
    close(
        reinforce_pp_token(shifted, mask, kl_coef=0.0, group_baseline=True),
        reinforce_pp_token(r, mask, kl_coef=0.0, group_baseline=True),
    )
    assert torch.equal(reinforce_pp_token(torch.ones(2, 2), mask, kl_coef=0.0), torch.zeros(4, 3))


# ---------------------------------------------------------------- PURE


def test_pure_min_hand_values():
    # row 0: steps at t=1 (-.2) and t=3 (.5): min ahead = [-.2, -.2, .5, .5], worst step -.2
    # row 1: steps at t=0 (.8) and t=2 (.3), 3 tokens: min ahead = [.3, .3, .3]; worst .3
    # leave-one-out baselines: row 0 -> .3, row 1 -> -.2
    p = torch.tensor([[0.0, -0.2, 0.0, 0.5], [0.8, 0.0, 0.3, 9.0]])
    mask = _right_mask([4, 3], 4)
    adv = pure_min(torch.zeros(1, 2), mask, process_rewards=p)
    close(adv, torch.tensor([[-0.5, -0.5, 0.2, 0.2], [0.5, 0.5, 0.5, 0.0]]))


def test_pure_min_equals_loop_and_never_exceeds_a_step_ahead():
    gen = _gen(11)
    b, g, t = 2, 3, 6
    mask = _right_mask([6, 4, 5, 6, 2, 3], t)
    p = torch.randn(b * g, t, generator=gen) * (torch.rand(b * g, t, generator=gen) < 0.4)
    adv = pure_min(torch.zeros(b, g), mask, process_rewards=p)
    ahead = torch.zeros(b * g, t, dtype=torch.float64)
    for i in range(b * g):
        for k in range(t):
            steps = [float(p[i, j]) for j in range(k, t) if mask[i, j] > 0 and p[i, j] != 0]
            ahead[i, k] = min(steps) if steps else 0.0
    v0 = ahead[:, 0].view(b, g)
    loo = (v0.sum(1, keepdim=True) - v0) / (g - 1)
    close(adv, ((ahead - loo.reshape(-1, 1)) * mask).float())
    # min-form: a high step later never lifts the credit of the tokens before a low step
    base = adv + loo.reshape(-1, 1).float() * mask
    for i in range(b * g):
        for k in range(t):
            if mask[i, k] > 0:
                later = [float(p[i, j]) for j in range(k, t) if mask[i, j] > 0 and p[i, j] != 0]
                assert all(float(base[i, k]) <= x + 1e-6 for x in later)


def test_pure_min_verifiable_reward_is_rloo_on_every_token():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    mask = _right_mask([3, 2, 3, 1], 3)
    adv = pure_min(r, mask, process_rewards=torch.zeros(4, 3), vr_coef=0.5)
    close(adv, _per_token(0.5 * ADVANTAGES["rloo"](r), mask))
    with pytest.raises(ValueError, match="G >= 2"):
        pure_min(torch.zeros(2, 1), torch.ones(2, 3), process_rewards=torch.zeros(2, 3))


# ---------------------------------------------------------------- prefix tree


def test_prefix_tree_hand_example():
    tree = prefix_tree(IDS, M4, 4)
    node, parent = tree.node, tree.parent
    assert node[0, 0] == node[1, 0] == node[2, 0] != node[3, 0]
    assert node[0, 1] == node[1, 1] != node[2, 1]
    assert len({int(x) for x in node[:, 2]}) == 4
    assert torch.equal(parent[:, 0], torch.zeros(4, dtype=torch.long))  # the group's root
    assert torch.equal(parent[:, 1:], node[:, :-1])
    assert tree.num_nodes == 1 + 2 + 3 + 4


@pytest.mark.parametrize("seed", range(4))
def test_prefix_tree_nodes_are_shared_exactly_by_equal_prefixes(seed):
    rewards, mask, ids = _random_batch(seed)
    g = rewards.shape[1]
    tree = prefix_tree(ids, mask, g)
    paths = _paths(ids, mask, g)
    n, t = ids.shape
    for k in range(t):
        for i in range(n):
            alive_i = k < len(paths[i][1])
            assert (tree.node[i, k] >= 0) == alive_i
            for j in range(n):
                if alive_i and k < len(paths[j][1]):
                    same = paths[i][0] == paths[j][0] and paths[i][1][: k + 1] == paths[j][1][: k + 1]
                    assert bool(tree.node[i, k] == tree.node[j, k]) == same
    used = tree.node[tree.node >= 0].unique()
    assert used.numel() + rewards.shape[0] == tree.num_nodes  # compact ids, roots 0 .. B-1


def test_prefix_tree_padding_ids_do_not_matter_and_groups_never_merge():
    mask = _right_mask([2, 3, 2, 3], 3)
    ids = torch.tensor([[1, 2, 0], [1, 2, 5], [1, 2, 0], [1, 2, 5]])
    tree = prefix_tree(ids, mask, 2)
    junk = ids.clone()
    junk[0, 2], junk[2, 2] = 5, 9
    assert torch.equal(prefix_tree(junk, mask, 2).node, tree.node)
    assert tree.node[0, 1] == tree.node[1, 1] != tree.node[2, 1]  # equal text, other prompt
    assert tree.node[0, 2] == -1 and tree.parent[1, 2] == tree.node[0, 1]


# ---------------------------------------------------------------- TEMPO: tree_td


def test_tree_td_hand_values():
    # V: root .5, "1" 2/3, "7" 0, "1 2" .5, "1 5" 1, leaves = R; outcome A = R - .5
    # row 0: t1 delta = .5 - 2/3, t2 delta = 1 - .5; row 2: t1 delta = 1 - 2/3
    want = torch.tensor(
        [
            [0.5, 0.5 - 1 / 6, 1.0],
            [-0.5, -0.5 - 1 / 6, -1.0],
            [0.5, 0.5 + 1 / 3, 0.5],
            [-0.5, -0.5, -0.5],
        ]
    )
    close(tree_td(R4, M4, completion_ids=IDS, scale="none"), want)
    # the prompt's own TD: "1" - root = 2/3 - 1/2, "7" - root = -1/2
    rooted = want.clone()
    rooted[:3, 0] += 1 / 6
    rooted[3, 0] -= 0.5
    close(tree_td(R4, M4, completion_ids=IDS, scale="none", root_td=True), rooted)
    # scale "group": everything divided by std_g = sqrt(1/3)
    std = math.sqrt(1 / 3) + 1e-6
    close(tree_td(R4, M4, completion_ids=IDS), want / std)


def test_tree_td_without_shared_prefixes_is_the_outcome_advantage():
    assert torch.equal(tree_td(R4, M4, completion_ids=IDS_FREE), _per_token(grpo(R4), M4))
    assert torch.equal(
        tree_td(R4, M4, completion_ids=IDS_FREE, scale="none"), _per_token(dr_grpo(R4), M4)
    )
    # and td_coef = 0 gives it with any tree
    assert torch.equal(tree_td(R4, M4, completion_ids=IDS, td_coef=0.0), _per_token(grpo(R4), M4))


@pytest.mark.parametrize("seed", range(3))
def test_tree_td_equals_loop(seed):
    rewards, mask, ids = _random_batch(seed)
    g = rewards.shape[1]
    paths = _paths(ids, mask, g)
    r = rewards.reshape(-1).tolist()
    out = tree_td(rewards, mask, completion_ids=ids, scale="none", root_td=True, td_coef=0.5)
    want = torch.zeros(ids.shape, dtype=torch.float64)
    for i, (grp_i, p) in enumerate(paths):
        a = r[i] - sum(r[grp_i * g : grp_i * g + g]) / g
        for k in range(len(p)):
            delta = _ref_value(paths, r, grp_i, p[: k + 1]) - _ref_value(paths, r, grp_i, p[:k])
            want[i, k] = a + 0.5 * delta
    close(out, (want * mask).float())


def test_tree_td_deltas_telescope_to_the_outcome_advantage():
    # unique completions: sum over tokens of the TD part = R_i - mean_g (the prompt's TD included)
    r = torch.tensor([[1.0, 0.0, 2.0, 0.5]])
    mask = _right_mask([3, 3, 2, 3], 3)
    ids = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, 0], [2, 5, 6]])
    out = tree_td(r, mask, completion_ids=ids, scale="none", root_td=True)
    td = out - _per_token(dr_grpo(r), mask)
    close(td.sum(1), dr_grpo(r).reshape(-1))


def test_tree_td_constant_group_and_masked_tokens():
    assert torch.equal(tree_td(torch.full((1, 4), 0.1), M4, completion_ids=IDS), torch.zeros(4, 3))
    rewards, mask, ids = _random_batch(9)
    out = tree_td(rewards, mask, completion_ids=ids)
    junk = torch.where(mask.bool(), ids, 1 - ids)
    assert torch.equal(tree_td(rewards, mask, completion_ids=junk), out)
    assert torch.equal(out * (1 - mask), torch.zeros_like(out))


# ---------------------------------------------------------------- GiGPO


def test_gigpo_hand_values():
    # anchors: root {0,1,2,3} mean .5; "1" {0,1,2} mean 2/3; "1 2" {0,1} mean .5; others alone
    want = torch.tensor(
        [
            [0.5 + 0.5, 0.5 + 1 / 3, 0.5 + 0.5],
            [-0.5 - 0.5, -0.5 - 2 / 3, -0.5 - 0.5],
            [0.5 + 0.5, 0.5 + 1 / 3, 0.5],
            [-0.5 - 0.5, -0.5, -0.5],
        ]
    )
    close(gigpo(R4, M4, completion_ids=IDS, scale="none"), want)
    # "group": step level over std of each anchor group: root sqrt(1/3), "1" sqrt(1/3), "1 2" sqrt(.5)
    s3, s2 = math.sqrt(1 / 3), math.sqrt(0.5)
    step = torch.tensor(
        [
            [0.5 / s3, (1 / 3) / s3, 0.5 / s2],
            [-0.5 / s3, (-2 / 3) / s3, -0.5 / s2],
            [0.5 / s3, (1 / 3) / s3, 0.0],
            [-0.5 / s3, 0.0, 0.0],
        ]
    )
    close(gigpo(R4, M4, completion_ids=IDS, omega=0.5), _per_token(grpo(R4), M4) + 0.5 * step)


def test_gigpo_reductions():
    rewards, mask, ids = _random_batch(4)
    assert torch.equal(
        gigpo(rewards, mask, completion_ids=ids, omega=0.0), _per_token(grpo(rewards), mask)
    )
    # no shared prefix: only the prompt is a shared state; there A^S = A^E
    a = gigpo(R4, M4, completion_ids=IDS_FREE, omega=0.5)
    base = _per_token(grpo(R4), M4)
    close(a[:, 1:], base[:, 1:])
    close(a[:, 0], 1.5 * base[:, 0])


@pytest.mark.parametrize("seed", range(3))
def test_gigpo_equals_loop(seed):
    rewards, mask, ids = _random_batch(seed, b=2, g=6)
    g = rewards.shape[1]
    paths = _paths(ids, mask, g)
    r = rewards.reshape(-1).tolist()
    gamma = 0.9
    out = gigpo(rewards, mask, completion_ids=ids, gamma=gamma, omega=0.7)
    episode = grpo(rewards).reshape(-1)
    want = torch.zeros(ids.shape, dtype=torch.float64)
    for i, (grp_i, p) in enumerate(paths):
        for k in range(len(p)):
            members = [
                j for j, (gj, q) in enumerate(paths) if gj == grp_i and len(q) > k and q[:k] == p[:k]
            ]
            ret = {j: gamma ** (len(paths[j][1]) - 1 - k) * r[j] for j in members}
            vals = torch.tensor(list(ret.values()), dtype=torch.float64)
            step = 0.0
            if len(members) > 1 and vals.max() != vals.min():
                step = (ret[i] - float(vals.mean())) / (float(vals.std()) + 1e-6)
            want[i, k] = float(episode[i]) + 0.7 * step
    close(out, (want * mask).float())


# ---------------------------------------------------------------- ROVER


def test_rover_hand_values():
    # uniform values: "1 2" -> (1 + 0)/2 = .5; "1" -> (.5 + 1)/2 = .75; "7" -> 0; root (.75 + 0)/2
    # = .375. Q^U along row 0: .75, .5, 1; row 2: .75, 1, 1; row 3: 0
    q = torch.tensor([[0.75, 0.5, 1.0], [0.75, 0.5, 0.0], [0.75, 1.0, 1.0], [0.0, 0.0, 0.0]])
    close(rover(R4, M4, completion_ids=IDS), q - 0.375)
    # parent baseline: Q(s, a) - V(s) at branch states only ("1 5" has one child: 0)
    close(
        rover(R4, M4, completion_ids=IDS, baseline="parent"),
        torch.tensor(
            [[0.375, -0.25, 0.5], [0.375, -0.25, -0.5], [0.375, 0.25, 0.0], [-0.375, 0.0, 0.0]]
        ),
    )


def test_rover_uniform_not_visit_weighted():
    # three samples share "1" (two correct), one takes "2" and is correct: visit-weighted V("1") = 2/3
    # < 1, but the uniform value of "1" is (1 + 0)/2 over its two distinct continuations
    ids = torch.tensor([[1, 3], [1, 3], [1, 4], [2, 5]])
    r = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    a = rover(r, torch.ones(4, 2), completion_ids=ids)
    v_root = (0.5 + 1.0) / 2
    close(a[:, 0], torch.tensor([0.5, 0.5, 0.5, 1.0]) - v_root)
    close(a[:, 1], torch.tensor([1.0, 1.0, 0.0, 1.0]) - v_root)


def test_rover_without_shared_prefixes_is_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 3.0, 1.0, 0.5]])
    ids = torch.cat([IDS_FREE, IDS_FREE + 10])
    mask = _right_mask([3, 2, 3, 1, 3, 3, 2, 1], 3)
    close(rover(rewards, mask, completion_ids=ids), _per_token(dr_grpo(rewards), mask))


@pytest.mark.parametrize("seed", range(4))
def test_rover_equals_recursive_loop(seed):
    rewards, mask, ids = _random_batch(seed)
    g = rewards.shape[1]
    paths = _paths(ids, mask, g)
    r = rewards.reshape(-1).tolist()
    root_b = rover(rewards, mask, completion_ids=ids)
    parent_b = rover(rewards, mask, completion_ids=ids, baseline="parent")
    want_root = torch.zeros(ids.shape, dtype=torch.float64)
    want_parent = torch.zeros(ids.shape, dtype=torch.float64)
    for i, (grp_i, p) in enumerate(paths):
        v_root = _ref_uniform_q(paths, r, grp_i, ())
        for k in range(len(p)):
            q = _ref_uniform_q(paths, r, grp_i, p[: k + 1])
            want_root[i, k] = q - v_root
            if _ref_branch(paths, grp_i, p[:k]) or k == 0:
                want_parent[i, k] = q - _ref_uniform_q(paths, r, grp_i, p[:k])
    close(root_b, (want_root * mask).float())
    close(parent_b, (want_parent * mask).float())


# ---------------------------------------------------------------- SPO


def test_segment_ids_hand_example():
    probs = torch.tensor([[0.95, 0.5, 0.99, 0.3, 0.2, 0.97, 0.5]])
    mask = _right_mask([6], 7)
    lp = probs.log()
    # cutpoints at 1, 3, 4; a segment starts right before its first cutpoint
    assert segment_ids(lp, mask).tolist() == [[0, 0, 0, 1, 2, 2, -1]]
    # at most 2 segments: 2 cutpoints each
    assert segment_ids(lp, mask, max_segments=2).tolist() == [[0, 0, 0, 0, 1, 1, -1]]
    assert segment_ids(lp, mask, max_segments=1).tolist() == [[0, 0, 0, 0, 0, 0, -1]]
    assert segment_ids(lp, mask, threshold=0.1).tolist() == [[0, 0, 0, 0, 0, 0, -1]]


def test_spo_outcome_estimator_and_probability_mask():
    rewards, mask, ids = _random_batch(2, b=2, g=3, t=6)
    lp = -torch.rand(6, 6, generator=_gen(8)) * 0.3  # probabilities in (.74, 1]
    full = spo_segment(rewards, mask, old_logp=lp, completion_ids=ids, prob_mask=False)
    assert torch.equal(full, _per_token(dr_grpo(rewards), mask))
    scaled = spo_segment(rewards, mask, old_logp=lp, completion_ids=ids, prob_mask=False, scale="group")
    assert torch.equal(scaled, _per_token(grpo(rewards), mask))
    masked = spo_segment(rewards, mask, old_logp=lp, completion_ids=ids)
    assert torch.equal(masked, full * (lp.exp() < 0.9))
    # no low-probability token: nothing to credit under the probability mask
    sure = torch.zeros(6, 6)
    assert torch.equal(spo_segment(rewards, mask, old_logp=sure, completion_ids=ids), torch.zeros(6, 6))


def test_spo_tree_estimator():
    lp = torch.full((4, 3), math.log(0.5))  # every token a cutpoint
    # one segment: V(end) - V(root) = R_i - mean_g for unique completions
    one = spo_segment(R4, M4, old_logp=lp, completion_ids=IDS, estimator="tree", max_segments=1)
    close(one, _per_token(dr_grpo(R4), M4))
    # one token per segment: the TD steps of the tree, the prompt's included
    per_token = spo_segment(R4, M4, old_logp=lp, completion_ids=IDS, estimator="tree")
    td = tree_td(R4, M4, completion_ids=IDS, scale="none", root_td=True) - _per_token(dr_grpo(R4), M4)
    close(per_token, td)
    # two segments [t0, t1] and [t2] (3 cutpoints, at most 2 segments of 2):
    # row 0: V("1 2") - V(root) = 0 and V(leaf) - V("1 2") = .5
    two = spo_segment(R4, M4, old_logp=lp, completion_ids=IDS, estimator="tree", max_segments=2)
    close(two[0], torch.tensor([0.0, 0.0, 0.5]))
    close(two[2], torch.tensor([0.5, 0.5, 0.0]))
    # i.i.d. completions: the first segment takes the whole outcome advantage
    free = spo_segment(R4, M4, old_logp=lp, completion_ids=IDS_FREE, estimator="tree", max_segments=2)
    close(free, torch.tensor([[0.5, 0.5, 0.0], [-0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, -0.5, 0.0]]))


def test_spo_masked_tokens_change_nothing():
    rewards, mask, ids = _random_batch(6, b=2, g=3, t=6)
    lp = -torch.rand(6, 6, generator=_gen(9))
    out = spo_segment(rewards, mask, old_logp=lp, completion_ids=ids, estimator="tree")
    junk_lp = torch.where(mask.bool(), lp, -5.0)
    junk_ids = torch.where(mask.bool(), ids, 7)
    again = spo_segment(rewards, mask, old_logp=junk_lp, completion_ids=junk_ids, estimator="tree")
    assert torch.equal(out, again)
    assert torch.equal(out * (1 - mask), torch.zeros_like(out))


# ---------------------------------------------------------------- OTB: optimal token baseline


def _ref_otb(rewards, mask, old_logp, sum_pi_sq, handle_zero_tail=True, eps=1e-8):
    """Plain-Python OTB: one group, one position, one row at a time."""
    b, g = rewards.shape
    n, t = mask.shape
    adv = torch.zeros(n, t, dtype=torch.float64)
    for grp in range(b):
        rows = range(grp * g, (grp + 1) * g)
        span = {}  # L_i = 1 + the last counted position
        ret, cum = {}, {}  # G_{i,t}, W_{i,t}
        for i in rows:
            counted = [k for k in range(t) if mask[i, k] > 0]
            span[i] = counted[-1] + 1 if counted else 0
            total = 0.0
            for k in range(t):
                if mask[i, k] > 0:
                    pi = math.exp(float(old_logp[i, k]))
                    total += max(0.0, 1 - 2 * pi + float(sum_pi_sq[i, k]))
                cum[i, k] = total
                ret[i, k] = float(rewards[grp, i - grp * g]) if k < span[i] else 0.0
        ordered = sorted(span.values(), reverse=True)
        alone = None
        if g > 1 and ordered[0] > ordered[1]:
            alone = next(i for i in rows if span[i] == ordered[0])
        for k in range(t):
            num = sum(ret[i, k] * cum[i, k] for i in rows if mask[i, k] > 0)
            den = sum(cum[i, k] for i in rows if mask[i, k] > 0) + eps
            base = num / den if den > 0 else 0.0
            for i in rows:
                if mask[i, k] == 0:
                    continue
                zero = g == 1 or (handle_zero_tail and i == alone and k >= ordered[1])
                adv[i, k] = ret[i, k] - (0.0 if zero else base)
    return adv.float()


def _policy_stats(n, t, seed, vocab=6):
    """Consistent (old_logp, sum_pi_sq) [N, T]: a sampled token's log-prob and sum_v pi_v^2 of one
    random softmax per position."""
    gen = _gen(seed)
    probs = torch.softmax(2 * torch.randn(n, t, vocab, generator=gen), -1)  # [N, T, V]
    tok = torch.multinomial(probs.view(-1, vocab), 1, generator=gen).view(n, t)  # [N, T]
    old_logp = probs.gather(-1, tok[..., None]).squeeze(-1).log()  # [N, T]
    return old_logp, probs.pow(2).sum(-1)  # [N, T], [N, T]


def test_optimal_token_baseline_hand_values():
    # one group of G = 2, T = 3; rewards (0, 1), lengths 2 and 3
    #   row 0: pi = (1/2, 1), S = (1/2, 1)          -> w = (1/2, 0),         W = (1/2, 1/2)
    #   row 1: pi = S = 1/4 at every position       -> w = 3/4 each,         W = (3/4, 3/2, 9/4)
    #   B_0 = (0 * 1/2 + 1 * 3/4) / (1/2 + 3/4) = 3/5,  B_1 = (1 * 3/2) / (1/2 + 3/2) = 3/4
    #   B_2 = 1 (row 1 alone); handle_zero_tail: row 1 is the unique longest, so its B_2 = 0
    #   A_0 = (-3/5, -3/4, 0),  A_1 = (2/5, 1/4, 1)   (without the zero tail A_1[2] = 1 - 1 = 0)
    rewards = torch.tensor([[0.0, 1.0]])
    mask = _right_mask([2, 3], 3)
    pi = torch.tensor([[0.5, 1.0, 0.5], [0.25, 0.25, 0.25]])  # [2, 3] (row 0, t = 2: padding)
    s2 = torch.tensor([[0.5, 1.0, 0.9], [0.25, 0.25, 0.25]])
    got = optimal_token_baseline(rewards, mask, old_logp=pi.log(), sum_pi_sq=s2)
    close(got, torch.tensor([[-0.6, -0.75, 0.0], [0.4, 0.25, 1.0]]))
    off = optimal_token_baseline(rewards, mask, old_logp=pi.log(), sum_pi_sq=s2, handle_zero_tail=False)
    close(off, torch.tensor([[-0.6, -0.75, 0.0], [0.4, 0.25, 0.0]]))
    # a group of one row: baseline 0, A = R on every counted token
    one = optimal_token_baseline(
        torch.tensor([[0.7]]), mask[1:], old_logp=pi[1:].log(), sum_pi_sq=s2[1:]
    )
    close(one, torch.full((1, 3), 0.7))
    # w = 0 everywhere (a deterministic policy): 0 / eps, baseline 0, A = R
    det = optimal_token_baseline(
        rewards, mask, old_logp=torch.zeros(2, 3), sum_pi_sq=torch.ones(2, 3), handle_zero_tail=False
    )
    close(det, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    # inconsistent inputs (pi = 0.9 with S = 0.7: 1 - 1.8 + 0.7 < 0) count as w = 0, not negative
    neg = optimal_token_baseline(
        rewards, mask, old_logp=torch.full((2, 3), math.log(0.9)), sum_pi_sq=torch.full((2, 3), 0.7)
    )
    close(neg, det)
    with pytest.raises(ValueError, match="sum_pi_sq"):
        optimal_token_baseline(rewards, mask, old_logp=pi.log())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("handle_zero_tail", [True, False])
def test_optimal_token_baseline_equals_loop(seed, handle_zero_tail):
    rewards, mask, _ = _random_batch(seed, b=4, g=3, t=6)
    if seed == 3:  # holes inside the span (tool output): no credit, no w, part of the history
        mask = mask * (torch.rand(mask.shape, generator=_gen(50)) > 0.3)
    old_logp, s2 = _policy_stats(12, 6, seed + 10)
    got = optimal_token_baseline(
        rewards, mask, old_logp=old_logp, sum_pi_sq=s2, handle_zero_tail=handle_zero_tail
    )
    want = _ref_otb(rewards, mask, old_logp, s2, handle_zero_tail=handle_zero_tail)
    close(got, want, rtol=1e-5, atol=1e-6)
    # ties for the longest row: nothing is zeroed
    tied = _right_mask([6, 6, 3], 6)
    close(
        optimal_token_baseline(rewards[:1], tied, old_logp=old_logp[:3], sum_pi_sq=s2[:3]),
        _ref_otb(rewards[:1], tied, old_logp[:3], s2[:3], handle_zero_tail=False),
    )


def test_optimal_token_baseline_equal_weights_is_the_mean_per_position():
    # the same w on every token of right-padded rows: W_t = (t + 1) w for every row counted at t,
    # so B_t is the plain mean of G over the rows still running at t
    rewards, mask, _ = _random_batch(4, b=3, g=4, t=6)
    lp = torch.full(mask.shape, math.log(0.3))
    s2 = torch.full(mask.shape, 0.4)
    got = optimal_token_baseline(rewards, mask, old_logp=lp, sum_pi_sq=s2, handle_zero_tail=False)
    g = mask.view(3, 4, 6)  # [B, G, T]
    ret = rewards[:, :, None] * g  # [B, G, T] G_t = R on the counted tokens
    mean = ret.sum(1, keepdim=True) / g.sum(1, keepdim=True).clamp(min=1)  # [B, 1, T]
    close(got, ((ret - mean) * g).view(12, 6), rtol=1e-5, atol=1e-6)


def test_optimal_token_baseline_constant_group_and_masked_tokens():
    _, mask, _ = _random_batch(5, b=2, g=4, t=6)
    lp, s2 = _policy_stats(8, 6, 7)
    const = torch.full((2, 4), 0.8)
    out = optimal_token_baseline(const, mask, old_logp=lp, sum_pi_sq=s2)
    shared = (mask.view(2, 4, 6).amin(1, keepdim=True) > 0).expand(2, 4, 6).reshape(8, 6)  # [N, T]
    assert bool(shared.any())
    close(out[shared], torch.zeros(int(shared.sum())), rtol=0, atol=1e-6)
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 0.2, 1.0, 1.0]])
    out = optimal_token_baseline(rewards, mask, old_logp=lp, sum_pi_sq=s2)
    junk_lp = torch.where(mask.bool(), lp, 3.0)
    junk_s2 = torch.where(mask.bool(), s2, -7.0)
    again = optimal_token_baseline(rewards, mask, old_logp=junk_lp, sum_pi_sq=junk_s2)
    assert torch.equal(out, again)
    assert torch.equal(out * (1 - mask), torch.zeros_like(out))


# ---------------------------------------------------------------- on-policy distillation (opd)


def _opd_batch():
    """B = 2 prompts x G = 2 samples, T = 3; d = teacher_logp - old_logp on the counted tokens is
    [-0.5, -1 | 0.5, 0, 1 | -2 | 0, 1] (the 9s and 7s sit on masked positions)."""
    rewards = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # the second group is constant
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    teacher = torch.tensor([[-1.0, -2.0, 9.0], [-0.2, -0.2, -0.2], [-3.0, 7.0, 7.0], [-1.0, -1.0, 9.0]])
    old = torch.tensor([[-0.5, -1.0, -9.0], [-0.7, -0.2, -1.2], [-1.0, 0.0, 0.0], [-1.0, -2.0, 0.0]])
    return rewards, mask, teacher, old


def test_opd_hand_values_on_two_groups_of_two():
    rewards, mask, teacher, old = _opd_batch()
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # grpo of (1, 0): +-0.5 / (std 0.7071 + eps); (0.5, 0.5) -> 0
    out = opd(rewards, mask, old_logp=old, teacher_logp=teacher, teacher_coef=0.5, outcome_coef=2.0)
    want = torch.tensor(
        [
            [2 * a - 0.25, 2 * a - 0.5, 0.0],
            [-2 * a + 0.25, -2 * a, -2 * a + 0.5],
            [-1.0, 0.0, 0.0],
            [0.0, 0.5, 0.0],
        ]
    )
    close(out, want)
    # the defaults: pure distillation, each token its own log pi_T - log pi_old (discount 0)
    d = torch.tensor([[-0.5, -1.0, 0.0], [0.5, 0.0, 1.0], [-2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    close(opd(rewards, mask, old_logp=old, teacher_logp=teacher), d)
    # gamma = 1: the reward-to-go of the sequence's reverse KL; gamma = 0.5 discounts it
    togo = torch.tensor([[-1.5, -1.0, 0.0], [1.5, 1.0, 1.0], [-2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    close(opd(rewards, mask, old_logp=old, teacher_logp=teacher, gamma=1.0), togo)
    half = opd(rewards, mask, old_logp=old, teacher_logp=teacher, gamma=0.5)
    close(half[1], torch.tensor([0.75, 0.5, 1.0]))  # 0.5 + 0.5 (0 + 0.5 * 1), 0 + 0.5 * 1, 1
    close(half[0], torch.tensor([-1.0, -1.0, 0.0]))  # -0.5 + 0.5 * -1


def test_opd_without_the_teacher_is_grpo_broadcast_to_the_bit():
    gen = _gen(3)
    rewards = torch.rand(4, 5, generator=gen)
    rewards[1] = 0.3  # a constant group
    mask = (torch.rand(20, 7, generator=gen) > 0.3).float()  # [N, T] with holes
    grpo_tok = torch.where(mask.bool(), grpo(rewards).reshape(-1, 1), 0.0)  # [N, T]
    junk = torch.randn(20, 7, generator=gen)
    for teacher in (junk, None):  # the teacher's term is not computed at teacher_coef = 0
        out = opd(rewards, mask, old_logp=junk, teacher_logp=teacher, teacher_coef=0.0, outcome_coef=1.0)
        assert torch.equal(out, grpo_tok)
    assert torch.equal(
        opd(rewards, mask, teacher_coef=0.0, outcome_coef=1.0, scale="none"),
        torch.where(mask.bool(), grpo(rewards, scale="none").reshape(-1, 1), 0.0),
    )
    with pytest.raises(ValueError, match="opd needs 'teacher_logp'"):
        opd(rewards, mask, old_logp=junk)


def _opd_loop(rewards, mask, old, teacher, teacher_coef, outcome_coef, gamma):
    """Plain loops: the outcome advantage by hand, the discounted sum over each row's counted tokens."""
    b, g = rewards.shape
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for i in range(b * g):
        grp = [float(x) for x in rewards[i // g]]
        mean = sum(grp) / g
        std = math.sqrt(sum((x - mean) ** 2 for x in grp) / (g - 1))
        outcome = 0.0 if max(grp) == min(grp) else (grp[i % g] - mean) / (std + 1e-6)
        counted = [t for t in range(mask.shape[1]) if mask[i, t] > 0]
        for t in counted:
            later = [k for k in counted if k >= t]
            kl = sum(
                gamma ** len([j for j in later if j < k]) * float(teacher[i, k] - old[i, k])
                for k in later
            )
            out[i, t] = outcome_coef * outcome + teacher_coef * kl
    return out.float()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_opd_equals_a_plain_loop(gamma, seed):
    gen = _gen(seed)
    b, g, t = 3, 4, 6
    rewards = (torch.rand(b, g, generator=gen) > 0.5).float()
    rewards[0] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mask = (torch.rand(b * g, t, generator=gen) > 0.25).float()  # holes: tool output, padding
    old = -torch.rand(b * g, t, generator=gen) * 3
    teacher = -torch.rand(b * g, t, generator=gen) * 3
    kw = {"teacher_coef": 0.7, "outcome_coef": 1.3, "gamma": gamma}
    out = opd(rewards, mask, old_logp=old, teacher_logp=teacher, **kw)
    close(out, _opd_loop(rewards, mask, old, teacher, **kw), rtol=1e-5, atol=1e-6)


def test_opd_knob_bounds():
    for knobs in ({"teacher_coef": -0.1}, {"outcome_coef": -1.0}, {"gamma": 1.5}, {"eps": -1.0}):
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("opd", knobs)
    CREDIT.check_knobs("opd", {"teacher_coef": 0.0, "outcome_coef": 2.0, "gamma": 1.0})


# ---------------------------------------------------------------- AlignDistil


def test_aligndistil_hand_values():
    rewards, mask, dpo, old = _opd_batch()
    ref = torch.tensor([[-2.0, -2.0, 0.0], [-0.2, -1.2, -0.7], [-1.0, 7.0, 0.0], [-3.0, -1.0, 0.0]])
    # D = dpo - ref on counted tokens: [1, 0 | 0, 1, 0.5 | -2 | 2, 0]; w = 2: log pi* = ref + 2 D
    # = [0, -2 | -0.2, 0.8, 0.3 | -5 | 1, -1]; minus old: [0.5, -1 | 0.5, 1, 1.5 | -4 | 2, 1]
    kw = {"old_logp": old, "teacher_logp": dpo, "ref_logp": ref}
    want = torch.tensor([[0.5, -1.0, 0.0], [0.5, 1.0, 1.5], [-4.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    close(aligndistil(rewards, mask, distil_weight=2.0, **kw), want)
    # shift_cap 1.5: the shifts 2 D = [2, 0 | 0, 2, 1 | -4 | 4, 0] are clipped to +-1.5
    capped = torch.tensor([[0.0, -1.0, 0.0], [0.5, 0.5, 1.5], [-1.5, 0.0, 0.0], [-0.5, 1.0, 0.0]])
    close(aligndistil(rewards, mask, distil_weight=2.0, shift_cap=1.5, **kw), capped)
    # w = 0: distillation to the reference; gamma = 1 sums the rest of the row
    to_ref = torch.where(mask.bool(), ref - old, 0.0)
    close(aligndistil(rewards, mask, distil_weight=0.0, **kw), to_ref)
    togo = torch.tensor([[-0.5, -1.0, 0.0], [3.0, 2.5, 1.5], [-4.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    close(aligndistil(rewards, mask, distil_weight=2.0, gamma=1.0, **kw), togo)
    with pytest.raises(ValueError, match="aligndistil needs 'ref_logp'"):
        aligndistil(rewards, mask, old_logp=old, teacher_logp=dpo, distil_weight=0.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_aligndistil_weight_one_is_opd_to_the_bit(seed):
    gen = _gen(seed)
    rewards = (torch.rand(3, 4, generator=gen) > 0.5).float()
    mask = (torch.rand(12, 6, generator=gen) > 0.25).float()
    old, dpo, ref = (-torch.rand(12, 6, generator=gen) * 3 for _ in range(3))
    for kw in ({}, {"teacher_coef": 0.7, "outcome_coef": 1.3, "gamma": 0.5, "scale": "none"}):
        want = opd(rewards, mask, old_logp=old, teacher_logp=dpo, **kw)
        for r in (ref, None):  # the reference is not read at w = 1
            got = aligndistil(rewards, mask, old_logp=old, teacher_logp=dpo, ref_logp=r, **kw)
            assert torch.equal(got, want)
    # and a general weight equals opd with the combined teacher ref + w (dpo - ref) as its teacher
    star = ref + 0.6 * (dpo - ref)
    close(
        aligndistil(rewards, mask, old_logp=old, teacher_logp=dpo, ref_logp=ref, distil_weight=0.6),
        opd(rewards, mask, old_logp=old, teacher_logp=star),
    )


def test_aligndistil_adaptive_weight_equals_a_plain_loop():
    gen = _gen(5)
    mask = (torch.rand(4, 5, generator=gen) > 0.2).float()
    old, dpo, ref = (-torch.rand(4, 5, generator=gen) * 4 for _ in range(3))
    out = aligndistil(
        torch.zeros(2, 2),
        mask,
        old_logp=old,
        teacher_logp=dpo,
        ref_logp=ref,
        distil_weight=1.5,
        shift_cap=0.8,
    )
    for i in range(4):
        for t in range(5):
            d = float(dpo[i, t] - ref[i, t])
            w = 1.5 if d == 0 else min(1.5, 0.8 / abs(d))  # w_t = min(w, cap / |D_t|)
            want = float(ref[i, t]) + w * d - float(old[i, t]) if mask[i, t] else 0.0
            assert float(out[i, t]) == pytest.approx(want, abs=1e-5)


def test_aligndistil_knob_bounds():
    for knobs in ({"distil_weight": -0.1}, {"shift_cap": -1.0}, {"gamma": 2.0}, {"teacher_coef": -1}):
        with pytest.raises(KnobError, match="out of range"):
            CREDIT.check_knobs("aligndistil", knobs)
    assert CREDIT.needs("aligndistil") == {"old_logp", "teacher_logp", "ref_logp"}


# ---------------------------------------------------------------- all assigners


def _call(name, rewards, mask, ids):
    n, t = mask.shape
    extra = {
        "values": torch.zeros(n, t),
        "kl": torch.zeros(n, t),
        "old_logp": torch.full((n, t), math.log(0.5)),
        "completion_ids": ids,
        "process_rewards": torch.zeros(n, t),
        "sum_pi_sq": torch.full((n, t), 0.3),
        "teacher_logp": torch.full((n, t), math.log(0.25)),
        "ref_logp": torch.full((n, t), math.log(0.4)),
        "implicit_rewards": torch.full((n, t), 0.01),
        "self_teacher_logp": torch.full((n, t), math.log(0.6)),
        "self_teacher_entropy": torch.full((n, t), 0.5),
        "self_teacher_mask": (torch.arange(n) % 2).float(),  # [N] every other row routed
        "turn": (mask > 0).long(),  # one model turn over the counted tokens
        "turn_rewards": torch.zeros(n, 1),
        "turn_states": torch.ones(n, 1, dtype=torch.long),
    }
    out = CREDIT[name](rewards, mask, **{k: extra[k] for k in CREDIT.needs(name)})
    return out[0] if name == "gae" else out


@pytest.mark.parametrize("name", sorted(CREDIT))
def test_every_assigner_is_zero_off_mask_and_finite(name):
    rewards, mask, ids = _random_batch(12, b=2, g=3, t=5)
    out = _call(name, rewards, mask, ids)
    assert out.shape == mask.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out * (1 - mask), torch.zeros_like(out))


def test_cutpoints_are_the_counted_tokens_below_the_threshold():
    from rlvr.algos.credit import cutpoints

    old_logp = torch.tensor([[0.5, 0.95, 0.2, 0.8], [0.1, 1.0, 0.89, 0.91]]).log()  # [2, 4]
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # [2, 4]
    got = cutpoints(old_logp, mask, threshold=0.9)
    assert got.tolist() == [[True, False, False, True], [True, False, True, False]]
    assert cutpoints(old_logp, mask, threshold=0.15).tolist() == [[False] * 4, [True] + [False] * 3]
