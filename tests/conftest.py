"""Shared fixtures: a micro base model built once per test session, in a temporary cache."""

from __future__ import annotations

import dataclasses
import json

from rlvr.numerics import use_portable_numerics

# Before torch starts: the same kernels on every x86-64 machine with AVX2 (rlvr.numerics), so that
# the golden records, recorded with them, repeat on a processor with AVX-512 too.
use_portable_numerics()

import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from rlvr.numerics import cpu_has_amx  # noqa: E402

UNPORTABLE_HERE = cpu_has_amx() and os.environ.get("RLVR_STRICT_NUMERICS") != "1"
"""On an Intel processor with AMX the portable numerics do not reproduce the reference machines'
builds (``rlvr.numerics``): the few tests known to differ there skip (RLVR_STRICT_NUMERICS=1 runs
them)."""
UNPORTABLE_CASES = frozenset(
    {"recipe/fipo", "recipe/gmpo", "recipe/gspo", "recipe/prime", "recipe/sapo", "feature/bfloat16"}
)
"""The golden cases that differ past round-off on such a processor (measured 2026-12-08)."""


def skip_where_unportable(what: str) -> None:
    """Skip the calling test on a processor whose numerics are known to differ from the reference."""
    if UNPORTABLE_HERE:
        pytest.skip(f"{what}: this processor (Intel AMX) does not reproduce the reference numerics")


from rlvr.models.hf import load_model  # noqa: E402
from rlvr.models.tiny import TinyRecipe, build_base  # noqa: E402

# The test models are tiny (hidden size 32): a second intra-op thread only adds synchronisation, and on
# a busy 2-core machine it made a 2-step run 5x slower (7.2 s against 1.5 s).
torch.set_num_threads(1)

# Small enough to build in seconds; the same code path as the embedded default.
MICRO = TinyRecipe(
    vocab_size=400,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    sft_steps=30,
    sft_batch=16,
    sft_warmup=5,
    tokenizer_corpus=500,
    heldout_size=32,
)

# A teacher for the micro model: the same recipe trained twice as long, so the same tokenizer (its
# fields are MICRO's) and a different model (the opd recipes' runs on the micro model).
MICRO_TEACHER = dataclasses.replace(MICRO, sft_steps=60)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache/rlvr."""
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path_factory.getbasetemp() / "rlvr-cache"))


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
    """Path of a micro base model directory (Hugging Face format)."""
    path = tmp_path_factory.mktemp("micro") / "base"
    return build_base(MICRO, path, progress=False)


@pytest.fixture(scope="session")
def micro_teacher(tmp_path_factory):
    """Path of a teacher model for the micro base (``MICRO_TEACHER``: the micro's tokenizer)."""
    path = tmp_path_factory.mktemp("micro_teacher") / "base"
    return build_base(MICRO_TEACHER, path, progress=False)


@pytest.fixture()
def micro_model(micro_base):
    """A fresh (model, tokenizer) pair loaded from the micro base."""
    return load_model(micro_base)


def micro_run(micro_base, *extra: str) -> list[str]:
    """Overrides for a real run on the micro model: CPU, 2 prompts x 4 samples of up to 6 tokens,
    16 held-out problems; ``extra`` overrides come last and win."""
    return [
        f"model.path={json.dumps(str(micro_base))}",
        "model.device='cpu'",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=6",
        "task.heldout_size=16",
        *extra,
    ]


def _length_reward():
    """A dense test reward: the micro model never answers correctly, so the task reward alone would
    give every group a zero advantage and no update could move the policy."""

    def length(prompt: str, completion: str, answer: str, **meta) -> float:
        return min(len(completion), 20) / 20

    return length


@pytest.fixture()
def dense_reward(monkeypatch) -> list[str]:
    """Register the dense ``length`` reward for one test; returns the overrides that use it in place
    of the task reward (the total reward stays in [0, 1])."""
    from rlvr.rewards import REWARDS

    monkeypatch.setitem(REWARDS._items, "length", _length_reward)
    return ["rewards.answer.weight=0.0", "rewards.length.weight=0.9"]


def completion_logits(model, roll, temperature: float) -> torch.Tensor:
    """[N, T, V] float32 logits / temperature before each sampled completion token of ``roll``, from
    one plain whole forward (the reference that chunked and shared-prefix forwards are checked
    against)."""
    ids = torch.cat([roll.prompt_ids, roll.completion_ids], 1)  # [N, P+T]
    attn = torch.cat([roll.prompt_mask, roll.attention.to(roll.prompt_mask.dtype)], 1)  # [N, P+T]
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits  # [N, P+T, V]
    p, t = roll.prompt_ids.shape[1], roll.completion_ids.shape[1]
    return logits[:, p - 1 : p + t - 1].float() / temperature  # [N, T, V]
