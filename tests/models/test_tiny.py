"""The embedded base model is a real Hugging Face checkpoint, deterministic and cached."""

from __future__ import annotations

import dataclasses

import torch
from safetensors.torch import load_file
from tests.conftest import MICRO
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.models.tiny import TinyRecipe, build_base, cache_dir, ensure_base


def test_loads_with_auto_classes(micro_base):
    tok = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    assert model.config.model_type == "qwen2"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "1 + 2 ="}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>1 + 2 =<|end|><|assistant|>"
    ids = tok("<answer>-12</answer>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "<answer>-12</answer>"
    # digits are one token each, and the answer tags are single tokens
    assert tok.convert_ids_to_tokens(ids) == ["<answer>", "-", "1", "2", "</answer>"]
    out = model(input_ids=torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), len(tok))


def test_build_is_deterministic(micro_base, tmp_path):
    again = build_base(MICRO, tmp_path / "again", progress=False)
    a, b = load_file(micro_base / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (micro_base / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_recipe_key_depends_on_every_field():
    base = TinyRecipe()
    assert base.key() == TinyRecipe().key()
    for f in dataclasses.fields(TinyRecipe):
        if isinstance(getattr(base, f.name), int) and not isinstance(getattr(base, f.name), bool):
            changed = dataclasses.replace(base, **{f.name: getattr(base, f.name) + 1})
            assert changed.key() != base.key(), f.name


def test_ensure_base_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))
    tiny = dataclasses.replace(MICRO, sft_steps=2, tokenizer_corpus=100)
    path = ensure_base(tiny, progress=False)
    assert path == cache_dir() / "base" / tiny.key()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_base(tiny, progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_build_and_load_tokenize_identically(micro_base):
    from rlvr.data.prompts import format_prompt
    from rlvr.models.tiny import CHAT_TEMPLATE, _train_tokenizer

    loaded = AutoTokenizer.from_pretrained(micro_base)
    model = AutoModelForCausalLM.from_pretrained(micro_base)
    assert len(loaded) == model.config.vocab_size
    built = _train_tokenizer(["<|user|>State 12 + 3 =<|end|><|assistant|><answer>15</answer>"], 300)
    built.chat_template = CHAT_TEMPLATE
    assert built.backend_tokenizer.pre_tokenizer.__getstate__() == (
        loaded.backend_tokenizer.pre_tokenizer.__getstate__()
    )
    q = "State the final answer to the following arithmetic problem: 8 + 12 - 7 ="
    ids = loaded(format_prompt(loaded, q), add_special_tokens=False)["input_ids"]
    assert max(ids) < model.config.vocab_size
