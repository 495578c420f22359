"""Token weights: hand values, neutral settings == none, masking, no gradient, loop-vs-vectorised."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos.objectives import gtpo, ppo_clip
from rlvr.algos.weights import TOKEN_WEIGHTS, empg, entropy_filter, none, rorecomp, tw_grpo

close = torch.testing.assert_close
NAMES = ["none", "empg", "tw_grpo", "entropy_filter", "rorecomp"]
NEEDS = {
    "none": set(),
    "empg": {"entropy"},
    "tw_grpo": {"logp", "group"},
    "entropy_filter": {"entropy"},
    "rorecomp": {"group", "rewards"},
}
NEUTRAL = {
    "none": {},
    "empg": {"k": 0.0},
    "tw_grpo": {"alpha": 0.0},
    "entropy_filter": {"threshold": None},
    "rorecomp": {"priority_frac": 1.0},
}
ACTIVE = {
    "none": {},
    "empg": {"k": 2.0},
    "tw_grpo": {"alpha": 0.7},
    "entropy_filter": {"threshold": 0.5},
    "rorecomp": {"priority_frac": 0.5},
}


def _batch(seed=0, b=2, g=3, t=5):
    gen = torch.Generator().manual_seed(seed)
    n = b * g
    mask = (torch.rand(n, t, generator=gen) > 0.25).float()
    mask[:, 0] = 1.0
    inputs = {
        "entropy": torch.rand(n, t, generator=gen),
        "logp": -torch.rand(n, t, generator=gen) * 2,
        "group": torch.arange(b).repeat_interleave(g),
        "completion_ids": torch.randint(0, 4, (n, t), generator=gen),
        "rewards": torch.randint(0, 2, (n,), generator=gen).float(),
    }
    return mask, inputs


def _call(name, mask, inputs, **kw):
    fn = TOKEN_WEIGHTS[name]
    return fn(mask, **{k: inputs[k] for k in fn.needs}, **kw)


def test_names_needs_and_default_knobs():
    assert TOKEN_WEIGHTS.kind == "token weighting"
    assert sorted(TOKEN_WEIGHTS) == sorted(NAMES)
    for name in NAMES:
        assert TOKEN_WEIGHTS.needs(name) == NEEDS[name], name
        TOKEN_WEIGHTS.check_knobs(name, TOKEN_WEIGHTS.knobs(name))
    assert TOKEN_WEIGHTS["none"] is none
    assert TOKEN_WEIGHTS.knobs("entropy_filter") == {"threshold": None, "level": "completion"}


@pytest.mark.parametrize("name", NAMES)
def test_neutral_setting_is_none(name):
    mask, inputs = _batch(seed=1)
    w = _call(name, mask, inputs, **NEUTRAL[name])
    assert torch.equal(w, torch.ones(6, 5))


@pytest.mark.parametrize("name", NAMES)
def test_nonnegative_detached_and_masked_positions_do_not_matter(name):
    mask, inputs = _batch(seed=2)
    grad_inputs = {
        k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in inputs.items()
    }
    w1 = _call(name, mask, grad_inputs, **ACTIVE[name])
    assert w1.shape == mask.shape and not w1.requires_grad
    assert (w1 >= 0).all()
    assert torch.equal(w1[mask == 0], torch.ones(int((mask == 0).sum())))
    pad = mask == 0
    noise = torch.rand(mask.shape, generator=torch.Generator().manual_seed(3)) * 50
    wild = dict(inputs)
    wild["entropy"] = torch.where(pad, inputs["entropy"] + noise, inputs["entropy"])
    wild["logp"] = torch.where(pad, inputs["logp"] + noise, inputs["logp"])
    w2 = _call(name, mask, wild, **ACTIVE[name])
    close(w1, w2)


@pytest.mark.parametrize("name", ["empg", "tw_grpo"])
def test_normalised_weights_have_mean_one_on_counted_tokens(name):
    mask, inputs = _batch(seed=4)
    w = _call(name, mask, inputs, **ACTIVE[name])
    assert float(w[mask > 0].mean()) == pytest.approx(1.0, abs=1e-6)
    assert not torch.allclose(w, torch.ones_like(w))  # the weights do vary


# ---------------------------------------------------------------- empg


def test_empg_hand_values():
    # counted entropies 0, 1, 2 (the 4th token masked): Hn = 0, .5, 1; with k = ln 4,
    # exp(-k Hn) = 1, 1/2, 1/4, mean 7/12 -> weights 12/7, 6/7, 3/7
    ent = torch.tensor([[0.0, 1.0, 2.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = empg(mask, entropy=ent, k=math.log(4))
    close(w, torch.tensor([[12 / 7, 6 / 7, 3 / 7, 1.0]]))
    # confident tokens weigh more: monotone decreasing in entropy
    mask, inputs = _batch(seed=5)
    w = empg(mask, entropy=inputs["entropy"], k=1.5)
    m = mask > 0
    order = torch.argsort(inputs["entropy"][m])
    assert (w[m][order].diff() <= 1e-6).all()


def test_empg_constant_entropy_is_none_and_missing_entropy_raises():
    mask = torch.ones(2, 3)
    assert torch.equal(empg(mask, entropy=torch.full((2, 3), 0.7), k=3.0), torch.ones(2, 3))
    with pytest.raises(ValueError, match="entropy"):
        empg(mask)


# ---------------------------------------------------------------- tw_grpo


def test_tw_grpo_hand_values():
    # one group of 2. probabilities: position 0 [.5, .5] (var 0); position 1 [.2, .6] (var .04);
    # position 2 only row 0 counted (var 0). counted tokens: 3 + 2, mean var = .08 / 5 = .016
    # -> v / mean = row 0 [0, 2.5, 0], row 1 [0, 2.5, (masked)]
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.5, 0.6, 0.1]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    group = torch.zeros(2, dtype=torch.long)
    close(
        tw_grpo(mask, logp=logp, group=group, alpha=1.0),
        torch.tensor([[0.0, 2.5, 0.0], [0.0, 2.5, 1.0]]),
    )
    close(
        tw_grpo(mask, logp=logp, group=group, alpha=0.5),
        torch.tensor([[0.5, 1.75, 0.5], [0.5, 1.75, 1.0]]),
    )


def test_tw_grpo_vectorised_equals_loop():
    mask, inputs = _batch(seed=6, b=3, g=4, t=6)
    logp, group = inputs["logp"], inputs["group"]
    w = tw_grpo(mask, logp=logp, group=group, alpha=0.8)
    n, t = mask.shape
    var = torch.zeros(n, t)
    for i in range(n):
        for k in range(t):
            ps = [math.exp(float(logp[j, k])) for j in range(n) if group[j] == group[i] and mask[j, k]]
            mu = sum(ps) / len(ps) if ps else 0.0
            var[i, k] = sum((p - mu) ** 2 for p in ps) / max(len(ps), 1)
    mean = float(var[mask > 0].mean())
    for i in range(n):
        for k in range(t):
            want = 0.2 + 0.8 * float(var[i, k]) / mean if mask[i, k] else 1.0
            assert float(w[i, k]) == pytest.approx(want, rel=1e-5, abs=1e-6), (i, k)


def test_tw_grpo_single_sample_groups_are_none_and_groups_must_be_contiguous():
    mask, inputs = _batch(seed=7)
    w = tw_grpo(mask, logp=inputs["logp"], group=torch.arange(6), alpha=1.0)
    assert torch.equal(w, torch.ones(6, 5))
    with pytest.raises(ValueError, match="contiguous"):
        tw_grpo(mask, logp=inputs["logp"], group=torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="logp"):
        tw_grpo(mask, group=inputs["group"])


# ---------------------------------------------------------------- entropy_filter


def test_entropy_filter_hand_values():
    ent = torch.tensor([[0.2, 0.4, 9.0], [0.9, 0.1, 0.2]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # completion means: .3 (the masked 9 ignored) and .4
    close(
        entropy_filter(mask, entropy=ent, threshold=0.35),
        torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
    )
    close(entropy_filter(mask, entropy=ent, threshold=0.4), torch.ones(2, 3))
    close(
        entropy_filter(mask, entropy=ent, threshold=0.3, level="token"),
        torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
    )
    with pytest.raises(ValueError, match="level"):
        entropy_filter(mask, entropy=ent, threshold=0.3, level="nope")


def test_entropy_filter_times_ppo_clip_is_gtpo_filter():
    # the weight and gtpo's own filter agree when there are no conflict tokens
    gen = torch.Generator().manual_seed(8)
    mask, inputs = _batch(seed=8)
    logp = inputs["logp"]
    old = logp + torch.randn(6, 5, generator=gen) * 0.3
    adv = torch.randn(6, generator=gen)
    distinct = torch.arange(30).view(6, 5)
    w = entropy_filter(mask, entropy=inputs["entropy"], threshold=0.5)
    assert 0 < int((w[:, 0] == 0).sum()) < 6  # some rows dropped, not all
    close(
        ppo_clip(logp, old, adv, mask) * w,
        gtpo(
            logp,
            old,
            adv,
            mask,
            completion_ids=distinct,
            group=inputs["group"],
            entropy=inputs["entropy"],
            entropy_threshold=0.5,
        ),
    )


# ---------------------------------------------------------------- rorecomp


def _lengths_mask(lengths, t=8):
    return (torch.arange(t).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()  # [N, T]


def test_rorecomp_hand_values():
    # one group of 6: successes of lengths 5, 2, 7 and failures of lengths 3, 6, 1
    mask = _lengths_mask([5, 2, 7, 3, 6, 1])
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    w = rorecomp(mask, group=torch.zeros(6, dtype=torch.long), rewards=r, priority_frac=0.5)
    # ceil(0.5 * 3) = 2 of each: the successes of lengths 2 and 5, the failures of lengths 6 and 3
    assert w[:, 0].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    assert torch.equal(w * mask, w[:, :1] * mask)  # a whole row is kept or dropped
    # the smallest fraction keeps one of each; a second group is selected on its own
    mask2 = torch.cat([mask, _lengths_mask([4, 4, 2, 2, 8, 1])])
    r2 = torch.cat([r, torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])])  # constant: all at the mean
    grp = torch.arange(2).repeat_interleave(6)
    w2 = rorecomp(mask2, group=grp, rewards=r2, priority_frac=0.01)
    assert w2[:, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0] + [1.0] * 6
    # ties: the earlier row; rewards at the mean (zero advantage) are kept
    w3 = rorecomp(
        _lengths_mask([3, 3, 4, 4, 4]),
        group=torch.zeros(5, dtype=torch.long),
        rewards=torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]),
        priority_frac=0.5,
    )
    assert w3[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]


def _rorecomp_loop(mask, group, rewards, frac):
    n = mask.shape[0]
    keep = [1.0] * n
    lengths = (mask > 0).sum(-1).tolist()
    for gid in sorted(set(group.tolist())):
        rows = [i for i in range(n) if int(group[i]) == gid]
        mean = sum(float(rewards[i]) for i in rows) / len(rows)
        pos = [i for i in rows if float(rewards[i]) > mean + 1e-6]
        neg = [i for i in rows if float(rewards[i]) < mean - 1e-6]
        short = sorted(pos, key=lambda i: (lengths[i], i))[: math.ceil(frac * len(pos))]
        long_ = sorted(neg, key=lambda i: (-lengths[i], i))[: math.ceil(frac * len(neg))]
        for i in pos + neg:
            keep[i] = 1.0 if i in short or i in long_ else 0.0
    return torch.tensor(keep)


@pytest.mark.parametrize("seed", range(4))
def test_rorecomp_vectorised_equals_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    b, g, t = 3, 6, 10
    mask = _lengths_mask(torch.randint(1, t + 1, (b * g,), generator=gen).tolist(), t)
    rewards = torch.randint(0, 3, (b * g,), generator=gen).float() / 2
    group = torch.arange(b).repeat_interleave(g)
    for frac in (0.2, 0.5, 0.75, 1.0):
        w = rorecomp(mask, group=group, rewards=rewards, priority_frac=frac)
        assert torch.equal(w[:, 0], _rorecomp_loop(mask, group, rewards, frac))


def test_rorecomp_errors():
    mask = _lengths_mask([2, 3, 2, 3])
    with pytest.raises(ValueError, match="contiguous"):
        rorecomp(mask, group=torch.tensor([0, 1, 0, 1]), rewards=torch.ones(4))
    with pytest.raises(ValueError, match="needs `rewards`"):
        rorecomp(mask, group=torch.tensor([0, 0, 1, 1]))
    with pytest.raises(Exception, match="priority_frac"):
        TOKEN_WEIGHTS.check_knobs("rorecomp", {"priority_frac": 0.0})
