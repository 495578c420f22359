"""The multi-turn episode runner: token layout, behaviour log-probs, budgets, batching, evaluation."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from rlvr.data.tasks import Problem
from rlvr.envs import build_env_task, make_env
from rlvr.envs.base import state_id
from rlvr.envs.episodes import ChatFormat, episode_metrics, evaluate_episodes, run_episodes
from rlvr.rollout.logprobs import sequence_logp

# --------------------------------------------------------------------------------------------------
# a scripted "model" (a bigram table: the next token depends on the last one only) and a scripted env


class _Cache:
    def reorder_cache(self, idx: torch.Tensor) -> None:
        pass


class BigramLM(torch.nn.Module):
    """logits(next | ..., last) = table[last]: greedy decoding follows ``table`` exactly."""

    def __init__(self, vocab: int, nxt: dict[int, int], *, peak: float = 3.0, max_pos: int = 256):
        super().__init__()
        table = torch.zeros(vocab, vocab)  # [V, V]
        for a, b in nxt.items():
            table[a, b] = peak
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=max_pos)

    def forward(self, input_ids, logits_to_keep=None, **_: Any):
        logits = self.table[input_ids]  # [B, L, V]
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=_Cache())


class ScriptedEnv:
    """Observation ``obs<k>`` after step k; done at step ``done_at`` with success; tool calls on odd
    steps (so the observation role is "tool" there)."""

    def __init__(self, done_at: int = 99, state: str | None = None) -> None:
        self.done_at, self.actions, self.state = done_at, [], state

    def reset(self, seed: int) -> str:
        self.actions = []
        return "hi"

    def step(self, action: str):
        self.actions.append(action)
        k = len(self.actions)
        info = {"tool_calls": k % 2, "tool_errors": 0, "state": f"s{k}"}
        if k >= self.done_at:
            return "", 1.0, True, {**info, "success": True}
        return f"obs{k}", 0.25, False, info


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _peak_logp(vocab: int, peak: float = 3.0) -> float:
    """log-prob of the favoured token of one table row: peak - log(e^peak + V - 1)."""
    return peak - math.log(math.exp(peak) + vocab - 1)


def test_masks_token_by_token_on_a_hand_built_episode(micro_model):
    _, tok = micro_model
    v = len(tok)
    asst, eos = tok.convert_tokens_to_ids("<|assistant|>"), tok.eos_token_id
    a = tok.convert_tokens_to_ids("<answer>")
    model = BigramLM(v, {asst: a, a: eos})  # every model turn is "<answer>" EOS
    env = ScriptedEnv(done_at=3)
    ep = run_episodes(
        model,
        tok,
        [env],
        [7],
        group=torch.tensor([0]),
        max_turns=5,
        max_new_tokens=4,
        max_episode_tokens=100,
        temperature=0.0,
    )
    # the observation turns, as the tiny model's chat template writes them
    obs1 = "<|tool|>obs1<|end|><|assistant|>"  # step 1 made a tool call
    obs2 = "<|user|>obs2<|end|><|assistant|>"
    assert ChatFormat(tok).observation("obs1", "tool") == obs1
    o1, o2 = _ids(tok, obs1), _ids(tok, obs2)
    expect_ids = [a, eos, *o1, a, eos, *o2, a, eos]
    expect_mask = [1, 1] + [0] * len(o1) + [1, 1] + [0] * len(o2) + [1, 1]
    expect_turn = [1, 1] + [0] * len(o1) + [2, 2] + [0] * len(o2) + [3, 3]
    r = ep.roll
    assert r.prompt_ids[0].tolist() == _ids(tok, "<|user|>hi<|end|><|assistant|>")
    assert r.prompt_mask[0].tolist() == [1] * r.prompt_ids.shape[1]
    assert r.completion_ids[0].tolist() == expect_ids
    assert r.mask[0].tolist() == expect_mask
    assert r.attn_mask[0].tolist() == [1.0] * len(expect_ids)
    assert r.attention is r.attn_mask
    assert ep.turn[0].tolist() == expect_turn
    lp = _peak_logp(v)
    expect_logp = [lp if m else 0.0 for m in expect_mask]
    assert r.old_logp[0].tolist() == pytest.approx(expect_logp, abs=1e-6)
    assert r.lengths.tolist() == [len(expect_ids)] and r.finish == ["eos"]
    assert env.actions == ["<answer>"] * 3
    assert ep.texts == ["<answer><|end|>" + obs1 + "<answer><|end|>" + obs2 + "<answer><|end|>"]
    assert ep.turns.tolist() == [3] and ep.success.tolist() == [1.0]
    assert ep.returns.tolist() == pytest.approx([1.5])
    assert ep.tool_calls.tolist() == [2] and ep.tool_errors.tolist() == [0]
    assert ep.tool_turns.tolist() == [2]
    assert ep.turn_rewards.tolist() == [pytest.approx([0.25, 0.25, 1.0, 0.0, 0.0])]
    # the state before turn 1 is the first observation's text (the env has no state key), then
    # info["state"] of the step before
    assert ep.turn_states.tolist() == [[state_id("hi"), state_id("s1"), state_id("s2"), 0, 0]]
    assert ep.actions == [["<answer>"] * 3]


def test_a_turn_cut_at_max_new_tokens_is_closed_by_an_env_eos(micro_model):
    _, tok = micro_model
    asst, eos = tok.convert_tokens_to_ids("<|assistant|>"), tok.eos_token_id
    a = tok.convert_tokens_to_ids("<answer>")
    model = BigramLM(len(tok), {asst: a, a: a})  # never stops by itself
    ep = run_episodes(
        model,
        tok,
        [ScriptedEnv(state="start")],
        [0],
        group=torch.tensor([0]),
        max_turns=2,
        max_new_tokens=3,
        max_episode_tokens=100,
        temperature=0.0,
    )
    o1 = _ids(tok, "<|tool|>obs1<|end|><|assistant|>")
    assert ep.roll.completion_ids[0].tolist() == [a, a, a, eos, *o1, a, a, a]
    assert ep.roll.mask[0].tolist() == [1, 1, 1, 0] + [0] * len(o1) + [1, 1, 1]
    assert ep.turn[0].tolist() == [1, 1, 1, 0] + [0] * len(o1) + [2, 2, 2]
    assert ep.roll.finish == ["turns"] and ep.turns.tolist() == [2]
    assert ep.turn_states[0].tolist() == [state_id("start"), state_id("s1")]  # env.state at reset


def test_episode_budget_ends_with_length_and_pads_rows(micro_model):
    _, tok = micro_model
    asst, eos = tok.convert_tokens_to_ids("<|assistant|>"), tok.eos_token_id
    a = tok.convert_tokens_to_ids("<answer>")
    model = BigramLM(len(tok), {asst: a, a: eos})
    n_obs = len(_ids(tok, "<|tool|>obs1<|end|><|assistant|>"))
    envs = [ScriptedEnv(done_at=1), ScriptedEnv(), ScriptedEnv()]
    budgets = [2 + n_obs + 2, 2 + n_obs]  # one more turn fits; the observation fits but no turn after
    ep = run_episodes(
        model,
        tok,
        envs,
        [0, 0, 0],
        group=torch.tensor([0, 1, 1]),
        max_turns=9,
        max_new_tokens=4,
        max_episode_tokens=budgets[0],
        temperature=0.0,
    )
    assert ep.roll.finish == ["eos", "length", "length"]
    assert ep.roll.lengths.tolist() == [2, budgets[0], budgets[0]]
    assert ep.turns.tolist() == [1, 2, 2]
    assert ep.roll.completion_ids[0, 2:].tolist() == [tok.pad_token_id] * (budgets[0] - 2)
    assert ep.roll.mask[0, 2:].sum() == 0 and ep.roll.attn_mask[0, 2:].sum() == 0
    assert ep.turn[0, 2:].sum() == 0 and ep.roll.group.tolist() == [0, 1, 1]
    ep = run_episodes(
        model,
        tok,
        [ScriptedEnv()],
        [0],
        group=torch.tensor([0]),
        max_turns=9,
        max_new_tokens=4,
        max_episode_tokens=budgets[1],
        temperature=0.0,
    )
    # the observation would leave no room for another turn: the episode ends before it
    assert ep.roll.finish == ["length"] and ep.roll.lengths.tolist() == [2] and ep.turns.tolist() == [1]
    # the model's context bounds the episode as well
    p = len(_ids(tok, "<|user|>hi<|end|><|assistant|>"))
    model = BigramLM(len(tok), {asst: a, a: a}, max_pos=p + 3)
    ep = run_episodes(
        model,
        tok,
        [ScriptedEnv()],
        [0],
        group=torch.tensor([0]),
        max_turns=9,
        max_new_tokens=8,
        max_episode_tokens=100,
        temperature=0.0,
    )
    assert ep.roll.lengths.tolist() == [3] and ep.roll.finish == ["length"]
    assert ep.turn_rewards[0].tolist() == [0.0] * 9  # cut by the budget: the env never stepped


def test_behaviour_logp_equals_sequence_logp_on_model_tokens(micro_model):
    model, tok = micro_model
    problems = build_env_task("gridworld", seed=3, heldout_seed=0, heldout_size=2).next(2)
    envs = [make_env(p, max_steps=4) for p in problems for _ in range(3)]
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        ep = run_episodes(
            model,
            tok,
            envs,
            [0] * 6,
            group=torch.arange(2).repeat_interleave(3),
            max_turns=4,
            max_new_tokens=6,
            max_episode_tokens=60,
            temperature=temperature,
            top_p=top_p,
            generator=torch.Generator().manual_seed(1),
        )
        r = ep.roll
        assert int(ep.turns.max()) >= 2  # really multi-turn, with env tokens inside the rows
        assert bool(((r.mask == 0) & (r.attn_mask == 1)).any())
        for share in (False, True):
            lp, _ = sequence_logp(
                model,
                r.prompt_ids,
                r.prompt_mask,
                r.completion_ids,
                r.attention,
                temperature=temperature,
                share_prompts=share,
            )
            assert torch.allclose(lp * r.mask, r.old_logp, atol=1e-5)
        assert bool((r.old_logp[r.mask == 0] == 0).all())


def test_batched_equals_one_at_a_time_when_greedy(micro_model):
    """Greedy decoding: the batched runner and one episode at a time give the same transcripts.
    (Sampling draws the random numbers of all live rows from one generator, row by row, so a batch
    and single episodes consume the stream in different orders: equal in law, not token for token.)"""
    model, tok = micro_model
    problems = build_env_task("gridworld", seed=1, heldout_seed=0, heldout_size=2).next(3)
    kw = dict(max_turns=3, max_new_tokens=5, max_episode_tokens=50, temperature=0.0)
    envs = [make_env(p) for p in problems for _ in range(2)]
    batched = run_episodes(model, tok, envs, [0] * 6, group=torch.arange(3).repeat_interleave(2), **kw)
    single = [
        run_episodes(model, tok, [make_env(p)], [0], group=torch.tensor([0]), **kw)
        for p in problems
        for _ in range(2)
    ]
    assert batched.texts == [s.texts[0] for s in single]
    assert batched.roll.finish == [s.roll.finish[0] for s in single]
    assert batched.turn_states.tolist() == [s.turn_states[0].tolist() for s in single]
    for i, s in enumerate(single):
        m = int(s.roll.lengths[0])
        assert torch.allclose(batched.roll.old_logp[i, :m], s.roll.old_logp[0, :m], atol=1e-5)


def test_run_episodes_validates_its_inputs(micro_model):
    model, tok = micro_model
    env = ScriptedEnv()
    kw = dict(max_turns=2, max_new_tokens=2, max_episode_tokens=10)
    with pytest.raises(ValueError, match="seeds"):
        run_episodes(model, tok, [env], [0, 1], group=torch.tensor([0]), **kw)
    with pytest.raises(ValueError, match="max_turns"):
        run_episodes(model, tok, [env], [0], group=torch.tensor([0]), **{**kw, "max_turns": 0})

    class LongEnv(ScriptedEnv):
        def reset(self, seed: int) -> str:
            return "1 " * 300

    with pytest.raises(ValueError, match=r"episode 0 is \d+ tokens"):
        run_episodes(model, tok, [LongEnv()], [0], group=torch.tensor([0]), **kw)


class OutcomeEnv(ScriptedEnv):
    """Done at the first step; success when the problem says so."""

    def __init__(self, ok: bool) -> None:
        super().__init__(done_at=1)
        self.ok = ok

    def step(self, action: str):
        return "", float(self.ok), True, {"success": self.ok}


def test_evaluate_episodes_counts_successes(micro_model):
    model, tok = micro_model
    problems = [Problem(f"q{i}", "", meta={"ok": i % 2 == 0, "seed": i}) for i in range(4)]
    seen: list[int] = []
    metrics: dict[str, float] = {}
    res = evaluate_episodes(
        model,
        tok,
        problems,
        lambda p: OutcomeEnv(p.meta["ok"]),
        n=4,
        max_turns=2,
        max_new_tokens=3,
        max_episode_tokens=20,
        temperature=1.0,
        top_p=1.0,
        seed=0,
        on_batch=seen.append,
        max_batch_episodes=8,
        metrics=metrics,
    )
    assert res.correct == [4, 0, 4, 0] and seen == [2, 2]
    assert res.pass_at == {1: 0.5, 2: 0.5, 4: 0.5}
    assert metrics["success_rate"] == 0.5 and metrics["turns_per_episode"] == 1.0
    assert metrics["finish_eos"] == 1.0 and math.isnan(metrics["tool_call_success"])
    assert 0 < res.mean_length <= 3 and res.entropy > 0


def test_episode_metrics_hand_values(micro_model):
    _, tok = micro_model
    asst, eos = tok.convert_tokens_to_ids("<|assistant|>"), tok.eos_token_id
    a = tok.convert_tokens_to_ids("<answer>")
    model = BigramLM(len(tok), {asst: a, a: eos})

    class Erring(ScriptedEnv):
        def step(self, action: str):
            obs, r, done, info = super().step(action)
            return obs, r, done, {**info, "tool_calls": 2, "tool_errors": 1}

    ep = run_episodes(
        model,
        tok,
        [ScriptedEnv(done_at=2), Erring(done_at=1)],
        [0, 0],
        group=torch.tensor([0, 1]),
        max_turns=4,
        max_new_tokens=3,
        max_episode_tokens=100,
        temperature=0.0,
    )
    m = episode_metrics(ep)
    # episode 0: turns 2, calls 1 (step 1), return 0.25 + 1; episode 1: turns 1, calls 2, errors 1
    assert m["turns_per_episode"] == 1.5 and m["tool_calls_per_episode"] == 1.5
    assert m["tool_call_success"] == pytest.approx(1 - 1 / 3)
    assert m["tool_turn_rate"] == pytest.approx(2 / 3)
    assert m["env_return"] == pytest.approx((1.25 + 1.0) / 2) and m["success_rate"] == 1.0
    assert m["model_tokens"] == 3.0
