"""Outcome-level estimators of the catalogue: hand values, neutral settings, invariants, loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlvr.algos import ADVANTAGES
from rlvr.algos.advantages import (
    ace,
    bnpo,
    calibrl,
    dgpo,
    dr_grpo,
    gdpo,
    grpo,
    nsr_psr,
    passk,
    reinforce_pp,
)

close = torch.testing.assert_close

NEW = {
    "reinforce_pp": reinforce_pp,
    "bnpo": bnpo,
    "gdpo": gdpo,
    "dgpo": dgpo,
    "ace": ace,
    "nsr_psr": nsr_psr,
    "calibrl": calibrl,
    "passk": passk,
}

# binary rewards, G = 4: success rates .25, .5, .75
BIN = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])


def _rand_binary(b: int, g: int, seed: int) -> torch.Tensor:
    return (torch.rand(b, g, generator=torch.Generator().manual_seed(seed)) < 0.5).float()


def _inputs(name: str, r: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The needed inputs of an estimator, made up for rewards r [B, G] (one component for gdpo); for
    passk a k below G = 4 (with k = G every subset is the whole group, so no sample gets a signal)."""
    gen = torch.Generator().manual_seed(seed)
    if name == "passk":
        return {"pass_k": 2}
    if name == "gdpo":
        return {"reward_parts": r.unsqueeze(-1), "reward_weights": torch.ones(1)}
    if name == "ace":
        return {
            "seq_logp": -10 * torch.rand(r.shape, generator=gen),
            "seq_ref_logp": -10 * torch.rand(r.shape, generator=gen),
        }
    return {}


# ---------------------------------------------------------------- registry


def test_registered_under_their_names_with_their_needs():
    for name, fn in NEW.items():
        assert ADVANTAGES[name] is fn
    assert ADVANTAGES.needs("gdpo") == {"reward_parts", "reward_weights"}
    assert ADVANTAGES.needs("ace") == {"seq_logp", "seq_ref_logp"}
    for name in ("reinforce_pp", "bnpo", "dgpo", "nsr_psr", "calibrl", "passk"):
        assert ADVANTAGES.needs(name) == frozenset()
    # needed inputs are not knobs
    assert "reward_parts" not in ADVANTAGES.knobs("gdpo")
    assert "seq_logp" not in ADVANTAGES.knobs("ace")


def test_defaults_fit_their_bounds_and_bad_values_are_refused():
    for name in NEW:
        ADVANTAGES.check_knobs(name, ADVANTAGES.knobs(name))
    from rlvr.registry import KnobError

    for name, knobs in [
        ("passk", {"pass_k": 0}),
        ("passk", {"pass_k": 2.0}),
        ("nsr_psr", {"positive_weight": -0.1}),
        ("ace", {"confidence_penalty": -1.0}),
        ("ace", {"confidence_gate": "tanh"}),
        ("dgpo", {"hard_temperature": 0.0}),
        ("dgpo", {"balance": "var"}),
        ("bnpo", {"norm_alpha": 0.0}),
        ("calibrl", {"rareness_power": -1.0}),
        ("gdpo", {"batch_norm": "yes"}),
    ]:
        with pytest.raises(KnobError):
            ADVANTAGES.check_knobs(name, knobs)


@pytest.mark.parametrize("name", sorted(NEW))
def test_shape_dtype_and_wrong_rank(name):
    fn = NEW[name]
    r = _rand_binary(3, 4, 0)
    out = fn(r, **_inputs(name, r))
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        fn(torch.rand(8), **_inputs(name, torch.rand(1, 8)))


@pytest.mark.parametrize("name", sorted(NEW))
@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_group_gives_exactly_zero(name, value):
    # a constant group next to non-constant ones; and a batch of constant groups only
    r = torch.cat([torch.full((1, 4), value), BIN])
    out = NEW[name](r, **_inputs(name, r))
    assert torch.equal(out[0], torch.zeros(4)), out[0]
    assert (out[1:] != 0).any()
    r = torch.tensor([[value] * 4, [1.0 - value] * 4])
    out = NEW[name](r, **_inputs(name, r))
    assert torch.equal(out, torch.zeros(2, 4)), out


