"""Low-rank adapters (LoRA, through peft) on the policy, and the reference for free.

With ``model.lora.rank > 0`` the policy is the base model with LoRA adapters on its linear layers
(``W x + (alpha / r) B A x``, B initialised to zero so that step 0 is the base); only the adapters
are trained and in the optimizer. What else changes:

- **The reference** is the same model with its adapters switched off (:class:`AdapterOffReference`),
  so no second copy of the weights is loaded.
- **Checkpoints** stay plain Hugging Face directories: ``step_N/`` holds the merged weights
  (``W + (alpha / r) B A``, computed without touching the model: :func:`merged_weights`), which load
  with ``AutoModelForCausalLM.from_pretrained`` and are what evaluation, ``rlvr eval`` and the rollout
  workers read, and ``step_N/adapter/`` holds the adapters themselves (peft's format), which a resume
  loads onto the base (:func:`load_adapters`). A checkpoint is therefore also the merged export.
- **Rollout workers** receive the merged weights (the same state dict a plain model sends), so they
  run a plain model and need no peft. Sending the adapters alone would be about 140 times fewer
  bytes at rank 8 on a 0.5 B model (``benchmarks/lora_sync.md``), at the price of peft and a merge
  on every worker: the next step for runs across machines, not built.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ADAPTER_DIR",
    "AdapterOffReference",
    "add_adapters",
    "checkpointing",
    "default_targets",
    "is_lora",
    "load_adapters",
    "merged_weights",
    "plain_model",
    "save_adapters",
    "save_plain",
    "trainable_parameters",
]

ADAPTER_DIR = "adapter"
"""The sub-directory of a checkpoint that holds the adapters (peft's ``save_pretrained`` format)."""

# the projections of the attention and MLP blocks of Qwen2 / Llama / Mistral (and GPT-2's fused ones)
_KNOWN_TARGETS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "c_attn",
    "c_proj",
    "c_fc",
)


def default_targets(model: torch.nn.Module) -> list[str]:
    """The module names LoRA goes on when ``model.lora.targets`` is empty: those of
    ``_KNOWN_TARGETS`` that ``model`` has as linear layers (all attention and MLP projections of
    Qwen2 / Llama / Mistral); peft's ``"all-linear"`` rule for any other architecture."""
    found = {
        name.rsplit(".", 1)[-1]
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"
    }
    known = [t for t in _KNOWN_TARGETS if t in found]
    return known or ["all-linear"]


def add_adapters(
    model: torch.nn.Module,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    targets: list[str] | None = None,
) -> Any:
    """``model`` with fresh LoRA adapters of ``rank`` on ``targets`` (default :func:`default_targets`):
    a peft ``PeftModel`` whose only trainable parameters are the adapters."""
    from peft import LoraConfig, get_peft_model

    names = list(targets) if targets else default_targets(model)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names[0] if names == ["all-linear"] else names,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(model, cfg)


def load_adapters(model: torch.nn.Module, checkpoint: str | Path) -> Any:
    """The base ``model`` with the trainable adapters saved in ``checkpoint/adapter`` (a resume)."""
    from peft import PeftModel

    path = Path(checkpoint) / ADAPTER_DIR
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"{path}: no adapters in this checkpoint (it was written by a run without model.lora; "
            "resume it with model.lora.rank = 0)"
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return PeftModel.from_pretrained(model, path, is_trainable=True)


