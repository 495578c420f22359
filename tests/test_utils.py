"""rlvr.utils: the malloc setting and the metrics lines' flushing."""

from __future__ import annotations

import json
import platform

import pytest

from rlvr.utils import append_jsonl, fsync_file, reuse_freed_memory


def test_reuse_freed_memory_is_set_on_glibc_and_left_alone_when_asked(monkeypatch):
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "RLVR_MALLOC_TUNING"):
        monkeypatch.delenv(k, raising=False)
    assert reuse_freed_memory() is (platform.libc_ver()[0] == "glibc")
    for k in ("RLVR_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        with monkeypatch.context() as m:
            m.setenv(k, "0" if k == "RLVR_MALLOC_TUNING" else "131072")
            assert reuse_freed_memory() is False, k


@pytest.mark.parametrize("sync", [True, False])
def test_append_jsonl_lines_are_readable_at_once(tmp_path, sync):
    path = tmp_path / "m.jsonl"
    for k in range(3):
        append_jsonl(path, {"step": k, "x": k / 2}, sync=sync)
        # flushed: another reader sees the line before the file is closed or synced
        assert json.loads(path.read_text().splitlines()[-1]) == {"step": k, "x": k / 2}
    fsync_file(path)
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [0, 1, 2]


def test_a_long_console_line_stays_one_line_in_a_pipe_and_a_file(tmp_path):
    """rich breaks lines at the console width, 80 columns when the output is not a terminal: a line of
    the training log must stay one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import rlvr

    line = " ".join(f"word{i:03d}" for i in range(25)) + "  [bold]80[/bold] ms/step"  # > 200 characters
    log = tmp_path / "log.txt"
    code = (
        "import sys\nfrom rlvr.utils import console\n"
        f"console.print({line!r})\n"  # stdout: a pipe
        f"console.file = open({str(log)!r}, 'w')\nconsole.print({line!r})\nconsole.file.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(rlvr.__file__).parents[1]), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    want = line.replace("[bold]", "").replace("[/bold]", "") + "\n"
    assert len(want) > 200 and out == want and log.read_text() == want


def test_on_a_terminal_the_console_still_wraps_words_and_colours():
    import io

    from rlvr.utils import console

    buf = io.StringIO()
    term = type(console)(file=buf, force_terminal=True, width=40, highlight=False)
    term.print("[red]" + " ".join(["word"] * 20))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b[" in lines[0]  # wrapped at 40 columns, in colour
