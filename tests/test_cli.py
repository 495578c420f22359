"""The command line: help for every command, and user mistakes as clear errors, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlvr.algos import ADVANTAGES
from rlvr.cli import main
from rlvr.train.config import recipe_names


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["base", "--help"]]
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 0
    assert "usage: rlvr" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--recipe", "nope"], "shipped recipes: " + ", ".join(recipe_names())),
        (["train", "algo.advantage=nope"], "valid names: " + ", ".join(ADVANTAGES.names())),
        (["train", "--resume", "/nonexistent/run"], "/nonexistent/run"),
        (["eval", "--model", "/nonexistent/model"], "/nonexistent/model does not exist"),
    ],
)
def test_user_errors(argv, message, capsys):
    assert main(argv) == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "error:" in text and message in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["--help"], ["train", "eval", "base"]),
        (
            ["train", "--help"],
            ["--recipe", "--model", "--steps", "--seed", "--run-dir", "--runs-root", "--resume"],
        ),
        (["eval", "--help"], ["--model", "--recipe", "--samples", "--json", "overrides"]),
        (["base", "--help"], ["--force", "--out", "--embedded"]),
    ],
)
def test_help_mentions_the_options(argv, options, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for opt in options:
        assert opt in out, opt


def _error_text(capsys):
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "Traceback" not in text
    return text


def test_unknown_recipe_lists_every_shipped_recipe(capsys):
    from rlvr.train.config import recipe_names

    assert main(["train", "--recipe", "nope"]) == 2
    text = _error_text(capsys)
    assert text.startswith("error:") and "unknown recipe 'nope'" in text
    for name in recipe_names():
        assert name in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", 'algo.advantage="nope"'], "'algo.advantage': unknown advantage"),
        (["train", "optim.lr=-1"], "'optim.lr' = -1.0 is out of range"),
        (["train", "--recipe", "rloo", "algo.clip_high=0.3"], "'algo.clip_high' is not a knob"),
        (["train", "--seed", "1", "rollout.samples_per_prompt=1"], "at least 2 samples"),
        (["eval", "rollout.max_tokens=3"], "unknown field 'rollout.max_tokens'"),
        (["eval", "--recipe", "nope"], "unknown recipe 'nope'"),
        (["train", "rewards.answer.partial_credit=False"], "must be bool, got 'False'"),
        (["train", "algo.dual_clip=0.5"], "'algo.dual_clip': 'dual_clip' of objective"),
        (["eval", "task.name='no_such_task'"], "'task' (name = 'no_such_task'"),
        (["eval", "task.kwargs.no_such_knob=1"], "cannot create reasoning-gym task 'chain_sum'"),
    ],
)
def test_config_errors_exit_2_before_any_work(argv, message, capsys):
    assert main(argv) == 2
    text = _error_text(capsys)
    assert "error:" in text and message in text


def test_path_errors_exit_2(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["eval", "--model", str(missing)]) == 2
    assert str(missing) in _error_text(capsys)
    (tmp_path / "notamodel").mkdir()
    assert main(["eval", "--model", str(tmp_path / "notamodel")]) == 2
    assert "no config.json" in _error_text(capsys)
    assert main(["train", "--resume", str(missing)]) == 2
    assert "no config.toml" in _error_text(capsys)
    (tmp_path / "run").mkdir()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "is not a run directory" in _error_text(capsys)


def test_argparse_errors_exit_2(capsys):
    for argv in ([], ["fly"], ["train", "--steps", "many"]):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        assert ex.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    "overrides",
    [
        ["task.name='no_such_task'"],
        ["task.kwargs.min_terms='x'"],
        # two one-digit terms have a few hundred distinct questions, fewer than 1000
        ["task.kwargs={min_terms=2, max_terms=2, min_digits=1, max_digits=1}", "task.heldout_size=1000"],
    ],
)
def test_a_bad_task_fails_before_a_run_dir_or_model_exists(overrides, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RLVR_CACHE", str(tmp_path / "cache"))  # a model build would land here
    assert main(["train", "--runs-root", str(tmp_path / "runs"), *overrides]) == 2
    text = _error_text(capsys)
    assert "error: 'task' (name = " in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_tasks_lists_and_shows_knobs(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "chain_sum" in out and "basic_arithmetic" in out and "reasoning-gym tasks" in out
    assert main(["tasks", "show", "chain_sum"]) == 0
    out = capsys.readouterr().out
    for knob in ("min_terms", "max_terms", "min_digits", "allow_negation"):
        assert knob in out
    assert "seed" not in out.split("example")[0]  # set by rlvr, not a task knob
    assert "example question" in out
    assert main(["tasks", "show", "no_such_task"]) == 2
    assert "unknown reasoning-gym task 'no_such_task'" in capsys.readouterr().out
    assert main(["tasks", "show"]) == 2


BAD_ROWS = Path(__file__).resolve().parent / "data" / "fixtures" / "bad_rows.jsonl"


def test_a_dataset_with_bad_rows_is_refused_or_skipped(micro_base, tmp_path, capsys):
    """The corrupted fixture (5 kinds of bad rows): one clear error listing the rows, exit 2, before
    any run directory exists; with --on-bad-row skip the run trains on the good rows."""
    args = [
        "train",
        "--quiet",
        "--steps",
        "2",
        "--model",
        str(micro_base),
        "model.device='cpu'",
        "task.source='file'",
        f"task.path='{BAD_ROWS}'",
        "task.heldout_size=1",
        "task.max_prompt_tokens=40",
        "task.verifier='exact_match'",
        "rewards={exact_match = {weight = 1.0}, format = {weight = 0.1}}",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "eval.samples=2",
    ]
    runs = tmp_path / "runs"
    assert main([*args, "--runs-root", str(runs)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "bad_rows.jsonl:3" in out and "on_bad_row" in out and "Traceback" not in out
    assert not runs.exists()
    assert main([*args, "--runs-root", str(runs), "--on-bad-row", "skip"]) == 0
    (run,) = runs.iterdir()
    assert (run / "summary.json").exists()
