"""Models: any local Hugging Face directory (:mod:`rlvr.models.hf`), the embedded tiny base model
(:mod:`rlvr.models.tiny`), the PPO critic and the learners' sharding.

The names below are imported on first use, so that ``import rlvr.models.hf`` (cheap: no torch) does not
load the tiny model's module (torch, transformers, tokenizers, reasoning-gym).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlvr.models.hf import check_model_dir, load_model, load_tokenizer
    from rlvr.models.tiny import TinyRecipe, build_base, ensure_base

__all__ = ["TinyRecipe", "build_base", "check_model_dir", "ensure_base", "load_model", "load_tokenizer"]

_HOME = {
    "check_model_dir": "rlvr.models.hf",
    "load_model": "rlvr.models.hf",
    "load_tokenizer": "rlvr.models.hf",
    "TinyRecipe": "rlvr.models.tiny",
    "build_base": "rlvr.models.tiny",
    "ensure_base": "rlvr.models.tiny",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'rlvr.models' has no attribute {name!r}")
