"""Any local Hugging Face model directory: the check, the tokenizer, the causal LM.

:func:`check_model_dir` is rlvr's one check of a model directory (policy, reference, reward and
likelihood models, ``rlvr eval --model``): it raises FileNotFoundError naming the path and what is
missing, before any work. torch and transformers are imported only when something is loaded, so that
importing this module stays cheap (``rlvr.rewards`` checks its model paths when a reward is built).

Loading a model through here (or building the embedded base, or loading a reward model) also turns
transformers' progress bars off for the process (:func:`quiet_progress_bars`): its "Loading weights"
and "Writing model shards" bars would otherwise land in rlvr's log at every load and checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_model_dir",
    "load_model",
    "load_tokenizer",
    "quiet_progress_bars",
    "tokenizer_difference",
]

_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


def check_model_dir(path: str | Path, *, what: str = "model") -> Path:
    """``path`` as a Path (``~`` expanded), after checking that it is a local Hugging Face model
    directory: a folder with config.json, weights and a tokenizer. Raises FileNotFoundError naming
    ``what`` (``"model"``, ``"reward model"``, ...), the path and what is missing."""
    if not str(path):
        raise FileNotFoundError(f"{what}: the knob 'path' is empty; give a local model directory")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} directory {p} does not exist")
    if not p.is_dir():
        raise FileNotFoundError(f"{what} path {p} is not a directory")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(
            f"{what} directory {p} has no config.json (not a Hugging Face model directory)"
        )
    if not any(any(p.glob(pattern)) for pattern in _WEIGHTS):
        raise FileNotFoundError(f"{what} directory {p} has no weights (*.safetensors or *.bin)")
    if not any((p / name).is_file() for name in _TOKENIZER):
        raise FileNotFoundError(
            f"{what} directory {p} has no tokenizer (tokenizer.json or tokenizer_config.json)"
        )
    return p


def quiet_progress_bars() -> None:
    """Turn off transformers' tqdm progress bars (and huggingface_hub's, which transformers turns off
    with its own), for the whole process: rlvr prints its own progress. Idempotent and cheap once
    transformers is imported."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a local Hugging Face model directory (pad token = EOS when it has none)."""
    return _tokenizer(check_model_dir(path))


def load_model(path: str | Path, *, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """Load any local Hugging Face causal LM directory in float32 on ``device``: (model, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = check_model_dir(path)
    quiet_progress_bars()
    tokenizer = _tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    return model, tokenizer


def tokenizer_difference(a: Any, b: Any, names: tuple[str, str] = ("first", "second")) -> str:
    """What differs between two tokenizers' vocabularies (token -> id, added tokens included), in
    words that call them ``names``; '' when they are the same, so that one's token ids mean the same
    tokens to the other."""
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        return (
            f"their vocabulary sizes differ (the {names[0]}'s {len(va)} tokens, the {names[1]}'s "
            f"{len(vb)})"
        )
    moved = sorted(tok for tok, i in va.items() if vb.get(tok) != i)
    if moved:
        t = moved[0]
        other = f"absent from the {names[1]}'s" if t not in vb else f"id {vb[t]} in the {names[1]}'s"
        return (
            f"{len(moved)} of their {len(va)} tokens have other ids (e.g. {t!r}: id {va[t]} in the "
            f"{names[0]}'s vocabulary, {other})"
        )
    return ""
