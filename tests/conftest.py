"""Shared fixtures: a micro base model built once per test session, in a temporary cache."""

from __future__ import annotations

import pytest

from rlvr.models.tiny import TinyRecipe, build_base, load_model

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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's ~/.cache/rlvr."""
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path_factory.getbasetemp() / "rlvr-cache"))


@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
    """Path of a micro base model directory (Hugging Face format)."""
    path = tmp_path_factory.mktemp("micro") / "base"
    return build_base(MICRO, path, progress=False)


@pytest.fixture()
def micro_model(micro_base):
    """A fresh (model, tokenizer) pair loaded from the micro base."""
    return load_model(micro_base)