@pytest.mark.parametrize("name", ["reinforce_pp", "gdpo", "dgpo", "ace", "nsr_psr", "calibrl"])
def test_constant_non_dyadic_group_is_zero(name):
    # rewards that float32 cannot hold exactly: the group mean rounds, the advantage must not show it
    r = torch.tensor([[0.1] * 8, [0.3, 0.7, 0.1, 0.9, 0.2, 0.4, 0.5, 0.6]])
    out = NEW[name](r, **_inputs(name, r))
    assert torch.equal(out[0], torch.zeros(8)), out[0]


@pytest.mark.parametrize("name", ["gdpo", "dgpo", "ace", "nsr_psr", "calibrl", "passk"])
def test_eps_zero_constant_group_is_zero_not_nan(name):
    r = torch.cat([torch.ones(1, 4), BIN])
    out = NEW[name](r, eps=0.0, **_inputs(name, r))
    assert torch.equal(out[0], torch.zeros(4))
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- reinforce_pp


def test_reinforce_pp_hand_values():
    # centred: [[.5, -.5], [0, 0]]; batch mean 0; unbiased var (.25 + .25) / 3 = 1/6, std .408248
    # -> ±.5 / .408248 = ±1.224745; the constant group stays 0
    out = reinforce_pp(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), eps=0.0)
    close(out, torch.tensor([[1.224745, -1.224745], [0.0, 0.0]]))


def test_reinforce_pp_equals_loop_and_is_whitened():
    r = torch.rand(4, 5, generator=torch.Generator().manual_seed(4)) * 3
    out = reinforce_pp(r, eps=0.0)
    b, g = r.shape
    centred = [[float(r[i, j]) - sum(float(x) for x in r[i]) / g for j in range(g)] for i in range(b)]
    flat = [x for row in centred for x in row]
    m = sum(flat) / len(flat)
    std = (sum((x - m) ** 2 for x in flat) / (len(flat) - 1)) ** 0.5
    close(out, torch.tensor([[(x - m) / std for x in row] for row in centred]))
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(out.std()) == pytest.approx(1.0, rel=1e-5)


def test_reinforce_pp_differs_from_grpo_batch_scale():
    # grpo scale="batch" divides by the std of the rewards, REINFORCE++ by that of r - mean_g
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 4.0]])
    assert not torch.allclose(reinforce_pp(r), grpo(r, scale="batch"))
    ratio = reinforce_pp(r, eps=0.0) / dr_grpo(r)
    close(ratio, torch.full_like(ratio, float(ratio[0, 0])))  # one divisor for the batch


# ---------------------------------------------------------------- bnpo


def test_bnpo_fitted_normaliser_hand_values():
    # success rates p = .25, .5, .75: m = .5, unbiased v = (.0625 + 0 + .0625) / 2 = .0625,
    # m(1-m)/v - 1 = 3, a = b = 1.5, alpha = beta = 1 + 1.5 / 3 = 1.5
    # f(p) = sqrt(p(1-p)) / B(1.5, 1.5), B(1.5, 1.5) = pi / 8 = .392699
    # row 0: sqrt(.1875) = .433013: .75 * .392699 / .433013 = .680175; -.25 * ... = -.226725
    # row 1: ±.5 * .392699 / .5 = ±.392699;  row 2 mirrors row 0
    want = torch.tensor(
        [
            [0.680175, -0.226725, -0.226725, -0.226725],
            [0.392699, 0.392699, -0.392699, -0.392699],
            [0.226725, 0.226725, 0.226725, -0.680175],
        ]
    )
    close(bnpo(BIN), want)
    close(bnpo(BIN, norm_alpha=1.5, norm_beta=1.5), want)


