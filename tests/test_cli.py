"""The command line: help for every command, and user mistakes as clear errors, no traceback."""

from __future__ import annotations

import pytest

from rlvr.cli import main


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
        (["train", "--recipe", "nope"], "shipped recipes: dr_grpo, grpo, rloo"),
        (["train", "algo.advantage=nope"], "valid names: dr_grpo, grpo, rloo"),
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
