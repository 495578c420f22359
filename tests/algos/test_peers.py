"""The peers' losses and estimators (issue 28), each checked against the formula as the peer's code
computes it: the peer's computation is transcribed below as plain tensor arithmetic (file and
function named in a comment), fed the same random inputs as rlvr's component, and compared to float
tolerance; then hand-computed values and the neutral settings."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, CREDIT, OBJECTIVES

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


# ---------------------------------------------------------------- XPO


def _trl_xpo(pi_w, pi_l, ref_w, ref_l, beta, alpha):
    # huggingface/trl trl/experimental/xpo/xpo_trainer.py XPOTrainer._compute_losses (loss_type
    # "sigmoid"), model_data = the winner, ref_data = the loser (chosen_mask all True): the *_sum
    # arguments are the rows' summed token log-probs
    model_logprobs_model_data_sum, model_logprobs_ref_data_sum = pi_w, pi_l
    ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum = ref_w, ref_l
    chosen_log_ratios = model_logprobs_model_data_sum - ref_logprobs_model_data_sum
    rejected_log_ratios = model_logprobs_ref_data_sum - ref_logprobs_ref_data_sum
    logits = chosen_log_ratios - rejected_log_ratios
    dpo_losses = -torch.nn.functional.logsigmoid(beta * logits)
    xpo_losses = alpha * model_logprobs_ref_data_sum
    return (dpo_losses + xpo_losses).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xpo_equals_trl(seed):
    logp, _, _, mask = _inputs(n=6, seed=seed)  # 2 groups of 3
    gen = torch.Generator().manual_seed(seed + 20)
    ref = -torch.rand(6, 5, generator=gen) * 3
    rewards = torch.randperm(6, generator=gen).float()  # distinct: one pair per group
    group = torch.arange(2).repeat_interleave(3)
    loss = OBJECTIVES["xpo"](
        logp,
        logp.detach(),
        torch.zeros(6),
        mask,
        ref_logp=ref,
        rewards=rewards,
        group=group,
        dpo_beta=0.2,
        xpo_alpha=0.05,
    )
    ours = seq_mean(loss, mask) * 3  # sum_g L_g / N, times G: the mean over pairs
    seq, seq_ref = (logp * mask).sum(-1).view(2, 3), (ref * mask).sum(-1).view(2, 3)
    w, lo, rows = rewards.view(2, 3).argmax(1), rewards.view(2, 3).argmin(1), torch.arange(2)
    theirs = _trl_xpo(seq[rows, w], seq[rows, lo], seq_ref[rows, w], seq_ref[rows, lo], 0.2, 0.05)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_xpo_hand_values_and_alpha_zero_is_online_dpo():
    # the online DPO example above (h = 0.2) plus alpha * l_l, l_l = -3.5 (row 2)
    logp = torch.tensor([[-1.0, -1.0], [-0.5, -1.0], [-2.0, -1.5]], requires_grad=True)
    ref = torch.full((3, 2), -1.0)
    mask = torch.ones(3, 2)
    kw = dict(
        ref_logp=ref, rewards=torch.tensor([0.2, 1.0, 0.0]), group=torch.zeros(3, dtype=torch.long)
    )
    loss = OBJECTIVES["xpo"](logp, logp.detach(), torch.zeros(3), mask, xpo_alpha=0.1, **kw)
    half = (math.log(1 + math.exp(-0.2)) + 0.1 * -3.5) / 2
    torch.testing.assert_close(loss, torch.tensor([[0.0, 0.0], [half, half], [half, half]]))
    logp, old, adv, mask = _inputs(n=6, seed=4)
    kw = dict(ref_logp=old, rewards=torch.arange(6.0), group=torch.arange(2).repeat_interleave(3))
    torch.testing.assert_close(
        OBJECTIVES["xpo"](logp, old, adv, mask, xpo_alpha=0.0, **kw),
        OBJECTIVES["online_dpo"](logp, old, adv, mask, **kw),
    )


# ---------------------------------------------------------------- DRO


def _verl_dro(logp, old, adv, mask, beta):
    # verl-project/verl verl/trainer/ppo/core_algos.py compute_policy_loss_dro, loss_agg_mode
    # "token-mean"
    advantages = adv.unsqueeze(1).expand_as(logp)
    log_ratio = logp - old
    pg_losses = -(logp * advantages - 0.5 * beta * log_ratio.square())
    return _masked_mean(pg_losses, mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dro_equals_verl(seed):
    logp, old, adv, mask = _inputs(seed=seed)
    ours = token_mean(OBJECTIVES["dro"](logp, old, adv, mask, dro_beta=0.3), mask)
    theirs = _verl_dro(logp, old, adv, mask, 0.3)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_dro_hand_values_and_on_policy_gradient():
    # logp = -0.5, old = -1: L = -(2 * -0.5 - 0.05 / 2 * 0.25) = 1.00625; A = 0: the penalty alone
    logp = torch.tensor([[-0.5]])
    old = torch.tensor([[-1.0]])
    torch.testing.assert_close(
        OBJECTIVES["dro"](logp, old, torch.tensor([2.0]), torch.ones(1, 1)), torch.tensor([[1.00625]])
    )
    torch.testing.assert_close(
        OBJECTIVES["dro"](logp, old, torch.tensor([0.0]), torch.ones(1, 1)), torch.tensor([[0.00625]])
    )
    logp, _, adv, mask = _inputs(seed=7)
    old = logp.detach().clone()
    g = _grad(token_mean(OBJECTIVES["dro"](logp, old, adv, mask), mask), logp)
    g_ref = _grad(token_mean(OBJECTIVES["reinforce"](logp, old, adv, mask), mask), logp)
    torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------- FIPO


def _swift_fipo(
    logp,
    old,
    adv,
    mask,
    eps_low=0.2,
    eps_high=0.28,
    delta=None,
    decay_rate=32.0,
    clip_range=0.2,
    clip_high_only=True,
    safety=4.0,
):
    # modelscope/ms-swift swift/rlhf_trainers/grpo_trainer.py GRPOTrainer._compute_fipo_influence and
    # the loss_type "fipo" branch of _compute_loss_and_metrics (importance_sampling_level "token"),
    # normalised by the completion tokens (its "fipo" aggregation)
    completion_mask = mask.bool()
    advantages = adv.unsqueeze(1)
    log_ratio = logp - old
    coef_1 = torch.exp(log_ratio)
    future_kl_delta = log_ratio.masked_fill(~completion_mask, 0.0)
    if delta is not None:
        future_kl_delta = torch.where(coef_1 > delta, torch.zeros_like(future_kl_delta), future_kl_delta)
    seq_len = future_kl_delta.shape[1]
    future_kl = torch.zeros_like(future_kl_delta)
    positions = torch.arange(seq_len).unsqueeze(1)
    gamma = torch.as_tensor(2 ** (-1 / decay_rate))
    chunk_positions = torch.arange(0, seq_len).unsqueeze(0)
    distance = chunk_positions - positions
    decay_block = torch.pow(gamma, distance.clamp(min=0)) * (distance >= 0).float()
    future_kl += torch.matmul(future_kl_delta, decay_block.t())
    future_kl = future_kl.masked_fill(~completion_mask, 0.0)
    influence_weight = torch.exp(future_kl)
    if clip_range:
        low = 1.0 if clip_high_only else 1 - clip_range
        influence_weight = torch.clamp(influence_weight, min=low, max=1 + clip_range)
    influence_weight = influence_weight.detach()
    if safety is not None:
        safety_mask = ~((advantages < 0) & (coef_1 > safety))
        influence_weight = torch.where(
            safety_mask, influence_weight, torch.clamp(influence_weight, min=0.8, max=1.0)
        )
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages) * influence_weight
    return (per_token_loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("knobs", [{}, {"delta": 1.5, "clip_high_only": False, "safety": 1.2}])
def test_fipo_equals_ms_swift(seed, knobs):
    logp, old, adv, mask = _inputs(seed=seed, spread=0.3)
    names = {
        "delta": "delta",
        "clip_high_only": "fipo_clip_high_only",
        "safety": "fipo_safety_threshold",
    }
    ours = token_mean(
        OBJECTIVES["fipo"](logp, old, adv, mask, **{names[k]: v for k, v in knobs.items()}), mask
    )
    theirs = _swift_fipo(logp, old, adv, mask, **knobs)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(_grad(ours, logp), _grad(theirs, logp))


def test_fipo_hand_values_and_on_policy_is_ppo():
    # decay_rate 1: gamma = 1/2; log ratios 0.1 then 0.0: F = (0.1, 0) -> f = (min(e^0.1, 1.2), 1)
    logp = torch.tensor([[-0.9, -1.0]])
    old = torch.tensor([[-1.0, -1.0]])
    loss = OBJECTIVES["fipo"](logp, old, torch.tensor([1.0]), torch.ones(1, 2), fipo_decay_rate=1.0)
    r = math.exp(0.1)
    torch.testing.assert_close(loss, torch.tensor([[-r * r, -1.0]]))
    # log ratios 0 then 0.2: F = (0.1, 0.2), f = (e^0.1, 1.2); token 1 is inside the PPO clip (1.28)
    logp = torch.tensor([[-1.0, -0.8]])
    loss = OBJECTIVES["fipo"](logp, old, torch.tensor([1.0]), torch.ones(1, 2), fipo_decay_rate=1.0)
    want = torch.tensor([[-math.exp(0.1), -min(math.exp(0.2), 1.28) * min(math.exp(0.2), 1.2)]])
    torch.testing.assert_close(loss, want)
    logp, _, adv, mask = _inputs(seed=8)
    old = logp.detach().clone()
    g = _grad(token_mean(OBJECTIVES["fipo"](logp, old, adv, mask), mask), logp)
    g_ref = _grad(token_mean(OBJECTIVES["ppo_clip"](logp, old, adv, mask), mask), logp)
    torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------- M2PO


def _areal_m2po_mask(old_logp, prox_logp, loss_mask, m2_threshold):
    # inclusionAI/AReaL areal/trainer/ppo/actor.py _apply_m2po_masking and _get_m2po_loss_mask
    delta = old_logp - prox_logp
    m2 = delta * delta
    mask_flat = loss_mask.view(-1)
    m2_selected = m2.view(-1)[mask_flat]
    sorted_m2, indices = torch.sort(m2_selected, descending=True)
    restored_indices = torch.argsort(indices)
    n = sorted_m2.numel()
    suffix_sums = sorted_m2.flip(0).cumsum(0).flip(0)
    counts = torch.arange(n, 0, -1, dtype=sorted_m2.dtype)
    below = torch.where(suffix_sums / counts < m2_threshold)[0]
    num_to_mask = below[0].item() if len(below) > 0 else n - 1
    sorted_mask = torch.ones_like(sorted_m2, dtype=torch.bool)
    if num_to_mask > 0:
        sorted_mask[:num_to_mask] = False
    full = torch.zeros_like(mask_flat, dtype=torch.bool)
    full[mask_flat] = sorted_mask[restored_indices]
    return full.view_as(loss_mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.04, 0.2, 1e-6])
def test_m2po_equals_areal(seed, threshold):
    from rlvr.algos.weights import IS_CORRECTIONS

    prox, behav, mask = _stale(seed)
    keep = _areal_m2po_mask(behav, prox, mask.bool(), threshold)
    ratio = torch.exp(prox - behav)
    # AReaL's example: rejection_sampling metric "ratio", upper 5, action "mask"
    theirs = ratio * keep * (ratio <= 5.0)
    ours = IS_CORRECTIONS["m2po"](prox, behav, mask, cap=5.0, m2_threshold=threshold)
    torch.testing.assert_close(ours, theirs * mask)


def test_m2po_hand_values_and_synchronous_is_neutral():
    from rlvr.algos.weights import IS_CORRECTIONS

    # squared log ratios 0.25, 0.01, 0.0 (and a padded token): mean 0.0867 >= 0.04; without the
    # largest, 0.005 < 0.04: only the first token is dropped
    behav = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    prox = behav + torch.tensor([[0.5, 0.1], [0.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    stats: dict = {}
    w = IS_CORRECTIONS["m2po"](prox, behav, mask, cap=5.0, stats=stats)
    torch.testing.assert_close(w, torch.tensor([[0.0, math.exp(0.1)], [1.0, 0.0]]))
    assert stats["m2po_masked_frac"] == pytest.approx(1 / 3)
    # every token far off: all but one dropped (the smallest square kept)
    w = IS_CORRECTIONS["m2po"](behav + 1.0, behav, torch.ones(2, 2), cap=5.0)
    assert int((w > 0).sum()) == 1
    prox, _, mask = _stale(4)
    assert torch.equal(IS_CORRECTIONS["m2po"](prox, prox, mask), mask)


# ---------------------------------------------------------------- ReMax, RAFT++


def _verl_remax(token_level_rewards, reward_baselines, response_mask):
    # volcengine/verl verl/trainer/ppo/core_algos.py compute_remax_outcome_advantage
    returns = (token_level_rewards * response_mask).flip(dims=[-1]).cumsum(dim=-1).flip(dims=[-1])
    return returns - reward_baselines.unsqueeze(-1) * response_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remax_equals_verl(seed):
    r = _rewards(seed=seed, binary=False)  # [4, 4]
    greedy = torch.rand(4, generator=torch.Generator().manual_seed(seed + 30))  # [B]
    gen = torch.Generator().manual_seed(seed + 40)
    lengths = torch.randint(1, 7, (16,), generator=gen)
    mask = (torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [N, T]
    token_rewards = torch.zeros(16, 6)
    token_rewards[torch.arange(16), lengths - 1] = r.reshape(-1)  # the outcome on the last token
    theirs = _verl_remax(token_rewards, greedy.repeat_interleave(4), mask)
    ours = ADVANTAGES["remax"](r, greedy_rewards=greedy.repeat_interleave(4).view(4, 4))
    torch.testing.assert_close(ours.reshape(-1, 1) * mask, theirs)


def test_remax_and_raft_hand_values():
    r = torch.tensor([[1.0, 0.0, 1.1], [0.0, 0.0, 0.1]])
    greedy = torch.tensor([[1.0] * 3, [0.0] * 3])
    want = torch.tensor([[0.0, -1.0, 0.1], [0.0, 0.0, 0.1]])
    torch.testing.assert_close(ADVANTAGES["remax"](r, greedy_rewards=greedy), want)
    with pytest.raises(ValueError, match="greedy_rewards"):
        ADVANTAGES["remax"](r)
    want = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(ADVANTAGES["raft"](r), want)
    torch.testing.assert_close(ADVANTAGES["raft"](r, accept_reward=0.1), (r >= 0.1).float())
    assert ADVANTAGES.needs("remax") == {"greedy_rewards"}
    for name in ("dro", "fipo"):
        assert OBJECTIVES.needs(name) == frozenset()
        OBJECTIVES.check_knobs(name, OBJECTIVES.knobs(name))
    assert OBJECTIVES.needs("xpo") == {"ref_logp", "rewards", "group"}


# ---------------------------------------------------------------- OTB (optimal token baseline)


def _verl_otb(token_level_rewards, response_mask, index, old_log_probs, sum_pi_squared, zero_tail):
    # volcengine/verl verl/trainer/ppo/core_algos.py compute_optimal_token_baseline_advantage
    # (rollout_is_weights=None, epsilon=1e-8)
    returns = (token_level_rewards * response_mask).flip(dims=[-1]).cumsum(dim=-1).flip(dims=[-1])
    w = 1 - 2 * torch.exp(old_log_probs) + sum_pi_squared
    w_cum = (w * response_mask).cumsum(dim=-1)
    groups: dict[int, list] = {}
    for i in range(token_level_rewards.shape[0]):
        groups.setdefault(int(index[i]), []).append(i)
    baselines = torch.zeros_like(returns)
    for rows in groups.values():
        if len(rows) == 1:
            continue
        r, wc, m = returns[rows], w_cum[rows], response_mask[rows]
        b = (r * wc * m).sum(0) / ((wc * m).sum(0) + 1e-8)
        baselines[rows] = b.unsqueeze(0).expand(len(rows), -1)
        if zero_tail:
            lengths = m.sum(-1)
            ordered = torch.sort(lengths).values
            top, second = int(ordered[-1]), int(ordered[-2])
            longest = (lengths == top).nonzero(as_tuple=True)[0]
            if longest.numel() == 1 and top > second:
                baselines[rows[int(longest[0])], second:] = 0.0
    return (returns - baselines) * response_mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("zero_tail", [True, False])
def test_optimal_token_baseline_equals_verl(seed, zero_tail):
    b, g, t, v = 4, 4, 7, 8
    n = b * g
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(b, g, generator=gen) if seed % 2 else (torch.rand(b, g, generator=gen) > 0.5).float()
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    lengths[g : 2 * g] = torch.tensor([t, 3, t, 2])  # a group whose longest row is not unique
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()  # [N, T]
    probs = torch.softmax(3 * torch.randn(n, t, v, generator=gen), -1)  # [N, T, V]
    tok = torch.multinomial(probs.view(-1, v), 1, generator=gen).view(n, t)  # [N, T]
    old = probs.gather(-1, tok.unsqueeze(-1)).squeeze(-1).log()  # [N, T]
    s2 = probs.pow(2).sum(-1)  # [N, T]
    token_rewards = torch.zeros(n, t)
    token_rewards[torch.arange(n), lengths - 1] = r.reshape(-1)  # the outcome on the last token
    theirs = _verl_otb(token_rewards, mask, torch.arange(b).repeat_interleave(g), old, s2, zero_tail)
    ours = CREDIT["optimal_token_baseline"](
        r, mask, old_logp=old, sum_pi_sq=s2, handle_zero_tail=zero_tail
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
