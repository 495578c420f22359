"""The embedded tiny base model: tokenizer, architecture, supervised warm start, cache."""

from rlvr.models.tiny import TinyRecipe, build_base, ensure_base, load_model

__all__ = ["TinyRecipe", "build_base", "ensure_base", "load_model"]