def is_lora(model: Any) -> bool:
    """Whether ``model`` carries LoRA adapters (a peft model)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def plain_model(model: Any) -> Any:
    """The Hugging Face model underneath (``model`` itself when it has no adapters): its
    ``save_pretrained`` writes plain weights (given :func:`merged_weights`)."""
    return model.get_base_model() if is_lora(model) else model


@contextlib.contextmanager
def checkpointing(model: Any, on: bool = True) -> Iterator[None]:
    """Run the block with transformers' gradient checkpointing on ``model``'s decoder layers (the
    model underneath a LoRA one), then switch it off again: outside the learner's forward the
    sampler and the frozen forwards need the KV cache, which checkpointed layers drop."""
    if not on:
        yield
        return
    plain = plain_model(model)
    with warnings.catch_warnings():  # transformers renames these methods in v6
        warnings.filterwarnings("ignore", category=FutureWarning)
        plain.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            plain.gradient_checkpointing_disable()
        # enabling also hooked the input embeddings (inputs that require grad), and disabling
        # removes that hook only on a model that peft loaded itself: without this, one more hook
        # per learner forward would pile up on the embeddings
        plain.disable_input_require_grads()


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: all of a plain model's, only the adapters of a LoRA one."""
    return [p for p in model.parameters() if p.requires_grad]


def merged_weights(model: Any) -> dict[str, Tensor]:
    """The plain state dict of ``model`` with every adapter merged, ``W + (alpha / r) B A``, under the
    names of the model without adapters (detached, on the model's device), the keys of the plain
    model's ``state_dict()`` (tied parameters under each of their names); the model is unchanged."""
    from peft.tuners.lora import LoraLayer

    hf = model.get_base_model()
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, value in hf.state_dict().items():
            if ".lora_" in name:
                continue
            out[name.replace(".base_layer.", ".")] = value.detach()
        for name, mod in hf.named_modules():
            if isinstance(mod, LoraLayer) and not mod.merged:
                key = f"{name}.weight"
                w = out[key]
                for adapter in mod.active_adapters:
                    if adapter in mod.lora_A:
                        w = w + mod.get_delta_weight(adapter).to(w.dtype)  # [out, in]
                out[key] = w
    return out


def save_plain(model: Any, directory: Path, weights: dict[str, Tensor] | None = None) -> None:
    """Write ``model`` as a plain Hugging Face model into ``directory``: a LoRA model merged
    (:func:`merged_weights`, a tied head under one name), any other with ``weights`` (its full
    state dict when the model itself holds only shards) or its own."""
    from rlvr.models.shard import drop_aliases

    if is_lora(model):
        plain = plain_model(model)
        weights = drop_aliases(plain, merged_weights(model))
        plain.save_pretrained(directory, safe_serialization=True, state_dict=weights)
    else:
        model.save_pretrained(directory, safe_serialization=True, state_dict=weights)


def save_adapters(model: Any, directory: Path) -> None:
    """Write ``model``'s adapters into ``directory/adapter`` (peft's format)."""
    model.save_pretrained(directory / ADAPTER_DIR, safe_serialization=True)


class _AdaptersOff(torch.nn.Module):
    """A submodule of a LoRA policy (its decoder) that runs with the policy's adapters disabled."""

    def __init__(self, policy: Any, module: torch.nn.Module) -> None:
        super().__init__()
        self._parts = [policy, module]  # lists: neither is registered as a submodule

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        policy, module = self._parts
        with policy.disable_adapter():
            return module(*args, **kwargs)


class AdapterOffReference(torch.nn.Module):
    """The reference policy of a LoRA run: the policy's own forward with its adapters disabled (the
    base weights, which are frozen), so that no second copy of the model is held. It shows the
    ``config``, ``model`` (decoder) and ``lm_head`` of a causal LM, so the chunked log-probs of
    :func:`rlvr.rollout.sequence_logp` work on it as on the policy."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self._policy = [policy]  # a list, so the policy is not registered as a submodule

    @property
    def config(self) -> Any:
        return self._policy[0].config

    @property
    def model(self) -> torch.nn.Module | None:
        decoder = getattr(plain_model(self._policy[0]), "model", None)
        return _AdaptersOff(self._policy[0], decoder) if decoder is not None else None

    @property
    def lm_head(self) -> Any:
        return getattr(plain_model(self._policy[0]), "lm_head", None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        policy = self._policy[0]
        with policy.disable_adapter():
            return policy(*args, **kwargs)
