"""Crash-consistent checkpoints: ``checkpoints/step_N/`` plus a ``latest`` pointer written last.

A checkpoint is a Hugging Face model directory (weights + tokenizer) with ``trainer_state.pt`` beside
it: optimizer, RNG states, data position and step. It is written into a temporary directory, fsynced
and renamed, so a half-written checkpoint is never seen; ``latest`` is replaced atomically afterwards.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from rlvr.utils import atomic_dir, atomic_write_text

__all__ = ["latest_checkpoint", "load_trainer_state", "remove_partial", "save_checkpoint"]

_STEP = re.compile(r"^step_(\d+)$")


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    *,
    keep: int = 2,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>`` and point ``latest`` at it, keeping the newest ``keep``.
    ``weights``: the model's full state dict when ``model`` itself holds only shards (FSDP). A model
    with LoRA adapters is written merged (plain weights, :func:`rlvr.models.lora.merged_weights`) with
    its adapters in ``adapter/``, which a resume loads."""
    from rlvr.models.lora import is_lora, save_adapters, save_plain

    ckdir = run_dir / "checkpoints"
    final = ckdir / f"step_{step}"
    with atomic_dir(final) as tmp:
        save_plain(model, tmp, weights)
        if is_lora(model):
            save_adapters(model, tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
    atomic_write_text(ckdir / "latest", final.name + "\n")
    steps = sorted(
        (int(m.group(1)), p) for p in ckdir.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()
    )
    for _, old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(path: Path) -> bool:
    return (path / "trainer_state.pt").exists() and any(path.glob("*.safetensors"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run: the ``latest`` pointer, else the highest step."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return None
    pointer = ckdir / "latest"
    if pointer.exists():
        cand = ckdir / pointer.read_text().strip()
        if cand.is_dir() and _complete(cand):
            return cand
    steps = sorted(
        ((int(m.group(1)), p) for p in ckdir.iterdir() if (m := _STEP.match(p.name))),
        reverse=True,
    )
    for _, p in steps:
        if _complete(p):
            return p
    return None


def load_trainer_state(path: Path) -> dict[str, Any]:
    return torch.load(path / "trainer_state.pt", weights_only=False)


def remove_partial(run_dir: Path) -> list[Path]:
    """Delete what an interrupted write left behind (``.<name>.*.tmp`` / ``.old`` directories under
    ``checkpoints/`` and ``references/``); complete checkpoints are never touched. Returns the paths."""
    gone = []
    for sub in ("checkpoints", "references"):
        folder = Path(run_dir) / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                    gone.append(p)
    return gone
