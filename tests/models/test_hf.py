"""rlvr.models.hf: the one check of a model directory, and loading any Hugging Face directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rlvr.models
from rlvr.models.hf import check_model_dir, load_model, load_tokenizer


def test_check_model_dir_names_the_path_and_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="model: the knob 'path' is empty"):
        check_model_dir("")
    d = tmp_path / "m"
    with pytest.raises(FileNotFoundError, match=re.escape(f"model directory {d} does not exist")):
        load_model(d)
    d.write_text("")
    with pytest.raises(FileNotFoundError, match=re.escape(f"model path {d} is not a directory")):
        check_model_dir(d)
    d.unlink()
    d.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(f"model directory {d} has no config.json")):
        load_model(d)
    (d / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no weights \(\*\.safetensors or \*\.bin\)"):
        load_tokenizer(d)
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=f"reward model directory {re.escape(str(d))} has no tok"
    ):
        check_model_dir(d, what="reward model")
    (d / "tokenizer.json").write_text("{}")
    assert check_model_dir(str(d)) == d


def test_load_model_and_tokenizer(micro_base):
    model, tok = load_model(micro_base)
    assert model.config.model_type == "qwen2" and next(model.parameters()).dtype.is_floating_point
    assert tok.pad_token_id is not None and load_tokenizer(micro_base).vocab == tok.vocab


def test_the_check_imports_neither_torch_nor_the_tiny_model():
    """``rlvr.rewards`` checks its model directories through rlvr.models.hf at registration time:
    importing them stays cheap (rlvr.models imports its submodules only on first use)."""
    code = (
        "import sys, rlvr.rewards, rlvr.models, rlvr.models.hf\n"
        "print(sorted(m for m in ('torch', 'transformers', 'rlvr.models.tiny') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(rlvr.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout == "[]\n", out.stderr
    assert rlvr.models.load_model is load_model and rlvr.models.check_model_dir is check_model_dir
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rlvr.models.nope  # noqa: B018


def test_loading_and_saving_a_model_print_no_progress_bar(micro_base, tmp_path, capfd):
    """transformers' tqdm bars ("Loading weights", "Writing model shards") would land in rlvr's log at
    every model load and checkpoint: loading through rlvr turns them off, for later saves too."""
    from transformers.utils import logging

    from rlvr.models.critic import ValueModel
    from rlvr.train.checkpoint import save_checkpoint

    logging.enable_progress_bar()  # as in a fresh process (an earlier test may have loaded a model)
    model, tok = load_model(micro_base)
    save_checkpoint(tmp_path / "run", 1, model, tok, {"step": 1})
    logging.enable_progress_bar()
    ValueModel(micro_base)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err and "it/s" not in err
    assert not logging.is_progress_bar_enabled()
