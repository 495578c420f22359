"""Credit over the turns of multi-turn episodes (gigpo_turns, turn_grpo): hand values on a hand-built
group of episodes, reductions, gamma, plain-loop references on random episodes, validation."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algos import INPUTS
from rlvr.algos.advantages import dr_grpo, grpo
from rlvr.algos.credit import CREDIT, gigpo_turns, turn_grpo
from rlvr.registry import KnobError

close = torch.testing.assert_close

# One group (B = 1, G = 3) of episodes over T = 10 tokens; 1, 2, 3 = model turn, 0 = env token or pad.
#   row 0: three turns, states 1 -> 2 -> 1 (comes back to state 1), env rewards 0, 0, 1
#   row 1: two turns,   states 1 -> 2,                                env rewards 0, 1
#   row 2: two turns,   states 1 -> 3,                                env rewards 1, 0
TURN = torch.tensor(
    [
        [1, 1, 0, 0, 2, 0, 3, 3, 0, 0],
        [1, 0, 0, 2, 2, 2, 0, 0, 0, 0],
        [1, 1, 1, 0, 2, 0, 0, 0, 0, 0],
    ]
)
MASK = (TURN > 0).float()  # [3, 10]
TURN_R = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # [3, 3]
STATES = torch.tensor([[1, 2, 1], [1, 2, 0], [1, 3, 0]])  # [3, 3]
R = torch.tensor([[1.0, 2.0, 0.0]])  # [1, 3] episode rewards: mean 1, unbiased std 1


def _spread(per_turn: list[list[float]], turn: torch.Tensor = TURN) -> torch.Tensor:
    """[N, T] the value of turn k on the tokens of turn k, 0 elsewhere."""
    out = torch.zeros(turn.shape)
    for i, vals in enumerate(per_turn):
        for k, v in enumerate(vals, start=1):
            out[i][turn[i] == k] = v
    return out


def _kw(**extra):
    return {"turn": TURN, "turn_rewards": TURN_R, "turn_states": STATES, **extra}


# ---------------------------------------------------------------- hand values


def test_gigpo_turns_hand_values_none():
    # gamma = .5: returns R_{i,k}: row 0 (.25, .5, 1), row 1 (.5, 1), row 2 (1, 0)
    # anchor state 1: visits (0,1) .25, (0,3) 1, (1,1) .5, (2,1) 1 -> mean .6875
    #   A^S = -.4375, .3125, -.1875, .3125
    # anchor state 2: (0,2) .5, (1,2) 1 -> mean .75 -> A^S = -.25, .25
    # anchor state 3: (2,2) alone -> 0
    # A^E (none) = R - 1 = 0, 1, -1
    step = [[-0.4375, -0.25, 0.3125], [-0.1875, 0.25], [0.3125, 0.0]]
    episode = [0.0, 1.0, -1.0]
    out = gigpo_turns(R, MASK, **_kw(gamma=0.5, scale="none"))
    want = _spread([[e + s for s in row] for e, row in zip(episode, step, strict=True)])
    close(out, want)
    # omega weights the step level only
    out = gigpo_turns(R, MASK, **_kw(gamma=0.5, scale="none", omega=0.5))
    close(out, _spread([[e + 0.5 * s for s in row] for e, row in zip(episode, step, strict=True)]))


def test_gigpo_turns_hand_values_group():
    # state 1: deviations (-.4375, .3125, -.1875, .3125), unbiased var .421875 / 3 = .140625, std .375
    #   -> A^S = -7/6, 5/6, -1/2, 5/6
    # state 2: deviations -.25, .25, std .25 * sqrt(2) -> A^S = -/+ 1/sqrt(2)
    # A^E = (R - 1) / 1
    h = 1 / math.sqrt(2)
    want = _spread([[-7 / 6, -h, 5 / 6], [1 - 0.5, 1 + h], [-1 + 5 / 6, -1.0]])
    close(gigpo_turns(R, MASK, **_kw(gamma=0.5, eps=0.0)), want)
    # the default eps = 1e-6 changes it only slightly
    close(gigpo_turns(R, MASK, **_kw(gamma=0.5)), want, atol=1e-5, rtol=1e-5)


def test_turn_grpo_hand_values():
    # gamma = .5, per-turn baselines over the rows that reached turn k:
    # k = 1: (.25, .5, 1), mean 7/12 -> -1/3, -1/12, 5/12
    # k = 2: (.5, 1, 0), mean .5 -> 0, .5, -.5
    # k = 3: row 0 alone -> 0
    step = [[-1 / 3, 0.0, 0.0], [-1 / 12, 0.5], [5 / 12, -0.5]]
    episode = [0.0, 1.0, -1.0]
    kw = {"turn": TURN, "turn_rewards": TURN_R, "gamma": 0.5, "scale": "none"}
    close(
        turn_grpo(R, MASK, **kw),
        _spread([[e + s for s in row] for e, row in zip(episode, step, strict=True)]),
    )
    close(turn_grpo(R, MASK, **kw, episode_coef=0.0), _spread(step))
    close(
        turn_grpo(R, MASK, **kw, episode_coef=2.0),
        _spread([[2 * e + s for s in row] for e, row in zip(episode, step, strict=True)]),
    )
    # "group": k = 1 std of (.25, .5, 1) is sqrt(7/48); k = 2 std of (.5, 1, 0) is .5
    s1 = math.sqrt(7 / 48)
    step_g = [[-1 / 3 / s1, 0.0, 0.0], [-1 / 12 / s1, 1.0], [5 / 12 / s1, -1.0]]
    close(
        turn_grpo(R, MASK, turn=TURN, turn_rewards=TURN_R, gamma=0.5, eps=0.0, episode_coef=0.0),
        _spread(step_g),
    )


# ---------------------------------------------------------------- gamma


def test_gamma_zero_uses_the_immediate_reward():
    # returns = turn rewards: state 1 visits (0, 1, 0, 1) -> -/+ .5; state 2 (0, 1) -> -/+ .5
    out = gigpo_turns(R, MASK, **_kw(gamma=0.0, scale="none", omega=1.0))
    step = [[-0.5, -0.5, 0.5], [-0.5, 0.5], [0.5, 0.0]]
    close(out, _spread([[e + s for s in row] for e, row in zip([0, 1, -1], step, strict=True)]))


def test_gamma_one_sums_the_rewards_ahead_and_equal_returns_give_zero():
    # gamma = 1: every visit of states 1 and 2 returns 1 (equal) and state 3 is alone -> A^S = 0
    episode = _spread([[0.0] * 3, [1.0] * 2, [-1.0] * 2])
    close(gigpo_turns(R, MASK, **_kw(gamma=1.0)), episode, atol=1e-5, rtol=0)
    assert torch.equal(gigpo_turns(R, MASK, **_kw(gamma=1.0, scale="none")), episode)
    # turn_grpo: k = 1 returns (1, 1, 1) -> 0; k = 2 (1, 1, 0) -> 1/3, 1/3, -2/3
    out = turn_grpo(R, MASK, turn=TURN, turn_rewards=TURN_R, gamma=1.0, scale="none", episode_coef=0)
    close(out, _spread([[0.0, 1 / 3, 0.0], [0.0, 1 / 3], [0.0, -2 / 3]]))


def test_gamma_discounts_later_rewards():
    # one reward of 1 after turn 3 of a 3-turn episode: R_{i,1} = gamma^2 against a 1-turn episode
    # with return 0 in the same state; A^S (none) = +/- gamma^2 / 2
    turn = torch.tensor([[1, 2, 3], [1, 0, 0]])
    mask = (turn > 0).float()
    tr = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    st = torch.tensor([[5, 6, 7], [5, 0, 0]])
    for gamma in (0.0, 0.3, 0.9, 1.0):
        out = gigpo_turns(
            torch.zeros(1, 2),
            mask,
            turn=turn,
            turn_rewards=tr,
            turn_states=st,
            gamma=gamma,
            scale="none",
        )
        close(out[:, 0], torch.tensor([gamma**2 / 2, -(gamma**2) / 2]))


# ---------------------------------------------------------------- reductions and invariants


def test_omega_zero_is_the_episode_advantage_on_model_tokens():
    for seed in range(3):
        r, mask, turn, tr, st = _random_episodes(seed)
        out = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st, omega=0.0)
        assert torch.equal(out, grpo(r).reshape(-1, 1) * mask)
        out = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st, omega=0.0, scale="none")
        close(out, dr_grpo(r).reshape(-1, 1) * mask)


def test_zero_on_env_tokens_and_padding():
    r, mask, turn, tr, st = _random_episodes(5)
    for out in (
        gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st),
        turn_grpo(r, mask, turn=turn, turn_rewards=tr),
    ):
        assert out.shape == mask.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        assert torch.equal(out * (turn == 0), torch.zeros_like(out))
    # a model turn left out of the loss (mask 0, turn > 0) gets 0 too, and changes nothing else
    dropped = mask.clone()
    dropped[turn == 1] = 0.0
    out = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st)
    part = gigpo_turns(r, dropped, turn=turn, turn_rewards=tr, turn_states=st)
    assert torch.equal(part, out * dropped)


def test_inputs_beyond_the_last_turn_are_ignored():
    r, mask, turn, tr, st = _random_episodes(6)
    k_i = turn.amax(1, keepdim=True)  # [N, 1]
    beyond = torch.arange(1, tr.shape[1] + 1) > k_i  # [N, K]
    junk_r = torch.where(beyond, 9.0, tr)
    junk_s = torch.where(beyond, 1, st)
    for gamma in (0.5, 1.0):
        a = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st, gamma=gamma)
        b = gigpo_turns(r, mask, turn=turn, turn_rewards=junk_r, turn_states=junk_s, gamma=gamma)
        assert torch.equal(a, b)
        a = turn_grpo(r, mask, turn=turn, turn_rewards=tr, gamma=gamma)
        assert torch.equal(a, turn_grpo(r, mask, turn=turn, turn_rewards=junk_r, gamma=gamma))


def test_state_ids_are_labels_only():
    # 62-bit hashes in place of small ids, one-to-one: the same anchors, the same advantages
    r, mask, turn, tr, st = _random_episodes(7)
    big = torch.where(st > 0, st * 0x0F3A_5C7E_9B1D_2468 % (1 << 62) + 1, 0)
    assert big.max() > 2**40
    a = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st)
    assert torch.equal(a, gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=big))


def test_rows_permuted_within_a_group():
    r, mask, turn, tr, st = _random_episodes(8, b=2, g=4)
    perm = torch.tensor([2, 0, 3, 1, 5, 7, 4, 6])  # within each group of 4
    a = gigpo_turns(r, mask, turn=turn, turn_rewards=tr, turn_states=st, scale="none")
    b = gigpo_turns(
        r.reshape(-1)[perm].view(2, 4),
        mask[perm],
        turn=turn[perm],
        turn_rewards=tr[perm],
        turn_states=st[perm],
        scale="none",
    )
    close(b, a[perm])


def test_equal_state_ids_in_different_groups_are_different_anchors():
    # two groups with the very same state ids: each group's advantages are those it gets alone
    r1, m1, t1, tr1, st1 = _random_episodes(9, b=1, g=4)
    r2, m2, t2, tr2, st2 = _random_episodes(10, b=1, g=4)
    assert set(st1[st1 > 0].tolist()) & set(st2[st2 > 0].tolist())
    k = max(tr1.shape[1], tr2.shape[1])

    def pad(x):
        return torch.nn.functional.pad(x, (0, k - x.shape[1]))

    both = gigpo_turns(
        torch.cat([r1, r2]),
        torch.cat([m1, m2]),
        turn=torch.cat([t1, t2]),
        turn_rewards=torch.cat([pad(tr1), pad(tr2)]),
        turn_states=torch.cat([pad(st1), pad(st2)]),
    )
    close(both[:4], gigpo_turns(r1, m1, turn=t1, turn_rewards=tr1, turn_states=st1))
    close(both[4:], gigpo_turns(r2, m2, turn=t2, turn_rewards=tr2, turn_states=st2))


def test_turn_grpo_is_gigpo_turns_with_the_turn_index_as_state():
    r, mask, turn, tr, st = _random_episodes(11)
    k_i = turn.amax(1, keepdim=True)  # [N, 1]
    idx = torch.arange(1, tr.shape[1] + 1).expand_as(st)  # [N, K]
    by_index = torch.where(idx <= k_i, idx, 0)
    for scale in ("group", "none"):
        close(
            turn_grpo(r, mask, turn=turn, turn_rewards=tr, scale=scale, gamma=0.8),
            gigpo_turns(
                r, mask, turn=turn, turn_rewards=tr, turn_states=by_index, scale=scale, gamma=0.8
            ),
        )


# ---------------------------------------------------------------- vectorised == plain loop


def _random_episodes(seed: int, b: int = 3, g: int = 4, t: int = 24, k: int = 4, states: int = 3):
    """Random episodes: 0..k model turns of 1-3 tokens, 0-2 env tokens after each, right padding;
    states from a small set shared by every group (collisions within and across groups), turn
    rewards in {0, 1, 2} (ties) and episode rewards in {0, 1, 2}."""
    gen = torch.Generator().manual_seed(seed)

    def ri(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    n = b * g
    turn = torch.zeros(n, t, dtype=torch.long)  # [N, T]
    tr = torch.zeros(n, k)  # [N, K]
    st = torch.zeros(n, k, dtype=torch.long)  # [N, K]
    for i in range(n):
        pos = ri(0, 2)  # leading env tokens (the observation echoed)
        for kk in range(1, ri(0, k) + 1):
            need = ri(1, 3)
            if pos + need > t:
                break
            turn[i, pos : pos + need] = kk
            tr[i, kk - 1] = ri(0, 2)
            st[i, kk - 1] = ri(1, states)
            pos += need + ri(0, 2)
    rewards = torch.randint(0, 3, (b, g), generator=gen).float()  # [B, G]
    return rewards, (turn > 0).float(), turn, tr, st


def _loop_returns(tr, k_i, gamma):
    return [
        [sum(gamma ** (kp - kk) * float(tr[i, kp]) for kp in range(kk, k_i[i])) for kk in range(k_i[i])]
        for i in range(tr.shape[0])
    ]


def _loop_anchor(ret, key, i, kk, scale, eps):
    """(R_{i,k} - mean_S) / F_S with S = every visit whose key equals key[i][kk]."""
    vals = [ret[j][kp] for j in range(len(ret)) for kp in range(len(ret[j])) if key[j][kp] == key[i][kk]]
    if len(vals) < 2 or max(vals) == min(vals):
        return 0.0
    mean = sum(vals) / len(vals)
    dev = ret[i][kk] - mean
    if scale == "none":
        return dev
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return dev / (std + eps)


def _loop(r, turn, tr, st, g, gamma, scale, eps, omega, by_turn):
    n, t = turn.shape
    k_i = [int(turn[i].max()) for i in range(n)]
    ret = _loop_returns(tr, k_i, gamma)
    if by_turn:  # turn_grpo: the anchor of (i, k) is (group, k)
        key = [[(i // g, kk) for kk in range(k_i[i])] for i in range(n)]
    else:
        key = [[(i // g, int(st[i, kk])) for kk in range(k_i[i])] for i in range(n)]
    episode = (grpo(r, eps=eps) if scale == "group" else dr_grpo(r)).reshape(-1)
    out = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        for pos in range(t):
            kk = int(turn[i, pos])
            if kk > 0:
                step = _loop_anchor(ret, key, i, kk - 1, scale, eps)
                out[i, pos] = float(episode[i]) + omega * step
    return out


@pytest.mark.parametrize("seed", range(6))
def test_gigpo_turns_equals_loop(seed):
    b, g = (1, 3) if seed == 0 else (3, 4)
    r, mask, turn, tr, st = _random_episodes(seed, b=b, g=g)
    gamma = [0.0, 0.5, 0.95, 1.0, 0.7, 0.3][seed]
    scale = "none" if seed % 2 else "group"
    omega = 0.6
    out = gigpo_turns(
        r, mask, turn=turn, turn_rewards=tr, turn_states=st, gamma=gamma, scale=scale, omega=omega
    )
    want = _loop(r, turn, tr, st, g, gamma, scale, 1e-6, omega, by_turn=False)
    close(out, want.float() * mask)


@pytest.mark.parametrize("seed", range(4))
def test_turn_grpo_equals_loop(seed):
    r, mask, turn, tr, _ = _random_episodes(100 + seed, b=3, g=5)
    gamma = [0.0, 0.5, 0.95, 1.0][seed]
    scale = "none" if seed % 2 else "group"
    out = turn_grpo(r, mask, turn=turn, turn_rewards=tr, gamma=gamma, scale=scale, episode_coef=0.4)
    # turn_grpo = 0.4 A^E + A^T; the loop gives A^E + omega A^T, so scale by 1/0.4 with omega 1/0.4
    want = 0.4 * _loop(r, turn, tr, None, 5, gamma, scale, 1e-6, 1 / 0.4, by_turn=True)
    close(out, want.float() * mask)


# ---------------------------------------------------------------- registry and validation


def test_registry_entries():
    assert CREDIT["gigpo_turns"] is gigpo_turns and CREDIT["turn_grpo"] is turn_grpo
    assert CREDIT.needs("gigpo_turns") == {"turn", "turn_rewards", "turn_states"}
    assert CREDIT.needs("turn_grpo") == {"turn", "turn_rewards"}
    assert CREDIT.needs("gigpo_turns") <= INPUTS["credit"]
    assert CREDIT.needs("turn_grpo") <= INPUTS["credit"]
    assert CREDIT.knobs("gigpo_turns") == {"omega": 1.0, "gamma": 0.95, "scale": "group", "eps": 1e-6}
    assert CREDIT.knobs("turn_grpo") == {
        "gamma": 0.95,
        "episode_coef": 1.0,
        "scale": "group",
        "eps": 1e-6,
    }
    CREDIT.check_knobs("gigpo_turns", {"omega": 0.0, "gamma": 1.0, "scale": "none"})


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("gigpo_turns", {"omega": -0.1}),
        ("gigpo_turns", {"gamma": 1.5}),
        ("gigpo_turns", {"scale": "batch"}),
        ("gigpo_turns", {"eps": -1.0}),
        ("turn_grpo", {"gamma": -0.1}),
        ("turn_grpo", {"episode_coef": -1.0}),
        ("turn_grpo", {"scale": "batch"}),
    ],
)
def test_bad_knobs_are_refused(name, knobs):
    with pytest.raises(KnobError):
        CREDIT.check_knobs(name, knobs)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"turn": None}, "gigpo_turns needs 'turn'"),
        ({"turn_rewards": None}, "gigpo_turns needs 'turn_rewards'"),
        ({"turn_states": None}, "gigpo_turns needs 'turn_states'"),
        ({"turn": TURN[:, :5]}, r"turn must have the shape of mask \(3, 10\)"),
        ({"turn": TURN.float()}, "turn must hold integers"),
        ({"turn_rewards": TURN_R[:2]}, r"turn_rewards must have shape \[N, K\] with N = 3"),
        ({"turn_rewards": TURN_R[:, 0]}, r"turn_rewards must have shape \[N, K\]"),
        ({"turn_rewards": TURN_R[:, :2]}, "turn 3 at row 0, position 6 has no column"),
        ({"turn_states": STATES[:, :2]}, "turn_states must have the shape of turn_rewards"),
        ({"turn_states": STATES.float()}, "turn_states must hold integers"),
        ({"turn_states": torch.tensor([[1, 2, 1], [1, 0, 0], [1, 3, 0]])}, "row 1, turn 2"),
        ({"turn": torch.where(TURN == 2, -1, TURN)}, "turn must be >= 0, got -1 at row 0, position 4"),
        (
            {"turn_rewards": torch.tensor([[0.0, 0.0, 1.0], [0.0, math.nan, 0.0], [1.0, 0.0, 0.0]])},
            "turn_rewards must be finite, got nan at row 1, turn 2",
        ),
        ({"scale": "batch"}, "scale must be 'group' or 'none'"),
    ],
)
def test_gigpo_turns_refuses_bad_inputs(change, match):
    with pytest.raises(ValueError, match=match):
        gigpo_turns(R, MASK, **{**_kw(), **change})


def test_counted_token_outside_a_model_turn_is_refused():
    mask = MASK.clone()
    mask[0, 2] = 1.0  # an env token counted in the loss
    with pytest.raises(ValueError, match="mask is 1 at row 0, position 2 where turn is 0"):
        gigpo_turns(R, mask, **_kw())
    with pytest.raises(ValueError, match="mask is 1 at row 0, position 2 where turn is 0"):
        turn_grpo(R, mask, turn=TURN, turn_rewards=TURN_R)


def test_turn_grpo_refuses_bad_inputs():
    with pytest.raises(ValueError, match="turn_grpo needs 'turn'"):
        turn_grpo(R, MASK, turn_rewards=TURN_R)
    with pytest.raises(ValueError, match="turn_grpo needs 'turn_rewards'"):
        turn_grpo(R, MASK, turn=TURN)
    with pytest.raises(ValueError, match=r"rewards \(1, 2\) has 2 completions but mask has 3 rows"):
        turn_grpo(R[:, :2], MASK, turn=TURN, turn_rewards=TURN_R)


def test_episodes_without_turns():
    # a row with no model turn gets nothing and still counts in the episode baseline; K = 0 works
    turn = TURN.clone()
    turn[2] = 0
    out = gigpo_turns(R, (turn > 0).float(), **{**_kw(), "turn": turn, "gamma": 0.5, "scale": "none"})
    assert torch.equal(out[2], torch.zeros(10))
    # state 3 is no longer visited; states 1 and 2 lose row 2's visit: state 1 (.25, 1, .5)
    m1 = (0.25 + 1 + 0.5) / 3
    close(out[:2], _spread([[0.25 - m1, -0.25, 1 - m1], [1 + 0.5 - m1, 1.25]], turn[:2]))
    empty = torch.zeros(3, 10, dtype=torch.long)
    none = gigpo_turns(
        R,
        torch.zeros(3, 10),
        turn=empty,
        turn_rewards=torch.zeros(3, 0),
        turn_states=torch.zeros(3, 0, dtype=torch.long),
    )
    assert torch.equal(none, torch.zeros(3, 10))
    assert torch.equal(
        turn_grpo(R, torch.zeros(3, 10), turn=empty, turn_rewards=torch.zeros(3, 0)), torch.zeros(3, 10)
    )