def test_bnpo_neutral_is_dr_grpo():
    r = torch.rand(4, 6, generator=torch.Generator().manual_seed(5))
    close(bnpo(r, norm_alpha=1.0, norm_beta=1.0), dr_grpo(r))
    # a single prompt, or success rates without spread: the fit falls back to alpha = beta = 1
    close(bnpo(r[:1]), dr_grpo(r[:1]))
    same_rate = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    close(bnpo(same_rate), dr_grpo(same_rate))


def test_bnpo_takes_float32_rewards_at_the_range_ends():
    # answer (weight 1) + format (weight 0.1) in float32: 1.1000000238 > 1.1 (the bnpo recipe's
    # reward_max); the ends of the range are the ends, not an error
    top = torch.tensor(1.0) + torch.tensor(0.1)  # float32
    assert float(top) > 1.1
    r = torch.stack([top, torch.tensor(0.1), torch.tensor(0.0), top]).view(1, 4)  # [1, 4]
    exact = torch.tensor([[1.0, 0.1 / 1.1, 0.0, 1.0]])
    close(bnpo(r, reward_max=1.1), bnpo(exact))
    with pytest.raises(ValueError, match=r"got values from 0\.0 to 1\.2"):
        bnpo(torch.tensor([[0.0, 1.2]]), reward_max=1.1)


@pytest.mark.parametrize("g", [2, 4, 8])
def test_bnpo_three_halves_is_scaled_grpo_with_population_std(g):
    r = _rand_binary(6, g, g)
    r[0] = torch.tensor([1.0] + [0.0] * (g - 1))  # at least one non-constant group
    # grpo(eps=0) divides by the sample std = population std * sqrt(G / (G-1))
    want = math.pi / 8 * math.sqrt(g / (g - 1)) * grpo(r, eps=0.0).nan_to_num(0.0)
    close(bnpo(r, norm_alpha=1.5, norm_beta=1.5), want)


def test_bnpo_fit_equals_loop():
    r = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [1.0] * 5]
    )
    p = [sum(float(x) for x in row) / 5 for row in r]
    m = sum(p) / len(p)
    v = sum((x - m) ** 2 for x in p) / (len(p) - 1)
    common = m * (1 - m) / v - 1
    alpha, beta = max(1 + common * m / 3, 1.0), max(1 + common * (1 - m) / 3, 1.0)
    norm = math.gamma(alpha) * math.gamma(beta) / math.gamma(alpha + beta)
    want = torch.tensor(
        [
            [
                0.0
                if q in (0.0, 1.0)
                else (float(x) - q) * norm / (q ** (alpha - 1) * (1 - q) ** (beta - 1))
                for x in row
            ]
            for row, q in zip(r, p, strict=True)
        ]
    )
    close(bnpo(r), want)


def test_bnpo_weights_rare_success_more_than_grpo():
    # the fitted Beta puts little mass on hard prompts: their advantages are scaled up relative to
    # prompts near the batch's typical success rate
    r = torch.tensor([[1.0] + [0.0] * 7] + [[1.0] * 4 + [0.0] * 4] * 5)
    out, base = bnpo(r), dr_grpo(r)
    assert out[0, 0] / base[0, 0] > out[1, 0] / base[1, 0]


def test_bnpo_reward_range_is_rescaled_and_checked():
    r = torch.tensor([[2.0, -2.0, -2.0, -2.0], [2.0, 2.0, -2.0, -2.0]])
    close(bnpo(r, reward_min=-2.0, reward_max=2.0), bnpo((r + 2) / 4))
    with pytest.raises(ValueError, match="reward_min, reward_max"):
        bnpo(r)
    with pytest.raises(ValueError, match="reward_max must exceed"):
        bnpo(r, reward_min=1.0, reward_max=1.0)


# ---------------------------------------------------------------- gdpo


