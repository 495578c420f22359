"""``model.dtype``: float32 (the default) or bfloat16 mixed precision (float32 weights and optimizer,
bfloat16 autocast around rollout generation and the learner's forward)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from tests.conftest import micro_run

import rlvr.train.advantage
import rlvr.train.learner
import rlvr.train.rounds
import rlvr.train.trainer as tr
from rlvr.train.config import ConfigError, load_config


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(micro_base, "eval.before=false", "eval.after=false", "optim.lr=1e-3", *extra),
    )


def _spy(monkeypatch) -> dict[str, list[tuple[bool, torch.dtype]]]:
    """Record (autocast on, autocast dtype) on the CPU at every generate / sequence_logp call."""
    seen: dict[str, list[tuple[bool, torch.dtype]]] = {"generate": [], "sequence_logp": []}
    callers = {  # the trainer's modules that call each
        "generate": [rlvr.train.rounds],
        "sequence_logp": [rlvr.train.learner, rlvr.train.advantage],
    }
    for name, modules in callers.items():
        for mod in modules:
            fn = getattr(mod, name)

            def wrapped(*a, _fn=fn, _name=name, **kw):
                seen[_name].append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
                return _fn(*a, **kw)

            monkeypatch.setattr(mod, name, wrapped)
    return seen


def test_bfloat16_two_steps_are_finite_under_autocast(micro_base, tmp_path, monkeypatch, dense_reward):
    seen = _spy(monkeypatch)
    cfg = _cfg(micro_base, "model.dtype='bfloat16'", "train.steps=2", *dense_reward)
    assert cfg.model.dtype == "bfloat16"
    tr.train(cfg, run_dir=tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss", "grad_norm", "entropy", "reward_mean", "adv_std"):
            assert math.isfinite(r[key]), key
        assert r["grad_norm"] > 0  # the dense reward gives non-zero advantages: a real update
        assert not r.get("skipped_updates")
    assert seen["generate"] and all(s == (True, torch.bfloat16) for s in seen["generate"])
    assert seen["sequence_logp"] and all(s == (True, torch.bfloat16) for s in seen["sequence_logp"])
    ckpt = tmp_path / "run" / "checkpoints" / "step_2" / "model.safetensors"
    with safe_open(str(ckpt), "pt") as f:  # master weights stay float32
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118


def test_float32_default_runs_without_autocast(micro_base, tmp_path, monkeypatch):
    seen = _spy(monkeypatch)
    cfg = _cfg(micro_base, "train.steps=1")
    assert cfg.model.dtype == "float32"
    tr.train(cfg, run_dir=tmp_path / "run", progress=False)
    assert seen["generate"] and seen["sequence_logp"]
    assert not any(on for on, _ in seen["generate"] + seen["sequence_logp"])


@pytest.mark.parametrize("value", ["float16", "bf16", ""])
def test_bad_dtype_is_refused_naming_the_field(micro_base, value):
    with pytest.raises(ConfigError, match=r"'model\.dtype'.*expected 'float32' or 'bfloat16'"):
        _cfg(micro_base, f"model.dtype={value!r}")


def test_bfloat16_with_ray_workers_is_refused(micro_base):
    with pytest.raises(ConfigError, match=r"'model\.dtype' = 'bfloat16'.*scale\.workers"):
        _cfg(micro_base, "model.dtype='bfloat16'", "scale.workers=1")
