"""`rlvr eval`: several models in one table, --base with the reasoning boundary, plot, JSON and CSV."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from rlvr.cli import main
from rlvr.models.hf import load_model

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["model.device='cpu'", "task.heldout_size=6", "eval.max_new_tokens=5", "--quiet"]


@pytest.fixture(scope="module")
def other_model(micro_base, tmp_path_factory):
    """A second model: the micro base with noise on every weight, saved as a checkpoint of a run
    (RUN/checkpoints/step_7, complete with its trainer state)."""
    run = tmp_path_factory.mktemp("run") / "myrun"
    ckpt = run / "checkpoints" / "step_7"
    model, tok = load_model(micro_base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * p.std().nan_to_num(0.0) * torch.randn(p.shape, generator=g))
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    torch.save({"step": 7}, ckpt / "trainer_state.pt")
    return run


def _text(capsys) -> str:
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return text


def _png_ok(path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    img = matplotlib.image.imread(path)  # decodes, or raises
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_two_models_in_one_table(micro_base, other_model, tmp_path, capsys):
    out = tmp_path / "res.json"
    ckpt = other_model / "checkpoints" / "step_7"
    argv = ["eval", "--model", str(micro_base), "--model", str(ckpt), "-n", "4", "--json", str(out)]
    assert main([*argv, *FAST]) == 0
    text = _text(capsys)
    for row in ("pass@1", "pass@4", "maj@2", "mean length", "entropy", "distinct answers"):
        assert row in text
    assert "myrun/step_7" in text and "6 problems × 4 samples" in text
    rec = json.loads(out.read_text())
    assert [m["label"] for m in rec["models"]] == ["base", "myrun/step_7"]
    assert rec["n"] == 4 and rec["problems"] == 6 and "boundary" not in rec
    for m in rec["models"]:
        s = m["summary"]
        for key in ("pass@1", "pass@4_ci_low", "maj@4", "maj@1_ci_high", "entropy", "distinct_answers"):
            assert key in s
        assert len(m["correct"]) == len(m["distinct"]) == len(m["voted"]) == 6
        assert all(0 <= d <= 4 for d in m["distinct"])
        assert 0 <= s["pass@1"] <= s["pass@2"] <= s["pass@4"] <= 1
    _png_ok(out.with_suffix(".png"))  # the plot goes next to the JSON by default


def test_base_against_trained_boundary_plot_and_csv(micro_base, other_model, tmp_path, capsys):
    """--base with a run directory as --model (its newest checkpoint), --out with CSV and plot."""
    argv = ["eval", "--base", str(micro_base), "--model", str(other_model), "-n", "8"]
    assert main([*argv, "--out", str(tmp_path / "out"), *FAST]) == 0
    text = " ".join(_text(capsys).split())
    assert "reasoning boundary at k = 8, base → myrun/step_7:" in text
    rec = json.loads((tmp_path / "out" / "eval.json").read_text())
    (bd,) = rec["boundary"]
    assert bd["model"] == "myrun/step_7" and bd["k"] == 8
    assert bd["gained"] + bd["lost"] + bd["kept"] + bd["neither"] == 6
    base, trained = (m["correct"] for m in rec["models"])
    rows = list(csv.DictReader((tmp_path / "out" / "boundary.csv").open()))
    assert len(rows) == 6 and rows == [{k: str(v) for k, v in r.items()} for r in rec["boundary_table"]]
    for row, b, t in zip(rows, base, trained, strict=True):
        assert int(row["base_correct"]) == b and int(row["myrun/step_7_correct"]) == t
        want = ("kept" if t else "lost") if b else ("gained" if t else "neither")
        assert row["myrun/step_7_status"] == want
    assert sum(r["myrun/step_7_status"] == "gained" for r in rows) == bd["gained"]
    _png_ok(tmp_path / "out" / "passk.png")
    # an explicit --plot path wins
    assert main([*argv, "--plot", str(tmp_path / "p" / "curves.png"), *FAST]) == 0
    _png_ok(tmp_path / "p" / "curves.png")
    capsys.readouterr()


def test_default_model_is_the_embedded_base_and_a_file_dataset_works(
    micro_base, tmp_path, capsys, monkeypatch
):
    import rlvr.models.tiny

    monkeypatch.setattr(rlvr.models.tiny, "ensure_base", lambda *a, **k: micro_base)
    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"{i} + {i} =", "answer": str(2 * i)}) + "\n" for i in range(20))
    )
    file_task = [
        "task.source='file'",
        f"task.path='{data}'",
        "task.verifier='exact_match'",
        "rewards={exact_match = {weight = 1.0}}",
    ]
    out = tmp_path / "r.json"
    assert main(["eval", "-n", "2", "--json", str(out), *file_task, *FAST]) == 0
    rec = json.loads(out.read_text())
    assert [m["label"] for m in rec["models"]] == ["embedded"] and rec["task"] == str(data)
    assert "held-out" in _text(capsys)


@pytest.mark.parametrize("position", ["first", "second", "base"])
def test_a_bad_model_path_is_exit_2_naming_it_before_any_work(micro_base, tmp_path, capsys, position):
    bad = tmp_path / "no_such_model"
    models = {
        "first": ["--model", str(bad), "--model", str(micro_base)],
        "second": ["--model", str(micro_base), "--model", str(bad)],
        "base": ["--base", str(bad), "--model", str(micro_base)],
    }[position]
    out = tmp_path / "r.json"
    assert main(["eval", *models, "--json", str(out), *FAST]) == 2
    text = " ".join(_text(capsys).split())
    assert "error:" in text and f"{bad} does not exist" in text
    assert "pass@1" not in text and not out.exists()  # nothing was evaluated


def test_other_user_errors_are_exit_2(micro_base, tmp_path, capsys):
    assert main(["eval", "--base", str(micro_base), *FAST]) == 2
    assert "--base needs at least one --model" in _text(capsys)
    assert main(["eval", "--model", str(micro_base), "-n", "0", *FAST]) == 2
    assert "--samples (0)" in _text(capsys)
    run = tmp_path / "emptyrun"
    (run / "checkpoints").mkdir(parents=True)
    assert main(["eval", "--model", str(run), *FAST]) == 2
    assert f"run directory {run} has no complete checkpoint" in " ".join(_text(capsys).split())
    half = tmp_path / "half"
    shutil.copytree(micro_base, half)
    (half / "config.json").unlink()
    assert main(["eval", "--model", str(half), *FAST]) == 2
    assert "no config.json" in _text(capsys)