def _parts_and_rewards(parts: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"rewards": (parts * w).sum(-1), "reward_parts": parts, "reward_weights": w}


def test_gdpo_hand_values():
    # answer [1, 0, 0, 0]: mean .25, unbiased std .5 -> [1.5, -.5, -.5, -.5]
    # format [1, 1, 0, 0]: ±.5 / .57735 = ±.866025; weighted by .5 -> ±.433013
    # sum: [1.933013, -.066987, -.933013, -.933013]
    parts = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    kw = _parts_and_rewards(parts, torch.tensor([1.0, 0.5]))
    want = torch.tensor([[1.933013, -0.066987, -0.933013, -0.933013]])
    close(gdpo(eps=0.0, batch_norm=False, **kw), want)
    # batch norm: mean 0, unbiased var (3.736538 + .004487 + 2 * .870513) / 3 = 1.827350,
    # std 1.351795 -> divide
    close(gdpo(eps=0.0, **kw), want / 1.351795)


def test_gdpo_single_component_is_grpo():
    r = torch.rand(5, 6, generator=torch.Generator().manual_seed(6))
    kw = {"reward_parts": r.unsqueeze(-1), "reward_weights": torch.ones(1)}
    assert torch.equal(gdpo(r, batch_norm=False, **kw), grpo(r))
    a = grpo(r)
    close(gdpo(r, **kw), (a - a.mean()) / (a.std() + 1e-6))
    # no weights given: ones
    close(gdpo(r, reward_parts=r.unsqueeze(-1), batch_norm=False), grpo(r))


def test_gdpo_keeps_apart_what_grpo_collapses():
    # two binary components, G = 2: group 0 differs in one component, group 1 in both.
    # grpo on the summed reward gives both groups ±.707107; gdpo gives ±.707107 and ±1.414214
    parts = torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])
    kw = _parts_and_rewards(parts, torch.ones(2))
    close(grpo(kw["rewards"], eps=0.0)[0], grpo(kw["rewards"], eps=0.0)[1])
    want = torch.tensor([[-0.707107, 0.707107], [-1.414214, 1.414214]])
    close(gdpo(eps=0.0, batch_norm=False, **kw), want)


def test_gdpo_equals_loop_over_components():
    gen = torch.Generator().manual_seed(7)
    parts = (torch.rand(3, 5, 3, generator=gen) < 0.5).float()
    w = torch.tensor([1.0, 0.2, 0.5])
    loop = sum(w[k] * grpo(parts[..., k]).nan_to_num(0.0) for k in range(3))
    close(gdpo(batch_norm=False, **_parts_and_rewards(parts, w)), loop)


def test_gdpo_bad_inputs_raise():
    r = torch.rand(2, 4)
    with pytest.raises(ValueError, match="needs reward_parts"):
        gdpo(r)
    with pytest.raises(ValueError, match=r"\[B, G, K\]"):
        gdpo(r, reward_parts=torch.rand(2, 3, 2))
    with pytest.raises(ValueError, match=r"reward_weights must have shape \[K\]"):
        gdpo(r, reward_parts=torch.rand(2, 4, 2), reward_weights=torch.ones(3))


# ---------------------------------------------------------------- dgpo


def test_dgpo_mad_hand_values_and_balance():
    # [1, 0, 0, 0]: centred [.75, -.25, -.25, -.25], MAD = 1.5 / 4 = .375 -> [2, -2/3, -2/3, -2/3]
    # [1, 1, 0, 0]: centred ±.5, MAD .5 -> ±1
    out = dgpo(BIN[:2], eps=0.0, hard_temperature=None)
    close(out, torch.tensor([[2.0, -2 / 3, -2 / 3, -2 / 3], [1.0, 1.0, -1.0, -1.0]]))
    # every non-constant group moves the policy by the same total |A| = G, whatever its success rate
    r = torch.rand(6, 8, generator=torch.Generator().manual_seed(8)) * 2
    close(dgpo(r, eps=0.0, hard_temperature=None).abs().sum(1), torch.full((6,), 8.0))
    # grpo does not: a hard prompt (p = .25) gets less than a medium one (p = .5)
    g = grpo(BIN[:2], eps=0.0).abs().sum(1)
    assert g[0] < g[1]


