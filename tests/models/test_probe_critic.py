"""critic.kind = 'probe' (POISE): a linear head on the policy's own hidden states as the critic.

The features by hand (the output head's inputs), the probe's values and its fit on synthetic
features, a real run with credit:gae (also with one rollout per prompt), and an exact resume with
the probe and its optimizer in the checkpoint.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import completion_logits, micro_run

from rlvr.algos.credit import value_loss
from rlvr.models.critic import ProbeValue, ValueModel, build_critic
from rlvr.rollout.logprobs import sequence_hidden
from rlvr.train.checkpoint import latest_checkpoint
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train


class TableLM(torch.nn.Module):
    """A stand-in policy whose last hidden state at a position is a fixed vector of its token id."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table  # [V, H]
        self.config = SimpleNamespace(hidden_size=table.shape[1])

    @property
    def base_model(self) -> TableLM:
        return self

    def forward(self, input_ids, attention_mask, position_ids, use_cache):
        return SimpleNamespace(last_hidden_state=self.table[input_ids])  # [N, L, H]


def _rows():
    prompt = torch.tensor([[0, 5, 6], [7, 8, 9]])  # [N, P] left-padded
    pmask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    comp = torch.tensor([[3, 4, 0], [3, 3, 3]])  # [N, T]
    cmask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return prompt, pmask, comp, cmask


def test_hidden_states_are_the_output_heads_inputs(micro_model):
    model, _ = micro_model
    prompt, pmask, comp, cmask = _rows()
    with torch.no_grad():
        h = sequence_hidden(model, prompt, pmask, comp, cmask)  # [N, T, H]
        logits = model.lm_head(h)  # [N, T, V]
    roll = SimpleNamespace(prompt_ids=prompt, prompt_mask=pmask, completion_ids=comp, attention=cmask)
    want = completion_logits(model, roll, 1.0)
    torch.testing.assert_close(logits[cmask.bool()], want[cmask.bool()], rtol=1e-4, atol=1e-4)
    assert h.shape == (2, 3, model.config.hidden_size) and torch.all(h[0, 2] == 0)
    # the state before completion token t sees the prompt and tokens < t only
    other = sequence_hidden(model, prompt, pmask, torch.tensor([[3, 1, 0], [3, 3, 2]]), cmask)
    torch.testing.assert_close(other[:, :2], h[:, :2])


def test_probe_values_by_hand_and_only_the_probe_is_trained():
    torch.manual_seed(0)
    table = torch.randn(10, 4)  # [V, H] the synthetic features
    probe = ProbeValue(TableLM(table))
    prompt, pmask, comp, cmask = _rows()
    assert torch.all(probe(prompt, pmask, comp, cmask) == 0)  # the head starts at zero
    w, b = torch.tensor([1.0, -2.0, 0.5, 3.0]), 0.25
    with torch.no_grad():
        probe.head.weight.copy_(w[None])
        probe.head.bias.fill_(b)
    v = probe(prompt, pmask, comp, cmask)  # [N, T]
    # V(s_t) reads the hidden state at position P - 1 + t: the last prompt token, then completion tokens
    before = torch.tensor([[6, 3, 4], [9, 3, 3]])  # [N, T] the token at position P - 1 + t
    want = (table[before] @ w + b) * cmask
    torch.testing.assert_close(v, want)
    assert set(probe.state_dict()) == {"head.weight", "head.bias"}  # the policy is not part of it
    assert [p.shape for p in probe.parameters()] == [torch.Size([1, 4]), torch.Size([1])]


