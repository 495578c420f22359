"""The peers' losses and estimators (issue 28), each checked against the formula as the peer's code
computes it: the peer's computation is transcribed below as plain tensor arithmetic (file and
function named in a comment), fed the same random inputs as rlvr's component, and compared to float
tolerance; then hand-computed values and the neutral settings."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, OBJECTIVES

token_mean = AGGREGATIONS["token_mean"]
seq_mean = AGGREGATIONS["seq_mean_token_mean"]


def _inputs(n=6, t=5, seed=0, spread=0.5):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=gen) * 3 - 0.05  # [N, T] log-probs in (-3.05, -0.05)
    logp = (old + spread * torch.randn(n, t, generator=gen)).clamp(max=-1e-3)  # [N, T]
    adv = torch.randn(n, generator=gen)  # [N]
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [N, T]
    return logp.requires_grad_(True), old, adv, mask


def _masked_mean(x, m, dim=None):
    return (x * m).sum() / m.sum() if dim is None else (x * m).sum(dim) / m.sum(dim)


def _verl_seq_mean_token_mean(loss_mat, mask):
    # verl/trainer/ppo/core_algos.py agg_loss(loss_agg_mode="seq-mean-token-mean")
    seq_losses = (loss_mat * mask).sum(-1) / (mask.sum(-1) + 1e-8)
    return seq_losses.sum() / (mask.sum(-1) > 0).float().sum()


def _grad(loss, x):
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    return g


# ---------------------------------------------------------------- SAPO


def _trl_sapo(logp, old, adv, mask, tau_pos, tau_neg):
    # huggingface/trl trl/trainer/grpo_trainer.py GRPOTrainer._compute_loss, loss_type == "sapo"
    # (importance_sampling_level="token"), then its "grpo"/"sapo" aggregation
    advantages = adv.unsqueeze(1)
    coef_1 = torch.exp(logp - old)
    temperatures = torch.where(advantages > 0, tau_pos, tau_neg)
    soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
    per_token_loss = -soft_coef_1 * advantages
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _verl_sapo(logp, old, adv, mask, tau_pos, tau_neg):
    # volcengine/verl verl/trainer/ppo/core_algos.py compute_policy_loss_sapo
    advantages = adv.unsqueeze(1).expand_as(logp)
    ratio = torch.exp(torch.clamp(logp - old, min=-20.0, max=20.0))
    taus = torch.where(advantages > 0, torch.tensor(tau_pos), torch.tensor(tau_neg))
    gates = torch.sigmoid(taus * (ratio - 1.0)) * (4.0 / taus)
    return _verl_seq_mean_token_mean(-gates * advantages, mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sapo_equals_trl_and_verl(seed):
    logp, old, adv, mask = _inputs(seed=seed)
    ours = seq_mean(OBJECTIVES["sapo"](logp, old, adv, mask, tau_pos=1.0, tau_neg=1.05), mask)
    for peer in (_trl_sapo, _verl_sapo):
        theirs = peer(logp, old, adv, mask, 1.0, 1.05)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_sapo_hand_values_and_on_policy_gradient():
    # rho = e^{0.5}, A = 2, tau_pos = 1: L = -2 * 4 * sigmoid(e^0.5 - 1)
    logp = torch.tensor([[-0.5, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss = OBJECTIVES["sapo"](logp, old, torch.tensor([2.0]), mask, tau_pos=1.0)
    want0 = -2 * 4 * (1 / (1 + math.exp(-(math.exp(0.5) - 1))))
    torch.testing.assert_close(loss, torch.tensor([[want0, -2 * 4 * 0.5]]))
    # ratio = 1: the gradient is REINFORCE's, whatever the temperatures
    logp, _, adv, mask = _inputs(seed=3)
    old = logp.detach().clone()
    g = _grad(token_mean(OBJECTIVES["sapo"](logp, old, adv, mask, tau_pos=3.0, tau_neg=0.5), mask), logp)
    g_ref = _grad(token_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask), logp)
    torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------- GMPO / geo_mean


def _verl_geo_mean(logp, old, adv, mask, clip_low, clip_high):
    # volcengine/verl verl/trainer/ppo/core_algos.py compute_policy_loss_geo_mean
    advantages = adv.unsqueeze(1) * mask
    negative_approx_kl = logp - old
    sgn_advantage = torch.sign(advantages)
    negative_approx_kl_clamp = torch.clamp(negative_approx_kl, -clip_low, clip_high)
    negative_approx_kl_min = torch.min(
        sgn_advantage * negative_approx_kl, sgn_advantage * negative_approx_kl_clamp
    )
    negative_approx_kl_min = sgn_advantage * negative_approx_kl_min
    response_mask_sum = mask.sum(dim=-1)
    ratio = torch.exp((negative_approx_kl_min * mask).sum(dim=-1) / (response_mask_sum + 1e-8))
    advantage = (advantages * mask).sum(dim=-1) / (response_mask_sum + 1e-8)
    return torch.mean(-advantage * ratio)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clip", [0.4, 0.1])
def test_gmpo_equals_verl_geo_mean(seed, clip):
    logp, old, adv, mask = _inputs(seed=seed)
    ours = seq_mean(OBJECTIVES["gmpo"](logp, old, adv, mask, clip_low=clip, clip_high=clip), mask)
    theirs = _verl_geo_mean(logp, old, adv, mask, clip, clip)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_gmpo_hand_values_and_on_policy_gradient():
    # two tokens, log ratios 0.1 and 0.5, A = 1, clip 0.4: the second clipped to 0.4 (A > 0 side)
    logp = torch.tensor([[-0.9, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0]])
    loss = OBJECTIVES["gmpo"](logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    torch.testing.assert_close(loss, torch.full((1, 2), -math.exp(0.25)))
    # A < 0: the pessimistic side keeps the large ratio, -(-1) * exp(mean(0.1, 0.5))
    loss = OBJECTIVES["gmpo"](logp, old, torch.tensor([-1.0]), torch.ones(1, 2))
    torch.testing.assert_close(loss, torch.full((1, 2), math.exp(0.3)))
    # on-policy: the gradient of seq_mean_token_mean is REINFORCE's under seq_mean_token_mean
    logp, _, adv, mask = _inputs(seed=4)
    old = logp.detach().clone()
    g = _grad(seq_mean(OBJECTIVES["gmpo"](logp, old, adv, mask), mask), logp)
    g_ref = _grad(seq_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask), logp)
    torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------- DPPO


def _verl_dppo(logp, old, adv, mask, divergence, clip_low, clip_high, clip_ratio_c=20.0):
    # verl/trainer/ppo/core_algos.py compute_policy_loss_dppo_tv / compute_policy_loss_dppo_kl
    # (loss_agg_mode="token-mean")
    advantages = adv.unsqueeze(1).expand_as(logp)
    ratio = torch.exp(torch.clamp(logp - old, min=-20.0, max=20.0))
    truncated_ratio = torch.clamp(ratio, max=clip_ratio_c).detach()
    prob, old_prob = torch.exp(logp), torch.exp(old)
    if divergence == "tv":
        valid_positive_mask = (prob - old_prob) <= clip_high
        valid_negative_mask = (prob - old_prob) >= -clip_low
    else:
        binary_kl = old_prob * (old - logp) + (1 - old_prob) * torch.log(
            (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8)
        )
        valid_positive_mask = (binary_kl <= clip_high) | (prob <= old_prob)
        valid_negative_mask = (binary_kl <= clip_low) | (prob >= old_prob)
    valid_mask = torch.where(advantages > 0, valid_positive_mask, valid_negative_mask).detach().float()
    pg_losses = -advantages * truncated_ratio * logp * valid_mask
    return _masked_mean(pg_losses, mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("divergence,clip", [("tv", 0.15), ("kl", 0.05), ("tv", 0.05)])
def test_dppo_equals_verl(seed, divergence, clip):
    logp, old, adv, mask = _inputs(seed=seed, spread=1.0)
    loss = OBJECTIVES["dppo"](logp, old, adv, mask, divergence=divergence, clip_low=clip, clip_high=clip)
    ours = token_mean(loss, mask)
    theirs = _verl_dppo(logp, old, adv, mask, divergence, clip, clip)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))
    stats: dict = {}
    OBJECTIVES["dppo"](logp, old, adv, mask, divergence=divergence, stats=stats)
    assert 0 <= stats["clip_frac"] <= 1


def test_dppo_masks_only_past_the_bound_and_is_reinforce_on_policy():
    # p: 0.5 -> 0.7 (+0.2 > 0.15): dropped for A > 0, kept for A < 0; p: 0.5 -> 0.6 kept both ways
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.7, 0.6]])).requires_grad_(True)
    mask = torch.ones(1, 2)
    pos = OBJECTIVES["dppo"](logp, old, torch.tensor([1.0]), mask)
    torch.testing.assert_close(pos.detach(), torch.tensor([[0.0, -1.2 * math.log(0.6)]]))
    neg = OBJECTIVES["dppo"](logp, old, torch.tensor([-1.0]), mask)
    torch.testing.assert_close(neg.detach(), torch.tensor([[1.4 * math.log(0.7), 1.2 * math.log(0.6)]]))
    logp, _, adv, mask = _inputs(seed=5)
    old = logp.detach().clone()
    for div in ("tv", "kl"):
        g = _grad(token_mean(OBJECTIVES["dppo"](logp, old, adv, mask, divergence=div), mask), logp)
        g_ref = _grad(token_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask), logp)
        torch.testing.assert_close(g, g_ref)
    with pytest.raises(ValueError, match="divergence"):
        OBJECTIVES["dppo"](logp, old, adv, mask, divergence="js")


# ---------------------------------------------------------------- GPG


def _verl_gpg(scores, index, f_norm=1.0):
    # verl/trainer/ppo/core_algos.py compute_gpg_outcome_advantage (the loop over groups, as a loop)
    scores = scores.clone()
    bsz = scores.shape[0]
    alpha = bsz / torch.count_nonzero(scores).clamp(min=1)
    groups: dict[int, list] = {}
    for i in range(bsz):
        groups.setdefault(int(index[i]), []).append(scores[i])
    mean = {k: torch.mean(torch.stack(v)) for k, v in groups.items()}
    for i in range(bsz):
        scores[i] = alpha * (scores[i] - mean[int(index[i])]) / f_norm
    return scores


def _verl_gpg_loss(logp, adv, mask):
    # verl/trainer/ppo/core_algos.py compute_policy_loss_gpg, token-mean
    return _masked_mean(-logp * adv.unsqueeze(1), mask)


def _rewards(b=4, g=4, seed=0, binary=True):
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(b, g, generator=gen)
    return (r > 0.6).float() if binary else r


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gpg_equals_verl(seed):
    r = _rewards(seed=seed)
    index = torch.arange(4).repeat_interleave(4)
    torch.testing.assert_close(
        ADVANTAGES["gpg"](r, f_norm=2.0).reshape(-1), _verl_gpg(r.reshape(-1), index, 2.0)
    )
    logp, old, adv, mask = _inputs(seed=seed)
    ours = token_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask)
    torch.testing.assert_close(ours, _verl_gpg_loss(logp, adv, mask))


def test_gpg_hand_values():
    # 2 non-zero rewards of 8: alpha = 4; group means 0.5 and 0
    r = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(ADVANTAGES["gpg"](r), torch.tensor([[2.0, -2.0, 2.0, -2.0], [0.0] * 4]))
    r = torch.tensor([[1.0, 2.0], [3.0, 5.0]])  # every reward non-zero: dr_grpo
    torch.testing.assert_close(ADVANTAGES["gpg"](r), ADVANTAGES["dr_grpo"](r))


# ---------------------------------------------------------------- REINFORCE++-baseline


def _verl_rpp_baseline(scores, index, response_mask):
    # verl/trainer/ppo/core_algos.py compute_reinforce_plus_plus_baseline_outcome_advantage with
    # verl/utils/torch_functional.py masked_whiten (masked_var unbiased, rsqrt(var + 1e-8))
    scores = scores.clone()
    groups: dict[int, list] = {}
    for i in range(scores.shape[0]):
        groups.setdefault(int(index[i]), []).append(scores[i])
    mean = {k: torch.mean(torch.stack(v)) for k, v in groups.items()}
    for i in range(scores.shape[0]):
        scores[i] = scores[i] - mean[int(index[i])]
    values = scores.unsqueeze(-1).tile([1, response_mask.shape[1]]) * response_mask
    m = (values * response_mask).sum() / response_mask.sum()
    centred = values - m
    var = (centred**2 * response_mask).sum() / response_mask.sum()
    var = var * response_mask.sum() / (response_mask.sum() - 1)
    return (values - m) * torch.rsqrt(var + 1e-8) * response_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_pp_baseline_equals_verl(seed):
    r = _rewards(seed=seed, binary=False)  # continuous: no constant group
    gen = torch.Generator().manual_seed(seed + 10)
    lengths = torch.randint(1, 9, (4, 4), generator=gen)
    mask = (torch.arange(8).unsqueeze(0) < lengths.reshape(-1, 1)).float()  # [N, T]
    theirs = _verl_rpp_baseline(r.reshape(-1), torch.arange(4).repeat_interleave(4), mask)
    ours = ADVANTAGES["reinforce_pp_baseline"](r, lengths=lengths.float(), eps=0.0)
    torch.testing.assert_close(ours.reshape(-1, 1) * mask, theirs, rtol=1e-5, atol=1e-5)


def test_reinforce_pp_baseline_equal_lengths_is_reinforce_pp_and_constant_groups_zero():
    r = _rewards(seed=3, binary=False)
    ours = ADVANTAGES["reinforce_pp_baseline"](r, lengths=torch.full((4, 4), 7.0))
    # the unbiased variance over 112 tokens is 7 S / 111, over 16 sequences S / 15
    scale = math.sqrt(111 / (7 * 15))
    torch.testing.assert_close(ours, ADVANTAGES["reinforce_pp"](r) * scale, rtol=1e-5, atol=1e-6)
    r = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = ADVANTAGES["reinforce_pp_baseline"](r, lengths=torch.tensor([[3.0, 5.0], [2.0, 4.0]]))
    assert torch.equal(out[0], torch.zeros(2))


# ---------------------------------------------------------------- OPO


def _verl_opo(scores, index, response_length):
    # verl/trainer/ppo/core_algos.py compute_opo_outcome_advantage
    scores = scores.clone()
    groups: dict[int, list] = {}
    for i in range(scores.shape[0]):
        groups.setdefault(int(index[i]), []).append(i)
    for rows in groups.values():
        s, ln = scores[rows], response_length[rows]
        scores[rows] = s - (ln * s).sum() / ln.sum()
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_opo_equals_verl(seed):
    r = _rewards(seed=seed, binary=False)
    lengths = torch.randint(1, 20, (4, 4), generator=torch.Generator().manual_seed(seed)).float()
    theirs = _verl_opo(r.reshape(-1), torch.arange(4).repeat_interleave(4), lengths.reshape(-1))
    torch.testing.assert_close(ADVANTAGES["opo"](r, lengths=lengths).reshape(-1), theirs)


def test_opo_hand_values():
    # lengths 1 and 3, rewards 1 and 0: b = 1/4
    out = ADVANTAGES["opo"](torch.tensor([[1.0, 0.0]]), lengths=torch.tensor([[1.0, 3.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.75, -0.25]]))
    r = _rewards(seed=4, binary=False)
    torch.testing.assert_close(
        ADVANTAGES["opo"](r, lengths=torch.full((4, 4), 5.0)), ADVANTAGES["dr_grpo"](r)
    )
    out = ADVANTAGES["opo"](torch.tensor([[1.0, 0.0]]), lengths=torch.zeros(1, 2))  # plain mean
    torch.testing.assert_close(out, torch.tensor([[0.5, -0.5]]))


# ---------------------------------------------------------------- MaxRL


def test_maxrl_hand_values():
    # success rate 1/4: successes (1 - p) / p = 3, failures -1; an all-fail group 0
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    want = torch.tensor([[3.0, -1.0, -1.0, -1.0], [0.0] * 4, [1 / 3, 1 / 3, 1 / 3, -1.0]])
    torch.testing.assert_close(ADVANTAGES["maxrl"](r, eps=0.0), want)
    assert torch.equal(ADVANTAGES["maxrl"](torch.full((1, 4), 0.7)), torch.zeros(1, 4))


# ---------------------------------------------------------------- registry


def test_registered_with_needs_and_bounds():
    assert ADVANTAGES.needs("opo") == {"lengths"}
    assert ADVANTAGES.needs("reinforce_pp_baseline") == {"lengths"}
    for name in ("gpg", "maxrl"):
        assert ADVANTAGES.needs(name) == frozenset()
    for name in ("sapo", "gmpo", "dppo", "vespo", "topr"):
        assert OBJECTIVES.needs(name) == frozenset()
        OBJECTIVES.check_knobs(name, OBJECTIVES.knobs(name))
    from rlvr.registry import KnobError

    for name, knobs in [
        ("sapo", {"tau_pos": 0.0}),
        ("dppo", {"divergence": "js"}),
        ("gmpo", {"clip_low": -1.0}),
    ]:
        with pytest.raises(KnobError):
            OBJECTIVES.check_knobs(name, knobs)


# ---------------------------------------------------------------- IS corrections of stale rollouts


def _trl_vllm_is(old, sampling, mask, mode, clip_min, clip_max):
    # huggingface/trl trl/trainer/grpo_trainer.py GRPOTrainer._generate_and_score_completions, the
    # vllm_importance_sampling_ratio block (old_per_token_logps = pi_prox, sampling = behaviour)
    per_token_logps_diff = (old - sampling) * mask
    if mode in ["sequence_mask", "sequence_truncate"]:
        logps_diff = per_token_logps_diff.sum(dim=-1, keepdim=True)
    else:
        logps_diff = per_token_logps_diff
    ratio = torch.exp(logps_diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        ratio = torch.clamp(ratio, min=clip_min, max=clip_max)
    else:
        min_val = clip_min if clip_min is not None else -math.inf
        max_val = clip_max if clip_max is not None else math.inf
        ratio = ratio.masked_fill((ratio < min_val) | (ratio > max_val), value=0.0)
    return ratio  # [N, T] or [N, 1], multiplies per_token_loss


def _openrlhf_seq_mask_tis(old, rollout, mask, low, high):
    # OpenRLHF openrlhf/models/loss.py PolicyLoss.forward, vllm_is_correction_type == "seq-mask-tis"
    log_ratio = old - rollout
    seq_is = torch.exp((log_ratio * mask).sum(-1) / mask.sum(-1))
    seq_mask = (seq_is >= low) & (seq_is <= high)
    return seq_mask.unsqueeze(-1) * torch.exp(log_ratio)


def _stale(seed):
    gen = torch.Generator().manual_seed(seed)
    behav = -torch.rand(6, 5, generator=gen) * 3
    prox = behav + 0.4 * torch.randn(6, 5, generator=gen)
    mask = (torch.rand(6, 5, generator=gen) > 0.2).float()
    mask[:, 0] = 1.0
    return prox, behav, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("low", [None, 0.5])
def test_is_modes_equal_trl(seed, mode, low):
    from rlvr.algos.weights import IS_CORRECTIONS

    prox, behav, mask = _stale(seed)
    ours = IS_CORRECTIONS[mode](prox, behav, mask, cap=1.5, low=low)
    theirs = _trl_vllm_is(prox, behav, mask, mode, low, 1.5).expand_as(prox) * mask
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seq_mask_tis_equals_openrlhf_and_icepop_is_token_mask(seed):
    from rlvr.algos.weights import IS_CORRECTIONS

    prox, behav, mask = _stale(seed)
    ours = IS_CORRECTIONS["seq_mask_tis"](prox, behav, mask, cap=1.2, low=0.9)
    torch.testing.assert_close(ours, _openrlhf_seq_mask_tis(prox, behav, mask, 0.9, 1.2) * mask)
    # OpenRLHF "icepop": vllm_is * ((vllm_is >= low) & (vllm_is <= high))
    ratio = torch.exp(prox - behav)
    icepop = ratio * ((ratio >= 0.5) & (ratio <= 1.3)) * mask
    torch.testing.assert_close(IS_CORRECTIONS["token_mask"](prox, behav, mask, cap=1.3, low=0.5), icepop)


def test_is_modes_hand_values_and_on_policy():
    from rlvr.algos.weights import IS_CORRECTIONS

    # ratios 3 and 1/3 in one row (product 1, geometric mean 1), 2 and 2 in the other (product 4)
    prox = torch.log(torch.tensor([[0.6, 0.1], [0.4, 0.2]]))
    behav = torch.log(torch.tensor([[0.2, 0.3], [0.2, 0.1]]))
    mask = torch.ones(2, 2)
    w = {m: IS_CORRECTIONS[m](prox, behav, mask, cap=2.5, low=0.5) for m in IS_CORRECTIONS.names()}
    torch.testing.assert_close(w["token_truncate"], torch.tensor([[2.5, 0.5], [2.0, 2.0]]))
    torch.testing.assert_close(w["token_mask"], torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    torch.testing.assert_close(w["sequence_truncate"], torch.tensor([[1.0, 1.0], [2.5, 2.5]]))
    torch.testing.assert_close(w["sequence_mask"], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(w["seq_mask_tis"], torch.tensor([[3.0, 1 / 3], [2.0, 2.0]]))
    stats: dict = {}
    IS_CORRECTIONS["token_mask"](prox, behav, mask, cap=2.5, low=0.5, stats=stats)
    assert stats["is_truncated_frac"] == pytest.approx(0.5)
    prox, _, mask = _stale(3)
    for m in IS_CORRECTIONS.names():
        assert torch.allclose(IS_CORRECTIONS[m](prox, prox, mask, cap=1.0), mask)
        with pytest.raises(ValueError, match="must be"):
            IS_CORRECTIONS[m](prox, prox, mask, cap=2.0, low=1.5)


# ---------------------------------------------------------------- VESPO, TOPR


def _trl_vespo(logp, old, adv, mask, k_pos=2.0, lambda_pos=3.0, k_neg=3.0, lambda_neg=2.0):
    # huggingface/trl trl/trainer/grpo_trainer.py GRPOTrainer.get_gamma_weights and _compute_loss
    # (loss_type == "vespo", no vLLM ratio), then the "vespo" token-level normalisation
    advantages = adv.unsqueeze(1)
    with torch.no_grad():
        lower_clamp = math.log(1e-8)
        log_ratio_clamped = torch.clamp(logp - old, -20.0, 20.0)
        seq_log_ratio = torch.sum(log_ratio_clamped * mask, dim=-1, keepdim=True)
        log_w_seq = torch.clamp(seq_log_ratio, lower_clamp, 20.0)
        w_seq = torch.exp(log_w_seq)
        is_nonneg_adv = advantages >= 0
        k_seq = torch.where(is_nonneg_adv, k_pos, k_neg)
        lambda_seq = torch.where(is_nonneg_adv, lambda_pos, lambda_neg).clamp(min=1e-4)
        log_phi = lambda_seq + k_seq * log_w_seq - lambda_seq * w_seq
        phi_seq = torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    per_token_loss = -phi_seq * advantages * logp
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vespo_equals_trl(seed):
    logp, old, adv, mask = _inputs(seed=seed, spread=0.2)
    ours = token_mean(OBJECTIVES["vespo"](logp, old, adv, mask), mask)
    theirs = _trl_vespo(logp, old, adv, mask)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_vespo_and_topr_hand_values_and_on_policy():
    # one row, log ratio sum log 2: phi = exp(3 + 2 log 2 - 3 * 2) = 4 e^-3 for A >= 0
    logp = torch.tensor([[-0.5, -1.0 + math.log(2.0)]], requires_grad=True)
    old = torch.tensor([[-0.5, -1.0]])
    loss = OBJECTIVES["vespo"](logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    torch.testing.assert_close(loss.detach(), -4 * math.exp(-3) * logp.detach())
    # topr: A > 0 weight 1 whatever the ratio; A < 0 weight min(rho, 1) = 1 and 0.5
    logp = torch.log(torch.tensor([[0.8, 0.1]]))
    old = torch.log(torch.tensor([[0.4, 0.2]]))
    pos = OBJECTIVES["topr"](logp, old, torch.tensor([2.0]), torch.ones(1, 2))
    torch.testing.assert_close(pos, -2.0 * logp)
    neg = OBJECTIVES["topr"](logp, old, torch.tensor([-2.0]), torch.ones(1, 2))
    torch.testing.assert_close(neg, 2.0 * logp * torch.tensor([[1.0, 0.5]]))
    logp, _, adv, mask = _inputs(seed=6)
    old = logp.detach().clone()
    g_ref = _grad(token_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask), logp)
    for name in ("vespo", "topr"):
        g = _grad(token_mean(OBJECTIVES[name](logp, old, adv, mask), mask), logp)
        torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------- online DPO


def test_online_dpo_hand_values_and_reference_gradient():
    # one group of 3: rewards 0.2, 1.0, 0.0 -> winner row 1, loser row 2; sequence log ratios to the
    # reference 0.5 (row 1) and -1.5 (row 2): h = 0.1 * 2 = 0.2
    logp = torch.tensor([[-1.0, -1.0], [-0.5, -1.0], [-2.0, -1.5]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]])
    mask = torch.ones(3, 2)
    rewards = torch.tensor([0.2, 1.0, 0.0])
    group = torch.zeros(3, dtype=torch.long)
    loss = OBJECTIVES["online_dpo"](
        logp, logp.detach(), torch.zeros(3), mask, ref_logp=ref, rewards=rewards, group=group
    )
    half = math.log(1 + math.exp(-0.2)) / 2
    torch.testing.assert_close(loss, torch.tensor([[0.0, 0.0], [half, half], [half, half]]))
    # at pi = pi_ref: gradient -beta/2 * (grad l_w - grad l_l) of the group's sum, per token
    ref = logp.detach().clone()
    total = (
        seq_mean(
            OBJECTIVES["online_dpo"](
                logp, ref, torch.zeros(3), mask, ref_logp=ref, rewards=rewards, group=group
            ),
            mask,
        )
        * 3
    )
    g = _grad(total, logp)
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0], [-0.05, -0.05], [0.05, 0.05]]))
    # a group of equal rewards makes no pair
    out = OBJECTIVES["online_dpo"](
        logp, ref, torch.zeros(3), mask, ref_logp=ref, rewards=torch.ones(3), group=group
    )
    assert torch.equal(out, torch.zeros(3, 2))