def test_dgpo_question_weight_hand_values():
    # means .25 (hard) and .75 (easy), one constant group; T = 1 over the V = 2 valid groups:
    # softmax(-.25, -.75) = (.622459, .377541); times V = 2 -> 1.244918, .755082
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = dgpo(r, eps=0.0, hard_temperature=1.0)
    base = dgpo(r, eps=0.0, hard_temperature=None)
    close(out[:2] / base[:2], torch.tensor([[1.244918] * 4, [0.755082] * 4]))
    assert torch.equal(out[2], torch.zeros(4))


def test_dgpo_weights_average_one_over_valid_groups_and_favour_hard():
    r = torch.rand(5, 6, generator=torch.Generator().manual_seed(9))
    w = (dgpo(r, hard_temperature=0.5) / dgpo(r, hard_temperature=None))[:, 0]  # [B]
    close(w.mean(), torch.tensor(1.0))
    order = r.mean(1).argsort()  # hardest first
    assert (w[order].diff() < 0).all()
    # a huge temperature is the neutral setting
    close(dgpo(r, hard_temperature=1e9), dgpo(r, hard_temperature=None))


def test_dgpo_neutral_settings_are_grpo_and_dr_grpo():
    r = torch.rand(4, 5, generator=torch.Generator().manual_seed(10))
    assert torch.equal(dgpo(r, balance="std", hard_temperature=None), grpo(r))
    assert torch.equal(dgpo(r, balance="none", hard_temperature=None), dr_grpo(r))
    with pytest.raises(ValueError, match="balance"):
        dgpo(r, balance="var")


# ---------------------------------------------------------------- ace


def test_ace_hand_values():
    # grpo([1, 0, 0, 0], eps=0) = [1.5, -.5, -.5, -.5]; c = [3, 2, -1, .5]
    # the positive keeps 1.5; negatives * (1 + .5 * relu(c)): -.5 * 2 = -1, -.5, -.5 * 1.25 = -.625
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    kw = {
        "seq_logp": torch.tensor([[-7.0, -8.0, -11.0, -9.5]]),
        "seq_ref_logp": torch.full((1, 4), -10.0),
    }
    close(ace(r, eps=0.0, confidence_penalty=0.5, **kw), torch.tensor([[1.5, -1.0, -0.5, -0.625]]))
    # softplus: softplus(2) = 2.126928, softplus(-1) = .313262, softplus(.5) = .974077
    out = ace(r, eps=0.0, confidence_penalty=0.5, confidence_gate="softplus", **kw)
    want = [1.5, -0.5 * (1 + 0.5 * 2.126928), -0.5 * (1 + 0.5 * 0.313262), -0.5 * (1 + 0.5 * 0.974077)]
    close(out, torch.tensor([want]))


@pytest.mark.parametrize("base", ["grpo", "dr_grpo"])
def test_ace_zero_penalty_is_the_base(base):
    r = torch.rand(4, 6, generator=torch.Generator().manual_seed(11))
    kw = _inputs("ace", r, 1)
    want = grpo(r) if base == "grpo" else dr_grpo(r)
    close(ace(r, base=base, confidence_penalty=0.0, **kw), want)


def test_ace_only_confident_errors_grow_and_depends_on_the_shift_only():
    r = torch.rand(3, 8, generator=torch.Generator().manual_seed(12))
    kw = _inputs("ace", r, 2)
    out, base = ace(r, confidence_penalty=2.0, **kw), grpo(r)
    shift = kw["seq_logp"] - kw["seq_ref_logp"]
    grown = (base < 0) & (shift > 0)
    assert grown.any() and (~grown).any()
    assert (out[grown].abs() > base[grown].abs()).all()
    assert torch.equal(out[~grown], base[~grown])
    shifted = {k: v + 5.0 for k, v in kw.items()}  # the same confidence shift
    close(ace(r, confidence_penalty=2.0, **shifted), out)