def test_probe_fit_on_synthetic_features_recovers_the_linear_target():
    """Fitted with the value loss (clip 0), the probe's head reaches the least-squares solution."""
    torch.manual_seed(0)
    table = torch.randn(10, 4)  # [V, H]
    probe = ProbeValue(TableLM(table))
    prompt = torch.randint(0, 10, (32, 2))  # [N, P]
    comp = torch.randint(0, 10, (32, 5))  # [N, T]
    pmask, cmask = torch.ones_like(prompt), torch.ones(32, 5)
    w, b = torch.tensor([0.5, -1.0, 0.25, 2.0]), -0.5
    feats = sequence_hidden(probe._policy[0], prompt, pmask, comp, cmask)  # [N, T, 4]
    returns = feats @ w + b  # [N, T] realisable targets
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(600):
        v = probe(prompt, pmask, comp, cmask)
        loss = value_loss(v, v.detach(), returns, cmask, clip=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(probe.head.weight[0].detach(), w, atol=1e-3, rtol=0)
    torch.testing.assert_close(probe.head.bias.detach(), torch.tensor([b]), atol=1e-3, rtol=0)


def test_build_critic_and_bad_kind(micro_base, micro_model):
    model, _ = micro_model
    assert isinstance(build_critic("probe", base=micro_base, policy=model, device="cpu"), ProbeValue)
    assert isinstance(build_critic("model", base=micro_base, policy=model, device="cpu"), ValueModel)
    with pytest.raises(ValueError, match=r"critic\.kind"):
        build_critic("mlp", base=micro_base, policy=model, device="cpu")
    with pytest.raises(ConfigError, match=r"'critic\.kind'"):
        load_config("poise", ["critic.kind='mlp'"])
    # one sample per prompt needs a learned baseline: refused for grpo, accepted for the probe's gae
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_config("grpo", ["rollout.samples_per_prompt=1"])
    assert load_config("poise").rollout.samples_per_prompt == 1


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_probe_critic_trains_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    def cfg(steps, *extra):
        return load_config(
            "poise",
            micro_run(
                micro_base,
                "train.checkpoint_every=2",
                "optim.lr=1e-3",
                f"train.steps={steps}",
                "eval.before=false",
                "eval.after=false",
                *dense_reward,
                *extra,
            ),
        )

    train(cfg(3), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    assert all(math.isfinite(r["value_loss"]) for r in rows)
    assert rows[0]["value_mean"] == 0.0 and rows[2]["value_mean"] != 0.0  # the probe learns
    state = torch.load(latest_checkpoint(tmp_path / "a") / "trainer_state.pt", weights_only=False)
    assert set(state["critic"]) == {"head.weight", "head.bias"}  # the probe only, no backbone
    assert state["critic_optimizer"]["state"]  # its AdamW moments
    train(cfg(2), run_dir=tmp_path / "b", progress=False)
    train(cfg(3), run_dir=tmp_path / "b", resume=True, progress=False)
    resumed = _metrics(tmp_path / "b")
    for key in ("loss", "value_loss", "value_mean", "reward_mean"):
        assert resumed[2][key] == pytest.approx(rows[2][key], rel=1e-5, abs=1e-7)
    # one rollout per prompt (the recipe's own setting): the baseline is the probe's alone
    train(
        cfg(2, "rollout.samples_per_prompt=1", "rollout.prompts_per_step=4"),
        run_dir=tmp_path / "c",
        progress=False,
    )
    one = _metrics(tmp_path / "c")
    assert [r["step"] for r in one] == [1, 2] and all(math.isfinite(r["loss"]) for r in one)
    assert one[1]["value_mean"] != 0.0


def test_probe_values_are_gae_baselines():
    """With gamma = lam = 1 gae's advantage is R - V(s_t), V the probe's values."""
    from rlvr.algos.credit import gae

    rewards = torch.tensor([[1.0], [0.0]])  # [B, G = 1]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    values = torch.tensor([[0.25, 0.5, 0.0], [0.1, -0.2, 0.3]])
    adv, ret = gae(rewards, mask, values=values, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, (torch.tensor([[1.0], [0.0]]) - values) * mask)
    torch.testing.assert_close(ret, torch.tensor([[1.0], [0.0]]) * mask)
