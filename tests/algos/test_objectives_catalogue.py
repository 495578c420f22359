"""The catalogue of per-token objectives beyond reinforce/ppo_clip: hand values, reductions to the base
method at neutral settings, gradients, masking, loop-vs-vectorised."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, OBJECTIVES
from rlvr.algos.objectives import (
    cispo,
    clip_cov,
    copg,
    dhpo,
    gspo,
    gtpo,
    kl_cov,
    luspo,
    ppo_clip,
    real,
    reinforce,
    thr,
)

close = torch.testing.assert_close
NEW = ["gspo", "luspo", "dhpo", "cispo", "gtpo", "clip_cov", "kl_cov", "thr", "real", "copg"]
NEEDS = {
    "gspo": set(),
    "luspo": set(),
    "dhpo": {"entropy"},
    "cispo": set(),
    "gtpo": {"completion_ids", "group", "entropy"},
    "clip_cov": set(),
    "kl_cov": set(),
    "thr": {"completion_ids", "group"},
    "real": {"rewards", "group"},
    "copg": {"ref_logp", "group"},
}
# knobs that make every branch of a component run in the generic tests
ACTIVE = {
    "dhpo": {"mode": "entropy"},
    "gtpo": {"entropy_threshold": 0.6},
    "clip_cov": {"fraction": 0.3},
    "kl_cov": {"fraction": 0.3},
}


def _leaf(x):
    return x.clone().requires_grad_(True)


def _grad(fn, logp, *args, agg="seq_mean_token_mean", **kw):
    """Value and gradient w.r.t. logp of aggregate(fn(logp, ...))."""
    lp = _leaf(logp)
    loss = fn(lp, *args, **kw)
    AGGREGATIONS[agg](loss, args[2]).backward()
    return loss.detach(), lp.grad


def _batch(seed=0, b=2, g=3, t=5):
    gen = torch.Generator().manual_seed(seed)
    n = b * g
    logp = -torch.rand(n, t, generator=gen) * 3
    old = logp + torch.randn(n, t, generator=gen) * 0.3
    adv = torch.randn(n, generator=gen)
    mask = (torch.rand(n, t, generator=gen) > 0.25).float()
    mask[:, 0] = 1.0  # no empty row
    extra = {
        "ref_logp": logp + torch.randn(n, t, generator=gen) * 0.2,
        "entropy": torch.rand(n, t, generator=gen),
        "completion_ids": torch.randint(0, 3, (n, t), generator=gen),
        "group": torch.arange(b).repeat_interleave(g),
        "rewards": (torch.rand(n, generator=gen) > 0.5).float(),
    }
    return logp, old, adv, mask, extra


def _call(name, logp, old, adv, mask, extra, stats=None, **kw):
    fn = OBJECTIVES[name]
    return fn(logp, old, adv, mask, stats=stats, **{k: extra[k] for k in fn.needs}, **kw)


# ---------------------------------------------------------------- registry


def test_names_and_needs():
    for name in NEW:
        assert name in OBJECTIVES
        assert OBJECTIVES.needs(name) == NEEDS[name], name
        OBJECTIVES.check_knobs(name, OBJECTIVES.knobs(name))
    assert OBJECTIVES["gspo"] is gspo and OBJECTIVES["copg"] is copg
    assert OBJECTIVES.knobs("gspo") == {"clip_low": 3e-4, "clip_high": 4e-4}
    assert OBJECTIVES.knobs("dhpo")["mode"] == "average"


# ---------------------------------------------------------------- generic invariants


@pytest.mark.parametrize("name", NEW)
def test_masked_tokens_change_nothing(name):
    logp, old, adv, mask, extra = _batch(seed=1)
    kw = ACTIVE.get(name, {})
    s1: dict = {}
    lp1 = _leaf(logp)
    loss1 = _call(name, lp1, old, adv, mask, extra, stats=s1, **kw)
    assert loss1.shape == logp.shape and torch.isfinite(loss1).all()
    assert torch.equal(loss1[mask == 0], torch.zeros(int((mask == 0).sum())))
    loss1.sum().backward()
    assert torch.equal(lp1.grad[mask == 0], torch.zeros(int((mask == 0).sum())))

    noise = torch.randn(logp.shape, generator=torch.Generator().manual_seed(7)) * 5
    pad = mask == 0
    extra2 = dict(extra)
    extra2["ref_logp"] = torch.where(pad, extra["ref_logp"] + noise, extra["ref_logp"])
    extra2["entropy"] = torch.where(pad, extra["entropy"] + noise.abs() * 10, extra["entropy"])
    extra2["completion_ids"] = torch.where(pad, extra["completion_ids"] + 7, extra["completion_ids"])
    s2: dict = {}
    lp2 = _leaf(torch.where(pad, logp + noise, logp))
    loss2 = _call(name, lp2, torch.where(pad, old - noise, old), adv, mask, extra2, stats=s2, **kw)
    close(loss1, loss2)
    loss2.sum().backward()
    close(lp1.grad, lp2.grad)
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k] == pytest.approx(s2[k], abs=1e-6), k


@pytest.mark.parametrize("name", NEW)
def test_adv_per_sequence_equals_expanded(name):
    logp, old, adv, mask, extra = _batch(seed=2)
    kw = ACTIVE.get(name, {})
    a = _call(name, logp, old, adv, mask, extra, **kw)
    b = _call(name, logp, old, adv[:, None].expand_as(logp).clone(), mask, extra, **kw)
    close(a, b)


@pytest.mark.parametrize("name", ["gspo", "luspo", "dhpo", "cispo", "gtpo", "clip_cov", "kl_cov", "thr"])
def test_adv_wrong_shape_raises(name):
    logp, old, _, mask, extra = _batch()
    with pytest.raises(ValueError, match="adv"):
        _call(name, logp, old, torch.zeros(6, 9), mask, extra)


@pytest.mark.parametrize("name", ["gtpo", "thr", "real", "copg"])
def test_group_must_be_contiguous_equal_blocks(name):
    logp, old, adv, mask, extra = _batch()
    bad = dict(extra, group=torch.tensor([0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="contiguous"):
        _call(name, logp, old, adv, mask, bad)
    bad = dict(extra, group=torch.tensor([0, 0, 1, 1, 1, 1]))
    with pytest.raises(ValueError, match="equal size"):
        _call(name, logp, old, adv, mask, bad)


# ---------------------------------------------------------------- gspo


def _gspo_reference(logp, old, adv, mask, clip_low, clip_high):
    """Per-sequence GSPO loss L_i (gradient through s_i), a plain loop: [N]."""
    out = []
    for i in range(logp.shape[0]):
        idx = mask[i] > 0
        s = torch.exp((logp[i][idx] - old[i][idx]).mean())
        a = adv[i]
        out.append(-torch.minimum(s * a, s.clamp(1 - clip_low, 1 + clip_high) * a))
    return torch.stack(out)


def test_gspo_hand_values_and_gradient():
    # row 0: log-ratios .1, .3 -> s = e^.2 = 1.2214 > 1.2, A = 1: clipped, L = -1.2, no gradient
    # row 1: log-ratios -.1, .1 (third token masked) -> s = 1, A = -2: L = 2, dL/dlogp_t = -A*s = 2
    old = torch.zeros(2, 3)
    logp = _leaf(torch.tensor([[0.1, 0.3, 0.0], [-0.1, 0.1, 5.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    stats: dict = {}
    loss = gspo(logp, old, torch.tensor([1.0, -2.0]), mask, clip_low=0.2, clip_high=0.2, stats=stats)
    close(loss, torch.tensor([[-1.2, -1.2, 0.0], [2.0, 2.0, 0.0]]))
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.sum().backward()
    close(logp.grad, torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 0.0]]))


@pytest.mark.parametrize(("clip_low", "clip_high"), [(0.2, 0.2), (3e-4, 4e-4)])
def test_gspo_one_token_per_sequence_is_ppo_clip(clip_low, clip_high):
    logp, old, adv, _, _ = _batch(seed=3, t=1)
    mask = torch.ones_like(logp)
    v1, g1 = _grad(gspo, logp, old, adv, mask, clip_low=clip_low, clip_high=clip_high)
    v2, g2 = _grad(ppo_clip, logp, old, adv, mask, clip_low=clip_low, clip_high=clip_high)
    close(v1, v2)
    close(g1, g2)


@pytest.mark.parametrize("agg", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum"])
def test_gspo_equals_sequence_loss_on_every_token(agg):
    # the GSPO-token form has the same value and gradient as L_i placed on every token of row i
    logp, old, adv, mask, _ = _batch(seed=4)
    clip = {"clip_low": 0.05, "clip_high": 0.05}
    value, grad = _grad(gspo, logp, old, adv, mask, agg=agg, **clip)
    lp = _leaf(logp)
    per_seq = _gspo_reference(lp, old, adv, mask, **clip)  # [N]
    AGGREGATIONS[agg](per_seq[:, None] * mask, mask).backward()
    close(value, (per_seq[:, None] * mask).detach())
    close(grad, lp.grad)
    # the data exercise both clipped and unclipped rows
    s = torch.exp(((logp - old) * mask).sum(-1) / mask.sum(-1))
    assert ((s - 1).abs() > 0.05).any() and ((s - 1).abs() < 0.05).any()


def test_gspo_seq_mean_token_mean_is_the_gspo_objective():
    logp, old, adv, mask, _ = _batch(seed=5)
    loss = gspo(logp, old, adv, mask)
    want = _gspo_reference(logp, old, adv, mask, 3e-4, 4e-4).mean()
    close(AGGREGATIONS["seq_mean_token_mean"](loss, mask), want)


# ---------------------------------------------------------------- luspo


def test_luspo_equal_lengths_is_gspo():
    logp, old, adv, _, _ = _batch(seed=6)
    mask = torch.ones_like(logp)
    mask[:, -2:] = 0.0  # every row 3 tokens long
    v1, g1 = _grad(luspo, logp, old, adv, mask, clip_low=0.1, clip_high=0.1)
    v2, g2 = _grad(gspo, logp, old, adv, mask, clip_low=0.1, clip_high=0.1)
    close(v1, v2)
    close(g1, g2)


def test_luspo_hand_scale_and_length_weighting():
    # lengths 1 and 3, mean 2: factors .5 and 1.5; at ratio 1 GSPO's loss is -A
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    loss = luspo(logp, logp, torch.tensor([2.0, 1.0]), mask)
    close(loss, torch.tensor([[-1.0, 0.0, 0.0], [-1.5, -1.5, -1.5]]))
    # seq_mean_token_mean of luspo = length-weighted mean of L_i = token_mean of gspo
    logp, old, adv, mask, _ = _batch(seed=7)
    assert len(set(mask.sum(-1).tolist())) > 1
    v1, g1 = _grad(luspo, logp, old, adv, mask, agg="seq_mean_token_mean", clip_low=0.1, clip_high=0.1)
    v2, g2 = _grad(gspo, logp, old, adv, mask, agg="token_mean", clip_low=0.1, clip_high=0.1)
    close(AGGREGATIONS["seq_mean_token_mean"](v1, mask), AGGREGATIONS["token_mean"](v2, mask))
    close(g1, g2)


# ---------------------------------------------------------------- dhpo


def test_dhpo_weight_zero_is_ppo_clip_and_one_is_gspo():
    logp, old, adv, mask, _ = _batch(seed=8)
    clip = {"clip_low": 0.1, "clip_high": 0.15}
    seq_clip = {"seq_clip_low": 0.02, "seq_clip_high": 0.03}
    v, g = _grad(dhpo, logp, old, adv, mask, seq_weight=0.0, **clip, **seq_clip)
    v0, g0 = _grad(ppo_clip, logp, old, adv, mask, **clip)
    close(v, v0)
    close(g, g0)
    v, g = _grad(dhpo, logp, old, adv, mask, seq_weight=1.0, **clip, **seq_clip)
    v1, g1 = _grad(gspo, logp, old, adv, mask, clip_low=0.02, clip_high=0.03)
    close(v, v1)
    close(g, g1)


def test_dhpo_branch_clipping_hand_values():
    # token ratios 1.5, 1.0; s = sqrt(1.5) = 1.224745; A = 1, w = .5
    # rho = [1.362372, 1.112372];  clipped mix = .5 * 1.0004 + .5 * [1.2, 1.0] = [1.1002, 1.0002]
    # L = -min(rho, clipped) = [-1.1002, -1.0002]; the gradient flows only through the unclipped
    # token branch of token 1: -A * .5 * r_1 = -.5
    logp = _leaf(torch.log(torch.tensor([[1.5, 1.0]])))
    stats: dict = {}
    loss = dhpo(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), stats=stats)
    close(loss, torch.tensor([[-1.1002, -1.0002]]))
    assert stats["clip_frac"] == 1.0 and stats["seq_weight_mean"] == 0.5
    loss.sum().backward()
    close(logp.grad, torch.tensor([[0.0, -0.5]]))


def _dhpo_loop(logp, old, adv, mask, entropy, mode, seq_weight, cl, ch, scl, sch):
    out = torch.zeros_like(logp)
    for i in range(logp.shape[0]):
        idx = [t for t in range(logp.shape[1]) if mask[i, t] > 0]
        s = math.exp(sum(float(logp[i, t] - old[i, t]) for t in idx) / len(idx))
        h_bar = sum(float(entropy[i, t]) for t in idx) / len(idx)
        for t in idx:
            r = math.exp(float(logp[i, t] - old[i, t]))
            if mode == "average":
                w = seq_weight
            else:
                h = float(entropy[i, t])
                w = h_bar / (h + h_bar) if h + h_bar > 0 else 0.5
            rho = w * s + (1 - w) * r
            rho_c = w * min(max(s, 1 - scl), 1 + sch) + (1 - w) * min(max(r, 1 - cl), 1 + ch)
            a = float(adv[i])
            out[i, t] = -min(rho * a, rho_c * a)
    return out


@pytest.mark.parametrize(("mode", "seq_weight"), [("average", 0.5), ("average", 0.3), ("entropy", 0.5)])
def test_dhpo_vectorised_equals_loop(mode, seq_weight):
    logp, old, adv, mask, extra = _batch(seed=9)
    knobs = {"clip_low": 0.1, "clip_high": 0.2, "seq_clip_low": 0.01, "seq_clip_high": 0.02}
    vec = dhpo(logp, old, adv, mask, entropy=extra["entropy"], mode=mode, seq_weight=seq_weight, **knobs)
    loop = _dhpo_loop(logp, old, adv, mask, extra["entropy"], mode, seq_weight, 0.1, 0.2, 0.01, 0.02)
    close(vec, loop, atol=1e-5, rtol=1e-5)


def test_dhpo_entropy_weights_hand_and_constant_entropy_is_average():
    # entropies 1, 3: mean 2 -> sequence weights 2/3 and 2/5
    stats: dict = {}
    logp = torch.zeros(1, 2)
    dhpo(
        logp,
        logp,
        torch.ones(1),
        torch.ones(1, 2),
        entropy=torch.tensor([[1.0, 3.0]]),
        mode="entropy",
        stats=stats,
    )
    assert stats["seq_weight_mean"] == pytest.approx((2 / 3 + 2 / 5) / 2)
    logp, old, adv, mask, _ = _batch(seed=10)
    const = torch.full_like(logp, 0.7)
    close(
        dhpo(logp, old, adv, mask, entropy=const, mode="entropy"),
        dhpo(logp, old, adv, mask, mode="average", seq_weight=0.5),
    )
    with pytest.raises(ValueError, match="entropy"):
        dhpo(logp, old, adv, mask, mode="entropy")
    with pytest.raises(ValueError, match="mode"):
        dhpo(logp, old, adv, mask, mode="nope")


# ---------------------------------------------------------------- cispo


def test_cispo_at_ratio_one_is_reinforce():
    logp, _, adv, mask, _ = _batch(seed=11)
    v1, g1 = _grad(cispo, logp, logp, adv, mask, agg="token_mean")
    v2, g2 = _grad(reinforce, logp, logp, adv, mask, agg="token_mean")
    close(v1, v2)
    close(g1, g2)


def test_cispo_clips_the_weight_but_keeps_every_gradient():
    # ratios 1.5, .5, 1.1 with clip_low .2, clip_high .28: weights 1.28, .8, 1.1; A = 1
    ratios = torch.tensor([[1.5, 0.5, 1.1]])
    logp = _leaf(torch.log(ratios))
    stats: dict = {}
    loss = cispo(
        logp,
        torch.zeros(1, 3),
        torch.tensor([1.0]),
        torch.ones(1, 3),
        clip_low=0.2,
        clip_high=0.28,
        stats=stats,
    )
    close(loss, -torch.tensor([[1.28, 0.8, 1.1]]) * torch.log(ratios))
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    loss.sum().backward()
    close(logp.grad, torch.tensor([[-1.28, -0.8, -1.1]]))
    # ppo_clip drops the gradient of the first token (clipped), cispo does not
    lp = _leaf(torch.log(ratios))
    ppo_clip(
        lp, torch.zeros(1, 3), torch.tensor([1.0]), torch.ones(1, 3), clip_high=0.28
    ).sum().backward()
    assert lp.grad[0, 0] == 0.0 and logp.grad[0, 0] != 0.0
    # default: no lower bound, so a tiny ratio keeps its own weight
    lp = _leaf(torch.log(torch.tensor([[0.01]])))
    cispo(lp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1)).sum().backward()
    close(lp.grad, torch.tensor([[0.01]]))


# ---------------------------------------------------------------- gtpo

GTPO_IDS = torch.tensor([[5, 6, 7], [5, 8, 7], [9, 6, 7]])
GTPO_ADV = torch.tensor([1.0, -1.0, 1.0])
GTPO_GROUP = torch.zeros(3, dtype=torch.long)


def test_gtpo_conflict_tokens_hand_values():
    # position 0: rows 0 (+) and 1 (-) share id 5 -> conflict for both; position 1: rows 0 and 2 share
    # id 6 with the same sign -> no conflict; position 2: id 7 everywhere, mixed signs -> conflict.
    # weights: row 0 [2, 1, 2], row 1 [0, 1, 0], row 2 [1, 1, 2];  at ratio 1 ppo_clip's loss is -A
    logp = _leaf(torch.zeros(3, 3))
    stats: dict = {}
    loss = gtpo(
        logp,
        logp.detach(),
        GTPO_ADV,
        torch.ones(3, 3),
        completion_ids=GTPO_IDS,
        group=GTPO_GROUP,
        stats=stats,
    )
    close(loss, torch.tensor([[-2.0, -1.0, -2.0], [0.0, 1.0, 0.0], [-1.0, -1.0, -2.0]]))
    assert stats["conflict_frac"] == pytest.approx(5 / 9)
    loss.sum().backward()
    close(logp.grad, torch.tensor([[-2.0, -1.0, -2.0], [0.0, 1.0, 0.0], [-1.0, -1.0, -2.0]]))
    # a masked position is no conflict: masking row 1's last token frees rows 0 and 2 there
    mask = torch.ones(3, 3)
    mask[1, 2] = 0.0
    loss = gtpo(
        torch.zeros(3, 3),
        torch.zeros(3, 3),
        GTPO_ADV,
        mask,
        completion_ids=GTPO_IDS,
        group=GTPO_GROUP,
        amplify=3.0,
    )
    close(loss, torch.tensor([[-3.0, -1.0, -1.0], [0.0, 1.0, 0.0], [-1.0, -1.0, -1.0]]))


def test_gtpo_without_conflicts_or_filter_is_ppo_clip():
    logp, old, adv, mask, extra = _batch(seed=12)
    distinct = torch.arange(logp.numel()).view_as(logp)  # no id repeats: no conflicts
    v1, g1 = _grad(
        gtpo,
        logp,
        old,
        adv,
        mask,
        completion_ids=distinct,
        group=extra["group"],
        entropy=extra["entropy"],
        clip_low=0.1,
        clip_high=0.3,
    )
    v2, g2 = _grad(ppo_clip, logp, old, adv, mask, clip_low=0.1, clip_high=0.3)
    close(v1, v2)
    close(g1, g2)
    # same ids in the same group but one-signed advantages: no conflicts either
    same = torch.zeros_like(extra["completion_ids"])
    v3, _ = _grad(gtpo, logp, old, adv.abs(), mask, completion_ids=same, group=extra["group"])
    v4, _ = _grad(ppo_clip, logp, old, adv.abs(), mask)
    close(v3, v4)


def test_gtpo_entropy_filter_drops_completions():
    # mean entropies (counted tokens only): .5, 1.0, 1.5 -> threshold .9 drops rows 1 and 2
    ent = torch.tensor([[0.5, 0.5, 9.0], [1.0, 1.0, 1.0], [1.0, 2.0, 1.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    ids = torch.arange(9).view(3, 3)
    stats: dict = {}
    loss = gtpo(
        torch.zeros(3, 3),
        torch.zeros(3, 3),
        torch.ones(3),
        mask,
        completion_ids=ids,
        group=GTPO_GROUP,
        entropy=ent,
        entropy_threshold=0.9,
        stats=stats,
    )
    close(loss, torch.tensor([[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert stats["dropped_frac"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="entropy"):
        gtpo(
            torch.zeros(3, 3),
            torch.zeros(3, 3),
            torch.ones(3),
            mask,
            completion_ids=ids,
            group=GTPO_GROUP,
            entropy_threshold=0.9,
        )


def test_gtpo_conflicts_vectorised_equals_loop():
    logp, _, adv, mask, extra = _batch(seed=13, b=3, g=4, t=6)
    ids, group = extra["completion_ids"], extra["group"]
    zero = torch.zeros_like(logp)
    loss = gtpo(zero, zero, adv, mask, completion_ids=ids, group=group, amplify=2.5)
    n, t = logp.shape
    for i in range(n):
        for k in range(t):
            if not mask[i, k]:
                assert loss[i, k] == 0.0
                continue
            conflict = any(
                group[j] == group[i] and mask[j, k] and ids[j, k] == ids[i, k] and adv[i] * adv[j] < 0
                for j in range(n)
            )
            w = (2.5 if adv[i] > 0 else 0.0) if conflict else 1.0
            assert float(loss[i, k]) == pytest.approx(-float(adv[i]) * w, abs=1e-6), (i, k)


# ---------------------------------------------------------------- clip_cov / kl_cov

# cov = (logp - mean logp) * (A - mean A): mean logp = -2, mean A = 0
#   row 0 (A = 1):  (1.5)(1) = 1.5,  (-1)(1) = -1;   row 1 (A = -1): (.5)(-1) = -.5,  (-1)(-1) = 1
COV_LOGP = torch.tensor([[-0.5, -3.0], [-1.5, -3.0]])
COV_ADV = torch.tensor([1.0, -1.0])


@pytest.mark.parametrize(
    ("fraction", "selected"),
    [
        (0.0, []),
        (0.25, [(0, 0)]),
        (0.5, [(0, 0), (1, 1)]),
        (0.49, [(0, 0)]),
        (0.74, [(0, 0), (1, 1)]),
        (1.0, [(0, 0), (1, 1)]),
    ],
)
def test_clip_cov_detaches_the_top_covariance_tokens(fraction, selected):
    # k = floor(fraction * 4) tokens, only among the two with positive covariance
    logp = _leaf(COV_LOGP)
    stats: dict = {}
    loss = clip_cov(logp, COV_LOGP, COV_ADV, torch.ones(2, 2), fraction=fraction, stats=stats)
    close(loss, -COV_ADV[:, None].expand(2, 2))  # values are ppo_clip's at ratio 1
    loss.sum().backward()
    want = -COV_ADV[:, None].expand(2, 2).clone()
    for i, t in selected:
        want[i, t] = 0.0
    close(logp.grad, want)
    assert stats["cov_frac"] == pytest.approx(len(selected) / 4)


def test_kl_cov_penalises_the_top_covariance_tokens():
    # old = logp - .1 everywhere: ratio e^.1 inside the clip; penalty coef * .1^2 / 2 = .01 (coef 2)
    # on the two top tokens (0, 0) and (1, 1); its gradient coef * .1 = .2
    logp = _leaf(COV_LOGP)
    old = COV_LOGP - 0.1
    loss = kl_cov(logp, old, COV_ADV, torch.ones(2, 2), fraction=0.5, coef=2.0)
    r = math.exp(0.1)
    close(loss, torch.tensor([[-r + 0.01, -r], [r, r + 0.01]]))
    loss.sum().backward()
    close(logp.grad, torch.tensor([[-r + 0.2, -r], [r, r + 0.2]]))


@pytest.mark.parametrize("name", ["clip_cov", "kl_cov"])
def test_cov_fraction_zero_is_ppo_clip(name):
    logp, old, adv, mask, _ = _batch(seed=14)
    v1, g1 = _grad(OBJECTIVES[name], logp, old, adv, mask, fraction=0.0, clip_low=0.1)
    v2, g2 = _grad(ppo_clip, logp, old, adv, mask, clip_low=0.1)
    close(v1, v2)
    close(g1, g2)


def test_cov_selection_equals_loop():
    logp, _, _, mask, _ = _batch(seed=15, b=3, g=4, t=6)
    adv = torch.randn(logp.shape, generator=torch.Generator().manual_seed(3))  # per-token advantages
    tokens = [(i, t) for i in range(logp.shape[0]) for t in range(logp.shape[1]) if mask[i, t]]
    mu_lp = sum(float(logp[i, t]) for i, t in tokens) / len(tokens)
    mu_a = sum(float(adv[i, t]) for i, t in tokens) / len(tokens)
    cov = {(i, t): (float(logp[i, t]) - mu_lp) * (float(adv[i, t]) - mu_a) for i, t in tokens}
    k = int(0.2 * len(tokens))
    top = sorted((c, it) for it, c in cov.items() if c > 0)[::-1][:k]
    want = torch.zeros_like(logp)
    for _, (i, t) in top:
        want[i, t] = 1.0
    # kl_cov with old = logp - 1: penalty coef/2 exactly on the selected tokens
    pen = kl_cov(logp, logp - 1.0, adv, mask, fraction=0.2, coef=2.0) - ppo_clip(
        logp, logp - 1.0, adv, mask
    )
    close(pen, want)


# ---------------------------------------------------------------- thr

THR_IDS = torch.tensor([[5, 6], [6, 9], [5, 7]])
THR_ADV = torch.tensor([1.0, -1.0, -1.0])


@pytest.mark.parametrize(
    ("p", "want"),
    [
        # row 0 correct: THR > 0 on both; row 1: id 6 occurs in row 0 (any position) -> THR < 0,
        # id 9 does not -> 0; row 2: id 5 occurs in row 0 -> THR < 0, id 7 -> 0. At ratio 1 L = -A * w
        (0.5, [[-1.5, -1.5], [0.5, 1.0], [0.5, 1.0]]),
        (-0.5, [[-0.5, -0.5], [1.5, 1.0], [1.5, 1.0]]),
        (0.0, [[-1.0, -1.0], [1.0, 1.0], [1.0, 1.0]]),
    ],
)
def test_thr_hand_values(p, want):
    logp = _leaf(torch.zeros(3, 2))
    stats: dict = {}
    loss = thr(
        logp,
        logp.detach(),
        THR_ADV,
        torch.ones(3, 2),
        completion_ids=THR_IDS,
        group=torch.zeros(3, dtype=torch.long),
        p=p,
        stats=stats,
    )
    close(loss, torch.tensor(want))
    assert stats["thr_pos_frac"] == pytest.approx(2 / 6)
    assert stats["thr_neg_frac"] == pytest.approx(2 / 6)
    loss.sum().backward()
    close(logp.grad, torch.tensor(want))


def test_thr_masked_tokens_of_correct_responses_do_not_count_and_groups_are_separate():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])  # row 0's id 6 masked
    loss = thr(
        torch.zeros(3, 2),
        torch.zeros(3, 2),
        THR_ADV,
        mask,
        completion_ids=THR_IDS,
        group=torch.zeros(3, dtype=torch.long),
        p=0.5,
    )
    close(loss, torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, 1.0]]))
    # the same rows split into three groups of one: no response sees another's tokens
    loss = thr(
        torch.zeros(3, 2),
        torch.zeros(3, 2),
        THR_ADV,
        torch.ones(3, 2),
        completion_ids=THR_IDS,
        group=torch.arange(3),
        p=0.5,
    )
    close(loss, torch.tensor([[-1.5, -1.5], [1.0, 1.0], [1.0, 1.0]]))


def test_thr_zero_is_ppo_clip():
    logp, old, adv, mask, extra = _batch(seed=16)
    v1, g1 = _grad(
        thr, logp, old, adv, mask, completion_ids=extra["completion_ids"], group=extra["group"], p=0.0
    )
    v2, g2 = _grad(ppo_clip, logp, old, adv, mask)
    close(v1, v2)
    close(g1, g2)


# ---------------------------------------------------------------- real


def test_real_bce_hand_values():
    # scores beta * sum(logp - old): row 0 = ln 3 (sigmoid .75), label 1 -> -ln .75 = .287682
    # row 1 = ln 3, label 0 -> -ln .25 = 1.386294;  the third token of row 1 is masked
    logp = torch.tensor([[math.log(3), 0.0, 0.0], [0.5 * math.log(3), 0.5 * math.log(3), 4.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss = real(
        logp, torch.zeros(2, 3), torch.zeros(2), mask, rewards=torch.tensor([1.0, 0.0]), loss="bce"
    )
    close(loss, torch.tensor([[0.287682] * 3, [1.386294, 1.386294, 0.0]]))


def test_real_on_policy_bce_gradient_is_reinforce_with_half_offset():
    # s = 0: dL_i/ds_i = sigmoid(0) - y_i; with seq_mean_token_mean each token gets beta (1/2 - y) / N
    logp, _, _, mask, extra = _batch(seed=17)
    y = extra["rewards"]
    _, grad = _grad(
        real,
        logp,
        logp,
        torch.zeros(6),
        mask,
        rewards=y,
        group=extra["group"],
        loss="bce",
        score_scale=2.0,
    )
    close(grad, 2.0 * (0.5 - y)[:, None] * mask / 6)


def test_real_anchor_hand_values():
    # labels [1, 0, 0, 1], scores [0, ln 2, 0, ln 3]:
    # positives: log(1 + e^0 + e^-ln3) = ln(7/3), shared by 2;  negatives: log(1 + 2 + 1) = ln 4, by 2
    s = torch.tensor([0.0, math.log(2), 0.0, math.log(3)])
    logp = s[:, None]
    loss = real(
        logp,
        torch.zeros(4, 1),
        torch.zeros(4),
        torch.ones(4, 1),
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]),
        group=torch.zeros(4, dtype=torch.long),
    )
    p, q = math.log(7 / 3) / 2, math.log(4) / 2
    close(loss, torch.tensor([[p], [q], [q], [p]]))


def test_real_anchor_with_one_positive_and_one_negative_is_bce_and_bounded():
    logp, old, _, mask, _ = _batch(seed=18, b=3, g=2)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    group = torch.arange(3).repeat_interleave(2)
    v1, g1 = _grad(real, logp, old, torch.zeros(6), mask, rewards=rewards, group=group)
    v2, g2 = _grad(real, logp, old, torch.zeros(6), mask, rewards=rewards, group=group, loss="bce")
    close(v1, v2)
    close(g1, g2)
    # all-negative group: the positive term is 0, negatives still pushed down with weights in (0, 1)
    lp = _leaf(torch.tensor([[0.3], [-0.2], [0.1]]))
    loss = real(
        lp,
        torch.zeros(3, 1),
        torch.zeros(3),
        torch.ones(3, 1),
        rewards=torch.zeros(3),
        group=torch.zeros(3, dtype=torch.long),
    )
    loss.sum().backward()
    e = torch.exp(torch.tensor([0.3, -0.2, 0.1]))
    close(
        lp.grad[:, 0], e / (1 + e.sum())
    )  # share 1/3 on each of the 3 rows, summed: the softmax weight
    assert ((lp.grad > 0) & (lp.grad < 1)).all()


def test_real_ignores_adv_and_needs_rewards():
    logp, old, adv, mask, extra = _batch(seed=19)
    kw = {"rewards": extra["rewards"], "group": extra["group"]}
    close(real(logp, old, adv, mask, **kw), real(logp, old, adv * 0 + 3, mask, **kw))
    with pytest.raises(ValueError, match="rewards"):
        real(logp, old, adv, mask, group=extra["group"])
    with pytest.raises(ValueError, match="loss"):
        real(logp, old, adv, mask, loss="nope", **kw)


# ---------------------------------------------------------------- copg


def test_copg_hand_value():
    # G = 2, beta = .5, R = [1, 0], l = [.2, -.2]: u = [.9, .1], L_i = .8^2 / (4 * .5 * 1) = .32
    logp = torch.tensor([[0.2, 0.0], [-0.1, -0.1]])
    loss = copg(
        logp,
        torch.zeros(2, 2),
        torch.tensor([1.0, 0.0]),
        torch.ones(2, 2),
        ref_logp=torch.zeros(2, 2),
        group=torch.zeros(2, dtype=torch.long),
        reg_beta=0.5,
    )
    close(loss, torch.full((2, 2), 0.32))


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_copg_gradient_at_reference_is_rloo_reinforce(beta):
    logp, old, _, mask, extra = _batch(seed=20, b=2, g=4)
    rewards = torch.rand(2, 4, generator=torch.Generator().manual_seed(1))
    for adv in (rewards, ADVANTAGES["dr_grpo"](rewards)):  # only differences matter
        _, grad = _grad(
            copg, logp, old, adv.reshape(-1), mask, ref_logp=logp, group=extra["group"], reg_beta=beta
        )
        rloo = ADVANTAGES["rloo"](rewards).reshape(-1)
        close(grad, -rloo[:, None] * mask / 8)


def test_copg_optimal_policy_has_zero_loss_and_gradient():
    # beta * l_i = R_i + c  <=>  pi = pi_ref * exp(R / beta) / Z: every u_i is equal
    beta = 0.5
    r = torch.tensor([1.0, 0.0, 0.5])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    ref = torch.full((3, 2), -1.0)
    l_seq = (r - 0.3) / beta  # c = -.3
    lp = _leaf(ref + mask * (l_seq / mask.sum(-1))[:, None])  # l_seq spread over the counted tokens
    close(((lp - ref) * mask).sum(-1), l_seq)
    loss = copg(
        lp,
        torch.zeros(3, 2),
        r,
        mask,
        ref_logp=ref,
        group=torch.zeros(3, dtype=torch.long),
        reg_beta=beta,
    )
    close(loss, torch.zeros(3, 2))
    loss.sum().backward()
    close(lp.grad, torch.zeros(3, 2))


def test_copg_errors():
    logp, old, adv, mask, extra = _batch()
    with pytest.raises(ValueError, match="ref_logp"):
        copg(logp, old, adv, mask, group=extra["group"])
    with pytest.raises(ValueError, match="G >= 2"):
        copg(logp, old, adv, mask, ref_logp=extra["ref_logp"], group=torch.arange(6))
