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