def test_ace_bad_inputs_raise():
    r = torch.rand(2, 4)
    with pytest.raises(ValueError, match="needs seq_logp"):
        ace(r, seq_logp=torch.rand(2, 4))
    with pytest.raises(ValueError, match="shape of rewards"):
        ace(r, seq_logp=torch.rand(2, 4), seq_ref_logp=torch.rand(8))
    with pytest.raises(ValueError, match="confidence_gate"):
        ace(r, confidence_gate="tanh", **_inputs("ace", r))
    with pytest.raises(ValueError, match="base"):
        ace(r, base="rloo", **_inputs("ace", r))


# ---------------------------------------------------------------- nsr_psr


def test_nsr_psr_hand_values():
    # grpo([1, 0, 0, 0], eps=0) = [1.5, -.5, -.5, -.5]; positives * .1, negatives * 2
    out = nsr_psr(
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0, positive_weight=0.1, negative_weight=2.0
    )
    close(out, torch.tensor([[0.15, -1.0, -1.0, -1.0]]))


@pytest.mark.parametrize("base", ["grpo", "dr_grpo"])
def test_nsr_psr_weight_one_is_base_and_zero_is_pure_nsr(base):
    r = torch.rand(4, 6, generator=torch.Generator().manual_seed(13))
    want = grpo(r) if base == "grpo" else dr_grpo(r)
    close(nsr_psr(r, base=base, positive_weight=1.0), want)
    nsr = nsr_psr(r, base=base, positive_weight=0.0)
    assert torch.equal(nsr[want > 0], torch.zeros(int((want > 0).sum())))
    close(nsr[want <= 0], want[want <= 0])
    psr = nsr_psr(r, base=base, positive_weight=1.0, negative_weight=0.0)
    close(psr + nsr, want)  # PSR + NSR is the whole update


# ---------------------------------------------------------------- calibrl


def test_calibrl_hand_values():
    # [1, 0, 0, 0]: success frequency .25 -> weight .75, failure frequency .75 -> weight .25
    # grpo(eps=0) = [1.5, -.5, -.5, -.5] -> [1.125, -.125, -.125, -.125]
    out = calibrl(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0)
    close(out, torch.tensor([[1.125, -0.125, -0.125, -0.125]]))
    # power 2: [1.5 * .5625, -.5 * .0625] ; dr_grpo base: [.75 * .75, -.25 * .25]
    out = calibrl(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), eps=0.0, rareness_power=2.0)
    close(out, torch.tensor([[0.84375, -0.03125, -0.03125, -0.03125]]))
    out = calibrl(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), base="dr_grpo")
    close(out, torch.tensor([[0.5625, -0.0625, -0.0625, -0.0625]]))


@pytest.mark.parametrize("base", ["grpo", "dr_grpo"])
def test_calibrl_power_zero_is_base(base):
    r = torch.randint(0, 3, (5, 6), generator=torch.Generator().manual_seed(14)).float()
    want = grpo(r) if base == "grpo" else dr_grpo(r)
    close(calibrl(r, base=base, rareness_power=0.0), want)


def test_calibrl_equals_loop_and_rarer_gets_more():
    r = torch.randint(0, 3, (4, 7), generator=torch.Generator().manual_seed(15)).float()
    out, base = calibrl(r, rareness_power=1.5), grpo(r)
    b, g = r.shape
    for i in range(b):
        for j in range(g):
            freq = sum(1 for x in r[i] if float(x) == float(r[i, j])) / g
            assert float(out[i, j]) == pytest.approx(float(base[i, j]) * (1 - freq) ** 1.5, abs=1e-6)
    # within a group, a less frequent outcome never gets a smaller weight
    w = (out / base).nan_to_num(0.0)
    freq = (r.unsqueeze(2) == r.unsqueeze(1)).float().mean(2)
    for i in range(b):
        nz = base[i] != 0
        order = freq[i][nz].argsort()
        assert (w[i][nz][order].diff() <= 1e-6).all()


