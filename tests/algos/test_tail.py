"""The long tail of issue 30: adora, duration, mssr (advantage and objective), steer, gated_turns and
hiper. Hand values, the neutral settings and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, CREDIT, OBJECTIVES
from rlvr.algos.advantages import adora, duration, grpo, mssr
from rlvr.algos.credit import gated_turns, hiper, turn_grpo
from rlvr.algos.objectives import capo, entropy_change, ppo_clip, steer
from rlvr.algos.objectives import mssr as mssr_objective
from rlvr.registry import KnobError

close = torch.testing.assert_close


# ---------------------------------------------------------------- adora


R2 = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
L2 = torch.tensor([[5.0, 3.0, 2.0, 4.0], [2.0, 6.0, 3.0, 1.0]])


def test_adora_hand_values():
    # group 0: longest correct 5 >= longest wrong 4, kept; group 1: only a short answer is correct
    # (2 < 6), weighed by lambda. grpo (eps 0): group 0 +-sqrt(3)/2, group 1 [1.5, -0.5, -0.5, -0.5]
    s = math.sqrt(3) / 2
    want = torch.tensor([[s, -s, s, -s], [0.15, -0.05, -0.05, -0.05]])
    close(adora(R2, lengths=L2, adora_lambda=0.1, eps=0.0), want)


def test_adora_neutral_and_one_sided_groups():
    close(adora(R2, lengths=L2, adora_lambda=1.0), grpo(R2))
    # a group without a wrong (or a correct) answer keeps weight 1 (its grpo advantage is 0 anyway)
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    lengths = torch.tensor([[1.0, 9.0], [4.0, 2.0], [9.0, 1.0]])
    close(adora(r, lengths=lengths, adora_lambda=0.0), grpo(r))
    # ties count as advantageous; lambda 0 silences a disadvantageous group
    assert (
        adora(torch.tensor([[1.0, 0.0]]), lengths=torch.tensor([[3.0, 3.0]]), adora_lambda=0.0)
        .abs()
        .sum()
        > 0
    )
    out = adora(torch.tensor([[1.0, 0.0]]), lengths=torch.tensor([[2.0, 3.0]]), adora_lambda=0.0)
    close(out, torch.zeros(1, 2))


def test_adora_bad_input():
    with pytest.raises(ValueError, match="needs `lengths`"):
        adora(R2)
    with pytest.raises(ValueError, match="shape of rewards"):
        adora(R2, lengths=L2[:, :2])
    with pytest.raises(KnobError, match="adora_lambda"):
        ADVANTAGES.check_knobs("adora", {"adora_lambda": 1.5})


# ---------------------------------------------------------------- duration


def test_duration_hand_values_and_neutral():
    r = torch.tensor([[1.0, 0.0]])
    lengths = torch.tensor([[3.0, 1.0]])  # mean 2: d = [1.5, 0.5]
    a = 1 / math.sqrt(2)  # grpo of [1, 0], eps 0
    close(duration(r, lengths=lengths, eps=0.0), torch.tensor([[1.5 * a, -0.5 * a]]))
    close(
        duration(r, lengths=lengths, eps=0.0, duration_power=2.0), torch.tensor([[2.25 * a, -0.25 * a]])
    )
    close(duration(R2, lengths=L2, duration_power=0.0), grpo(R2))
    close(duration(R2, lengths=torch.zeros_like(L2)), grpo(R2))  # no tokens: weight 1


def test_duration_bad_input():
    with pytest.raises(ValueError, match="needs `lengths`"):
        duration(R2)
    with pytest.raises(KnobError, match="duration_power"):
        ADVANTAGES.check_knobs("duration", {"duration_power": -1.0})


# ---------------------------------------------------------------- mssr


def test_mssr_advantage_is_group_free():
    r = torch.tensor([[1.0], [0.0], [0.0], [1.0]])  # G = 1
    s = math.sqrt(3) / 2  # (1 - 0.5) / std_unbiased([1, 0, 0, 1]) = 0.5 / sqrt(1/3)
    close(mssr(r, eps=0.0), torch.tensor([[s], [-s], [-s], [s]]))
    # the group layout does not matter: it never compares within a group
    close(mssr(r.view(2, 2)), mssr(r).view(2, 2))
    close(mssr(torch.full((3, 1), 0.7)), torch.zeros(3, 1))
    close(mssr(torch.tensor([[1.0]])), torch.zeros(1, 1))


def test_mssr_objective_hand_values():
    adv = torch.tensor([1.0, -1.0])  # [N]
    logp = torch.log(torch.tensor([[0.5, 0.2], [0.5, 0.2]])).requires_grad_()
    old = logp.detach().clone()
    mask = torch.ones(2, 2)
    entropy = torch.tensor([[0.5, 3.0], [0.5, 3.0]])
    # psi = min(0.4 H, |A| / 2) = [0.2, 0.5]; A' = A + psi; ratio 1: loss = -A'
    loss = mssr_objective(logp, old, adv, mask, entropy=entropy, mssr_alpha=0.4, mssr_kappa=2.0)
    close(loss.detach(), -torch.tensor([[1.2, 1.5], [-0.8, -0.5]]))
    loss.sum().backward()
    close(logp.grad, -torch.tensor([[1.2, 1.5], [-0.8, -0.5]]))  # d(-rho A')/dlogp = -A'


def test_mssr_objective_neutral_and_bad_input():
    torch.manual_seed(0)
    logp, old = torch.randn(3, 4), torch.randn(3, 4)
    adv, mask = torch.randn(3), (torch.rand(3, 4) > 0.3).float()
    h = torch.rand(3, 4)
    close(
        mssr_objective(logp, old, adv, mask, entropy=h, mssr_alpha=0.0), ppo_clip(logp, old, adv, mask)
    )
    with pytest.raises(ValueError, match="needs `entropy`"):
        mssr_objective(logp, old, adv, mask)
    with pytest.raises(KnobError, match="mssr_kappa"):
        OBJECTIVES.check_knobs("mssr", {"mssr_kappa": 0.0})


# ---------------------------------------------------------------- steer


def test_entropy_change_sign():
    # reinforcing a likely token (A > 0, log p > -H) lowers the entropy; punishing it raises it
    logp, h = torch.tensor([[math.log(0.9)]]), torch.tensor([[0.5]])
    assert entropy_change(logp, h, torch.tensor([[1.0]])) < 0
    assert entropy_change(logp, h, torch.tensor([[-1.0]])) > 0
    close(entropy_change(logp, h, torch.tensor([[2.0]])), torch.tensor([[-2.0 * (math.log(0.9) + 0.5)]]))


def test_steer_hand_values():
    p = [[0.9, 0.1], [0.9, 0.1]]
    logp = torch.log(torch.tensor(p))
    h = torch.tensor([[0.5, 2.0], [0.5, 2.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    # plain loop over the tokens: dH = -A (log p + H), D = mean |dH|, w = 1 / (1 + c max(0, -dH) / D)
    dh = [
        [-a * (math.log(p[i][t]) + h[i, t].item()) for t in range(2)] for i, a in enumerate([1.0, -1.0])
    ]
    d = sum(abs(x) for row in dh for x in row) / 4
    w = [[1 / (1 + 0.5 * max(0.0, -x) / d) for x in row] for row in dh]
    base = ppo_clip(logp, logp, adv, mask)
    close(steer(logp, logp, adv, mask, entropy=h, steer_coef=0.5), base * torch.tensor(w))
    assert w[0][1] == 1.0 and w[1][0] == 1.0  # entropy-raising tokens keep weight 1


def test_steer_neutral_and_bad_input():
    torch.manual_seed(1)
    logp, old = torch.randn(3, 4), torch.randn(3, 4)
    adv, mask = torch.randn(3), (torch.rand(3, 4) > 0.3).float()
    h = torch.rand(3, 4)
    close(steer(logp, old, adv, mask, entropy=h, steer_coef=0.0), ppo_clip(logp, old, adv, mask))
    close(steer(logp, old, torch.zeros(3), mask, entropy=h), ppo_clip(logp, old, torch.zeros(3), mask))
    w = steer(logp, old, adv, mask, entropy=h) / ppo_clip(logp, old, adv, mask)
    w = w[(mask > 0) & ppo_clip(logp, old, adv, mask).ne(0)]
    assert bool((w > 0).all() and (w <= 1 + 1e-6).all())
    with pytest.raises(ValueError, match="needs `entropy`"):
        steer(logp, old, adv, mask)
    with pytest.raises(KnobError, match="steer_coef"):
        OBJECTIVES.check_knobs("steer", {"steer_coef": -1.0})


# ---------------------------------------------------------------- turn credit: gated_turns, hiper

# One group (B = 1, G = 3) of episodes, as tests/algos/test_credit_turns.py: 1, 2, 3 = model turn.
#   row 0: three turns, env rewards 0, 0, 1;  row 1: two turns, 0, 1;  row 2: two turns, 1, 0
TURN = torch.tensor(
    [
        [1, 1, 0, 0, 2, 0, 3, 3, 0, 0],
        [1, 0, 0, 2, 2, 2, 0, 0, 0, 0],
        [1, 1, 1, 0, 2, 0, 0, 0, 0, 0],
    ]
)
MASK = (TURN > 0).float()  # [3, 10]
TURN_R = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # [3, 3]
R = torch.tensor([[1.0, 2.0, 0.0]])  # [1, 3] episode rewards


def _spread(per_turn: list[list[float]]) -> torch.Tensor:
    """[N, T] the value of turn k on the tokens of turn k, 0 elsewhere."""
    out = torch.zeros(TURN.shape)
    for i, vals in enumerate(per_turn):
        for k, v in enumerate(vals, start=1):
            out[i][TURN[i] == k] = v
    return out


def test_gated_turns_hand_values():
    # gate 1.5: only row 1 (R = 2) keeps its turn rewards. gamma 0.5, scale none:
    # returns row 1 = [0.5, 1], others 0; turn 1 [0, .5, 0] - 1/6, turn 2 [0, 1, 0] - 1/3;
    # turn 3 reached by row 0 only: 0. Episode term R - mean = [0, 1, -1].
    want = _spread([[-1 / 6, -1 / 3, 0.0], [4 / 3, 5 / 3], [-7 / 6, -4 / 3]])
    out = gated_turns(R, MASK, turn=TURN, turn_rewards=TURN_R, reward_gate=1.5, gamma=0.5, scale="none")
    close(out, want)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_gated_turns_neutral_and_closed_gate(scale):
    kw = {"turn": TURN, "turn_rewards": TURN_R, "gamma": 0.7, "scale": scale}
    close(gated_turns(R, MASK, reward_gate=-math.inf, **kw), turn_grpo(R, MASK, **kw))
    close(gated_turns(R, MASK, reward_gate=0.0, **kw), turn_grpo(R, MASK, **kw))  # every R >= 0
    # a gate no episode passes leaves the outcome advantage on every model token
    outcome = grpo(R, scale=scale).reshape(-1, 1).expand(3, 10)
    close(gated_turns(R, MASK, reward_gate=9.0, **kw), torch.where(TURN > 0, outcome, 0.0))


def test_gated_turns_bad_input():
    with pytest.raises(ValueError, match="needs 'turn_rewards'"):
        gated_turns(R, MASK, turn=TURN)
    with pytest.raises(ValueError, match="shape"):
        gated_turns(R, MASK, turn=TURN, turn_rewards=TURN_R[:2])


def test_hiper_hand_values():
    # H = 2: subgoal 0 = turns 1-2, subgoal 1 = turn 3. gamma 0.5, scale none.
    # high: R^H row 0 = [0 + .5 * 1, 1], rows 1, 2 = [1]; subgoal 0 [.5, 1, 1] - 5/6; subgoal 1: 0
    # low: R^L (to the subgoal's end) row 0 = [0, 0, 1], row 1 = [.5, 1], row 2 = [1, 0];
    #      turn 1 [0, .5, 1] - .5, turn 2 [0, 1, 0] - 1/3, turn 3: 0.   episode: [0, 1, -1]
    want = _spread([[-5 / 6, -2 / 3, 0.0], [7 / 6, 11 / 6], [-1 / 3, -7 / 6]])
    out = hiper(R, MASK, turn=TURN, turn_rewards=TURN_R, turns_per_subgoal=2, gamma=0.5, scale="none")
    close(out, want)


@pytest.mark.parametrize("scale", ["group", "none"])
def test_hiper_reductions(scale):
    kw = {"turn": TURN, "turn_rewards": TURN_R, "gamma": 0.7, "scale": scale}
    close(hiper(R, MASK, turns_per_subgoal=1, low_coef=0.0, **kw), turn_grpo(R, MASK, **kw))
    outcome = grpo(R, scale=scale).reshape(-1, 1).expand(3, 10)
    flat = hiper(R, MASK, turns_per_subgoal=3, high_coef=0.0, low_coef=0.0, **kw)
    close(flat, torch.where(TURN > 0, outcome, 0.0))
    # one subgoal over every turn: the low level is turn_grpo's turn term over the whole episode
    one = hiper(R, MASK, turns_per_subgoal=3, episode_coef=0.0, high_coef=0.0, **kw)
    close(one, turn_grpo(R, MASK, episode_coef=0.0, **kw))


def test_hiper_bad_input():
    with pytest.raises(ValueError, match="turns_per_subgoal"):
        hiper(R, MASK, turn=TURN, turn_rewards=TURN_R, turns_per_subgoal=0)
    with pytest.raises(KnobError, match="turns_per_subgoal"):
        CREDIT.check_knobs("hiper", {"turns_per_subgoal": 0})
    with pytest.raises(ValueError, match="needs 'turn_rewards'"):
        hiper(R, MASK, turn=TURN)


# ---------------------------------------------------------------- capo


def test_capo_masks_the_largest_curvature_tokens():
    old = torch.zeros(2, 3)
    logp = torch.tensor([[0.1, -0.3, 0.0], [0.2, 0.05, 0.0]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # 5 tokens
    # c = |A| d^2: [0.01, 0.09, 0], [0.08, 0.005, -]; fraction 0.4 -> 2 tokens: (0, 1) and (1, 0)
    loss = capo(logp, old, adv, mask, capo_fraction=0.4)
    base = ppo_clip(logp, old, adv, mask)
    close(loss.detach(), base.detach())  # values unchanged
    loss.sum().backward()
    grad = logp.grad.clone()
    logp.grad = None
    base.sum().backward()
    keep = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    close(grad, logp.grad * keep)
    assert grad[0, 1] == 0 and grad[1, 0] == 0 and grad[0, 0] != 0


def test_capo_neutral_on_policy_and_bad_knobs():
    torch.manual_seed(2)
    logp, old = torch.randn(3, 4), torch.randn(3, 4)
    adv, mask = torch.randn(3), (torch.rand(3, 4) > 0.3).float()
    close(capo(logp, old, adv, mask, capo_fraction=0.0), ppo_clip(logp, old, adv, mask))
    # on-policy (logp = old_logp) the proxy is 0: nothing is masked
    x = logp.clone().requires_grad_()
    capo(x, logp, adv, mask, capo_fraction=1.0).sum().backward()
    y = logp.clone().requires_grad_()
    ppo_clip(y, logp, adv, mask).sum().backward()
    close(x.grad, y.grad)
    stats: dict = {}
    capo(logp, old, adv, mask, capo_fraction=1.0, stats=stats)
    assert 0 < stats["capo_masked_frac"] <= 1
    with pytest.raises(KnobError, match="capo_fraction"):
        OBJECTIVES.check_knobs("capo", {"capo_fraction": 1.5})


def _loop_group_adv(vals: dict, scale: str, eps: float) -> dict:
    """{(b, key, i): x} -> (x - mean) / F within each (b, key); 0 for one member or equal values."""
    out = {}
    for bk in {(b, key) for b, key, _ in vals}:
        members = {i: x for (b, key, i), x in vals.items() if (b, key) == bk}
        xs = list(members.values())
        mean = sum(xs) / len(xs)
        for i, x in members.items():
            if len(xs) < 2 or max(xs) == min(xs):
                out[(*bk, i)] = 0.0
            elif scale == "group":
                std = math.sqrt(sum((y - mean) ** 2 for y in xs) / (len(xs) - 1))
                out[(*bk, i)] = (x - mean) / (std + eps)
            else:
                out[(*bk, i)] = x - mean
    return out


def _loop_hiper(rewards, turn, tr, h, gamma, scale, eps):
    """hiper by plain loops over rows, subgoals and turns."""
    b, g = rewards.shape
    k_i = [int(turn[i].max()) for i in range(b * g)]
    hi_vals, lo_vals = {}, {}
    for i in range(b * g):
        r = [float(tr[i, k]) for k in range(k_i[i])]
        subs = [sum(r[j * h : (j + 1) * h]) for j in range(math.ceil(k_i[i] / h))]
        for j in range(len(subs)):
            hi_vals[(i // g, j, i)] = sum(gamma ** (jp - j) * subs[jp] for jp in range(j, len(subs)))
        for k in range(k_i[i]):
            end = min((k // h + 1) * h, k_i[i])
            lo_vals[(i // g, k, i)] = sum(gamma ** (kp - k) * r[kp] for kp in range(k, end))
    hi_adv, lo_adv = _loop_group_adv(hi_vals, scale, eps), _loop_group_adv(lo_vals, scale, eps)
    ep = grpo(rewards, eps=eps, scale=scale).masked_fill(
        (rewards == rewards[:, :1]).all(1, keepdim=True), 0
    )
    out = torch.zeros(turn.shape, dtype=torch.float64)
    for i in range(b * g):
        for t in range(turn.shape[1]):
            k = int(turn[i, t])
            if k > 0:
                out[i, t] = (
                    float(ep.reshape(-1)[i])
                    + hi_adv[(i // g, (k - 1) // h, i)]
                    + lo_adv[(i // g, k - 1, i)]
                )
    return out.float()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("h", "scale"), [(1, "group"), (2, "none"), (3, "group")])
def test_hiper_equals_a_plain_loop_on_random_episodes(seed, h, scale):
    from tests.algos.test_credit_turns import _random_episodes

    r, mask, turn, tr, _ = _random_episodes(seed)
    out = hiper(r, mask, turn=turn, turn_rewards=tr, turns_per_subgoal=h, gamma=0.8, scale=scale)
    close(out, _loop_hiper(r, turn, tr, h, 0.8, scale, 1e-6), atol=1e-5, rtol=1e-5)
