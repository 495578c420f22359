"""advantage:rep_bonus: the representation-based exploration bonus by hand, vectorised == a loop,
the neutral setting (grpo), clear errors, and the trainer's seq_hidden input in a real run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import micro_run

from rlvr.algos import ADVANTAGES
from rlvr.algos.advantages import grpo, rep_bonus_of
from rlvr.rollout.logprobs import pooled_hidden, sequence_hidden
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

rep_bonus = ADVANTAGES["rep_bonus"]


def _aab():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])  # orthogonal, any length
    return torch.stack([a, a, b])[None]  # [1, 3, 3]


def test_bonus_by_hand():
    h = _aab()
    # elliptical, ridge 1: a against {a, b}: Sigma = I + aa' + bb', a' Sigma^-1 a = 1/2;
    # b against {a, a}: Sigma = I + 2 aa', b' Sigma^-1 b = 1 (b is orthogonal to both)
    s = 0.5**0.5
    torch.testing.assert_close(rep_bonus_of(h, ridge=1.0), torch.tensor([[s, s, 1.0]]))
    # ridge 2: a: Sigma = 2I + aa' + bb' -> 1/3; b: Sigma = 2I + 2aa' -> 1/2
    torch.testing.assert_close(
        rep_bonus_of(h, ridge=2.0), torch.tensor([[(1 / 3) ** 0.5, (1 / 3) ** 0.5, s]])
    )
    # distance: a - (a + b)/2 has norm sqrt(2)/2; b - a has norm sqrt(2)
    torch.testing.assert_close(
        rep_bonus_of(h, kind="distance"), torch.tensor([[s, s, 2**0.5]]), rtol=1e-6, atol=1e-6
    )
    # the advantage: grpo + coef * the bonus centred in its group
    r = torch.tensor([[1.0, 0.0, 0.0]])
    adv = rep_bonus(r, seq_hidden=h, rep_coef=0.5, rep_ridge=1.0)
    bonus = torch.tensor([[s, s, 1.0]])
    torch.testing.assert_close(adv, grpo(r) + 0.5 * (bonus - bonus.mean()))
    assert adv[0, 2] > grpo(r)[0, 2]  # the odd one out gains
    torch.testing.assert_close(adv.sum(), torch.tensor(0.0), atol=1e-6, rtol=0)


def _loop(h, ridge):
    b, g, d = h.shape
    out = torch.zeros(b, g, dtype=torch.float64)
    for i in range(b):
        phi = torch.nn.functional.normalize(h[i].double(), dim=-1)
        for j in range(g):
            sigma = ridge * torch.eye(d, dtype=torch.float64)
            for k in range(g):
                if k != j:
                    sigma += torch.outer(phi[k], phi[k])
            out[i, j] = (phi[j] @ torch.linalg.solve(sigma, phi[j])).sqrt()
    return out.float()


def test_vectorised_equals_the_plain_loop():
    torch.manual_seed(0)
    h = torch.randn(3, 5, 8)  # [B, G, D] with D > G
    torch.testing.assert_close(rep_bonus_of(h, ridge=0.3), _loop(h, 0.3), rtol=1e-5, atol=1e-6)
    h = torch.randn(2, 6, 3)  # D < G: the others span the space
    torch.testing.assert_close(rep_bonus_of(h, ridge=0.5), _loop(h, 0.5), rtol=1e-5, atol=1e-6)
    # permuting a group permutes its bonuses; the scale of a hidden state does not matter
    perm = torch.tensor([2, 0, 5, 1, 4, 3])
    torch.testing.assert_close(rep_bonus_of(h[:, perm]), rep_bonus_of(h)[:, perm])
    torch.testing.assert_close(rep_bonus_of(h * 7.0), rep_bonus_of(h))


def test_neutral_setting_and_edge_cases():
    torch.manual_seed(1)
    r = torch.rand(4, 6)
    h = torch.randn(4, 6, 5)
    assert torch.equal(rep_bonus(r, seq_hidden=h, rep_coef=0.0), grpo(r))
    assert torch.equal(rep_bonus(r, rep_coef=0.0), grpo(r))  # coef 0 needs no hidden states
    # identical representations: every bonus equal, nothing added
    same = torch.randn(1, 1, 5).expand(4, 6, 5)
    torch.testing.assert_close(rep_bonus(r, seq_hidden=same, rep_coef=2.0), grpo(r))
    # a constant group still gets the (centred) bonus: exploration where grpo has no signal
    adv = rep_bonus(torch.zeros(1, 3), seq_hidden=_aab(), rep_coef=1.0)
    assert adv[0, 2] > 0 > adv[0, 0] and float(adv.sum().abs()) < 1e-6
    assert torch.equal(rep_bonus_of(torch.randn(2, 1, 4)), torch.zeros(2, 1))  # G = 1


def test_bad_inputs_are_refused():
    r = torch.rand(2, 3)
    with pytest.raises(ValueError, match="needs seq_hidden"):
        rep_bonus(r, rep_coef=1.0)
    with pytest.raises(ValueError, match="does not match"):
        rep_bonus(r, seq_hidden=torch.randn(3, 2, 4), rep_coef=1.0)
    with pytest.raises(ValueError, match="rep_kind"):
        rep_bonus(r, seq_hidden=torch.randn(2, 3, 4), rep_coef=1.0, rep_kind="cosine")
    with pytest.raises(ConfigError, match="rep_ridge"):
        load_config("rep_bonus", ["algo.rep_ridge=0.0"])
    with pytest.raises(ConfigError, match="rep_coef"):
        load_config("rep_bonus", ["algo.rep_coef=-1.0"])


def test_pooled_hidden_is_the_mean_state_after_each_token(micro_model):
    model, _ = micro_model
    prompt = torch.tensor([[0, 5, 6], [7, 8, 9]])
    pmask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    comp = torch.tensor([[3, 4, 0], [3, 3, 3]])
    cmask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        after = sequence_hidden(model, prompt, pmask, comp, cmask, after=True)  # [N, T, H]
        before = sequence_hidden(model, prompt, pmask, comp, cmask)  # [N, T, H]
        pooled = pooled_hidden(model, prompt, pmask, comp, cmask)  # [N, H]
    torch.testing.assert_close(after[:, :-1][cmask[:, 1:].bool()], before[:, 1:][cmask[:, 1:].bool()])
    torch.testing.assert_close(pooled[0], after[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], after[1].mean(0))


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_in_a_run_coef_zero_trains_exactly_as_grpo(micro_base, tmp_path, dense_reward):
    run = ["train.steps=2", "eval.before=false", "eval.after=false", "optim.lr=1e-3", *dense_reward]
    train(load_config("grpo", micro_run(micro_base, *run)), run_dir=tmp_path / "g", progress=False)
    over = micro_run(micro_base, *run, "algo.advantage='rep_bonus'", "algo.rep_coef=0.0")
    train(load_config("grpo", over), run_dir=tmp_path / "z", progress=False)
    over = micro_run(micro_base, *run, "algo.advantage='rep_bonus'", "algo.rep_coef=1.0")
    train(load_config("grpo", over), run_dir=tmp_path / "r", progress=False)
    g, z, r = _metrics(tmp_path / "g"), _metrics(tmp_path / "z"), _metrics(tmp_path / "r")
    for key in ("loss", "grad_norm", "reward_mean"):
        assert [x[key] for x in z] == [x[key] for x in g]
    assert all(math.isfinite(x["loss"]) for x in r)
    assert r[0]["reward_mean"] == g[0]["reward_mean"] and r[0]["loss"] != g[0]["loss"]
