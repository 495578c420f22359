"""The tool base model: calculator demonstrations, the recipe key, and a small build that learns the
tool-call format."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from rlvr.data.tasks import ReasoningGymTask
from rlvr.envs import build_env_task, make_env, run_episodes
from rlvr.envs.calculator import calculator_observation
from rlvr.envs.episodes import ChatFormat
from rlvr.envs.tools import parse_tool_calls
from rlvr.models.hf import load_model
from rlvr.models.tiny import (
    _CALC_MIX,
    EMBEDDED,
    TinyRecipe,
    _calculator_demo,
    _demo_ids,
    _demo_text,
    cache_dir,
    ensure_base,
)

CALC = EMBEDDED["calculator"]
# a small tool base: the same code path as EMBEDDED["calculator"], built in seconds
SMALL = dataclasses.replace(
    CALC,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    sft_steps=80,
    sft_batch=16,
    sft_warmup=10,
    sft_lr=6e-3,
    tokenizer_corpus=300,
    heldout_size=16,
)


def test_default_key_is_unchanged_and_demos_change_it():
    assert TinyRecipe().key() == "e49bc264345b045f"  # the key before `demos` existed
    assert EMBEDDED["default"] == TinyRecipe()
    assert CALC.demos == "calculator" and CALC.key() != TinyRecipe().key()
    assert CALC.task_kwargs == {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}
    other = dataclasses.replace(TinyRecipe(), task_kwargs=CALC.task_kwargs)
    assert other.key() != CALC.key()  # the demos field is hashed once set


def test_unknown_demo_source_is_refused(tmp_path):
    bad = dataclasses.replace(SMALL, demos="chess", sft_steps=1)
    with pytest.raises(ValueError, match=r"TinyRecipe\.demos: unknown demonstration source 'chess'"):
        ensure_base(bad, progress=False)


def test_demos_match_the_runner_and_mix_the_kinds(micro_model):
    _, tok = micro_model  # any tokenizer with the tiny chat template
    task = ReasoningGymTask("chain_sum", seed=0, heldout_size=4, **CALC.task_kwargs)
    chat, rng = ChatFormat(tok), random.Random(0)
    kinds = {"tool": 0, "direct": 0, "wrong": 0}
    for p in task.next(400):
        segs = _calculator_demo(p, rng, chat)
        assert segs[0] == (chat.prompt(calculator_observation(p.question)), False)
        answer = segs[-1][0]
        if len(segs) == 2:
            kinds["direct"] += 1
            assert answer == f"<answer>{p.answer}</answer>"
            continue
        (call, model_turn), (obs, env_turn) = segs[1], segs[2]
        assert model_turn and not env_turn and obs.startswith("<|tool|><tool_response>")
        result = obs.split("<tool_response>")[1].split("</tool_response>")[0]
        assert answer == f"<answer>{result}</answer>"  # the answer copies the tool's result
        ((name, args),) = parse_tool_calls(call)
        right = args["expression"] == p.meta["expression"]
        assert name == "calculator" and right == (result == p.answer)
        kinds["tool" if right else "wrong"] += 1
    for k, share in _CALC_MIX.items():
        assert abs(kinds[k] / 400 - share) < 0.06, kinds
    # labels: the model turns and their EOS only
    segs = [
        ("<|user|>q<|end|><|assistant|>", False),
        ("ab", True),
        ("<|tool|>x<|end|><|assistant|>", False),
    ]
    ids, labels = _demo_ids(segs, tok, tok.eos_token_id)
    n0 = len(tok(segs[0][0], add_special_tokens=False)["input_ids"])
    n1 = len(tok("ab", add_special_tokens=False)["input_ids"]) + 1
    assert labels == [-100] * n0 + ids[n0 : n0 + n1] + [-100] * (len(ids) - n0 - n1)
    assert ids[n0 + n1 - 1] == tok.eos_token_id
    assert _demo_text(segs) == "<|user|>q<|end|><|assistant|>ab<|end|><|tool|>x<|end|><|assistant|>"


def test_small_tool_base_learns_the_call_format(monkeypatch, tmp_path):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    path = ensure_base(SMALL, progress=False)
    assert path == cache_dir() / "base" / SMALL.key()
    model, tok = load_model(path)
    for t in ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<|tool|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    problems = build_env_task("calculator", seed=0, heldout_seed=0, heldout_size=16, **CALC.task_kwargs)
    envs = [make_env(p) for p in problems.heldout for _ in range(2)]
    ep = run_episodes(
        model,
        tok,
        envs,
        [0] * len(envs),
        group=torch.arange(16).repeat_interleave(2),
        max_turns=2,
        max_new_tokens=40,
        max_episode_tokens=100,
        generator=torch.Generator().manual_seed(0),
    )
    first = [a[0] for a in ep.actions]
    parsed = sum(1 for a in first if any(isinstance(c, tuple) for c in parse_tool_calls(a)))
    assert parsed / len(first) > 0.3, first[:4]