# ---------------------------------------------------------------- passk


def _passk_brute(r: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the size-k subsets containing each sample of (R_S - mean_S R) / std_S R (population
    std over all subsets), R_S = 1 if any member of the subset S succeeds."""
    b, g = r.shape
    out = torch.zeros(b, g, dtype=torch.float64)
    for i in range(b):
        subsets = list(itertools.combinations(range(g), k))
        rew = [1.0 if any(float(r[i, j]) > 0.5 for j in s) else 0.0 for s in subsets]
        m = sum(rew) / len(rew)
        std = (sum((x - m) ** 2 for x in rew) / len(rew)) ** 0.5
        if std == 0:
            continue
        for j in range(g):
            mine = [(x - m) / std for s, x in zip(subsets, rew, strict=True) if j in s]
            out[i, j] = sum(mine) / len(mine)
    return out.float()


def test_passk_hand_values():
    # G = 4, one success, k = 2: 6 subsets, C(3, 2) = 3 fail -> R = .5, std .5
    # success: (1 - .5) / .5 = 1; failure: C(2, 1) / C(3, 1) = 2/3 -> (1 - 2/3 - .5) / .5 = -1/3
    out = passk(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), pass_k=2, eps=0.0)
    close(out, torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]))
    # unnormalised: [.5, -1/6]
    out = passk(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), pass_k=2, normalise=False)
    close(out, torch.tensor([[0.5, -1 / 6, -1 / 6, -1 / 6]]))


@pytest.mark.parametrize("g", [2, 3, 4, 5, 6])
def test_passk_equals_brute_force_over_subsets(g):
    r = torch.cat([_rand_binary(6, g, 100 + g), torch.eye(g)[:1], 1 - torch.eye(g)[:1]])
    for k in range(1, g + 1):
        close(passk(r, pass_k=k, eps=0.0), _passk_brute(r, k), msg=f"k={k}")


@pytest.mark.parametrize("g", [2, 4, 8])
def test_passk_k1_is_grpo_with_population_std_and_unnormalised_is_dr_grpo(g):
    r = _rand_binary(8, g, g)
    r[0, 0], r[0, 1] = 1.0, 0.0  # at least one non-constant group
    want = math.sqrt(g / (g - 1)) * grpo(r, eps=0.0).nan_to_num(0.0)
    close(passk(r, pass_k=1, eps=0.0), want)
    close(passk(r, pass_k=1, normalise=False), dr_grpo(r))


def test_passk_success_threshold_positives_share_and_saturated_groups_are_zero():
    r = torch.tensor([[0.9, 0.2, 0.2, 0.9, 0.2, 0.2], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    out = passk(r, pass_k=3, success_threshold=0.5)
    close(out[0], out[1][[0, 1, 2, 5, 3, 4]])  # the same outcomes in another order
    pos = out[0][r[0] > 0.5]
    assert torch.equal(pos, pos[:1].expand_as(pos))
    # 4 failures, k = 5: every 5-subset holds a success -> no signal
    assert torch.equal(passk(r, pass_k=5), torch.zeros(2, 6))


def test_passk_larger_k_pushes_failures_less():
    # the more samples a subset holds, the less a failure costs when others succeed
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    neg = [float(passk(r, pass_k=k, normalise=False)[0, 1]) for k in (1, 2, 4)]
    assert neg[0] < neg[1] < neg[2] <= 0


def test_passk_k_above_g_raises():
    with pytest.raises(ValueError, match="pass_k must be in"):
        passk(torch.rand(2, 4), pass_k=5)


# ---------------------------------------------------------------- oreal


def test_oreal_hand_values():
    oreal = ADVANTAGES["oreal"]
    # BIN success rates .25, .5, .75: positives 1, negatives -p / (1 - p) = -1/3, -1, -3
    want = torch.tensor([[1.0, -1 / 3, -1 / 3, -1 / 3], [1.0, 1.0, -1.0, -1.0], [1.0, 1.0, 1.0, -3.0]])
    close(oreal(BIN), want)
    # negative_coef .5 halves the negatives only: -1/6, -.5, -1.5
    want = torch.tensor([[1.0, -1 / 6, -1 / 6, -1 / 6], [1.0, 1.0, -0.5, -0.5], [1.0, 1.0, 1.0, -1.5]])
    close(oreal(BIN, negative_coef=0.5), want)
    # accept_reward .5 on [.6, .2, 1, 0]: positives .6 and 1, p = .5 -> negatives -1
    r = torch.tensor([[0.6, 0.2, 1.0, 0.0]])
    close(oreal(r, accept_reward=0.5), torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    # no positive: p = 0, all 0; no negative: all 1 (raft's BC)
    r = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.equal(oreal(r), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))


@pytest.mark.parametrize("accept", [1.0, 0.5])
def test_oreal_negative_coef_zero_is_raft_to_the_bit(accept):
    r = torch.rand(6, 8, generator=torch.Generator().manual_seed(21))
    r[:3] = (r[:3] > 0.5).float()  # binary groups beside continuous ones
    got = ADVANTAGES["oreal"](r, accept_reward=accept, negative_coef=0.0)
    assert torch.equal(got, ADVANTAGES["raft"](r, accept_reward=accept))
    # and the negatives' reshaping never touches the positives' BC weight
    got = ADVANTAGES["oreal"](r, accept_reward=accept, negative_coef=2.5)
    pos = r >= accept
    assert torch.equal(got[pos], torch.ones(int(pos.sum())))


def test_oreal_equals_loop_and_sums_to_zero():
    r = _rand_binary(7, 6, 22)
    out = ADVANTAGES["oreal"](r, negative_coef=0.7)
    for i in range(7):
        p = sum(float(x) for x in r[i]) / 6
        for j in range(6):
            want = 1.0 if r[i, j] >= 1 else -0.7 * p / (1 - p)
            assert float(out[i, j]) == pytest.approx(want, abs=1e-6)
    # negative_coef = 1: every group's advantages sum to zero (GRPO's centring, negatives only)
    close(ADVANTAGES["oreal"](r).sum(1)[(r.sum(1) > 0)], torch.zeros(int((r.sum(1) > 0).sum())))


def test_oreal_negatives_gradient_points_the_positives_way():
    # a categorical policy over 5 answers, answers 0 and 1 correct: the exact expected gradient
    # E-[A grad log pi] of the objective from the negatives alone is a positive multiple of the
    # positives' BC gradient E+[grad log pi]: E- = -p/(1-p) E+ and A = -p/(1-p), so (p/(1-p))^2
    logits = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.4], requires_grad=True)
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    pi = torch.softmax(logits, 0).detach()
    p = float((pi * correct).sum())
    a_neg = -p / (1 - p)

    def grad(weights):
        (g,) = torch.autograd.grad(
            (pi * weights * torch.log_softmax(logits, 0)).sum(), logits, retain_graph=True
        )
        return g

    g_pos = grad(correct / p)  # E+[grad log pi]
    g_neg = grad((1 - correct) * a_neg / (1 - p))  # E-[A grad log pi]
    close(g_neg, g_pos * (p / (1 - p)) ** 2)
    assert float(g_pos.norm()) > 0.1
    assert ADVANTAGES.needs("oreal") == frozenset()
    from rlvr.registry import KnobError

    with pytest.raises(KnobError):
        ADVANTAGES.check_knobs("oreal", {"negative_coef": -0.1})
