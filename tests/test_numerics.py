"""Portable numerics: which variables are set and when, and that an embedded base built from a
process whose torch started without them goes to a child process that has them, with the same
weights whatever the parent's threads and MKL instruction set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import pytest

import rlvr.numerics as numerics
from rlvr.models.tiny import build_portable, weights_sha
from tests.conftest import MICRO, skip_where_unportable

FLAGS = "flags\t\t: fpu sse2 avx fma avx2 bmi2\n"


def test_cpu_has_avx2_reads_the_flags(tmp_path):
    (tmp_path / "yes").write_text("processor\t: 0\n" + FLAGS)
    (tmp_path / "no").write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert numerics.cpu_has_avx2(tmp_path / "yes")
    assert not numerics.cpu_has_avx2(tmp_path / "no")
    assert not numerics.cpu_has_avx2(tmp_path / "missing")


def test_portable_env_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setattr(numerics, "cpu_has_avx2", lambda: True)
    assert numerics.portable_env({}) == numerics.PORTABLE_ENV
    kept = numerics.portable_env({"MKL_CBWR": "COMPATIBLE"})
    assert "MKL_CBWR" not in kept and kept["ATEN_CPU_CAPABILITY"] == "avx2"
    assert numerics.portable_env({"RLVR_NUMERICS": "native"}) == {}
    monkeypatch.setattr(numerics, "cpu_has_avx2", lambda: False)
    assert numerics.portable_env({}) == {}


def test_too_late_once_torch_is_imported(monkeypatch):
    import torch  # noqa: F401  (pytest has imported it already; this makes it plain)

    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert numerics.use_portable_numerics() is False
    assert "MKL_CBWR" not in os.environ


def test_cli_sets_the_variables_before_torch():
    code = (
        "import os, sys; from rlvr.numerics import use_portable_numerics, portable_env; "
        "want = portable_env(); use_portable_numerics(); import torch; "
        "from rlvr.numerics import portable_in_effect; "
        "print(bool(want), portable_in_effect(), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wanted, effect, _ = out.stdout.split()
    assert effect == wanted  # portable exactly where the machine allows it


def test_build_threads_restores():
    import torch

    before = torch.get_num_threads()
    with numerics.build_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not numerics.cpu_has_avx2(), reason="portable numerics need AVX2")
def test_portable_build_is_the_same_from_any_parent(tmp_path):
    skip_where_unportable("a portable build against one with MKL held to AVX")
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}
    env.pop("RLVR_NUMERICS", None)
    # in this process (the test suite starts torch with the variables, tests/conftest.py)
    first = build_portable(MICRO, tmp_path / "a", progress=False)
    meta = json.loads((first / "rlvr_base.json").read_text())["numerics"]
    assert meta == {
        "cpu_capability": "AVX2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "threads": 2,
    }
    # a parent whose torch started without them (so a child process builds it), with one thread
    # and MKL held to AVX instructions, builds the same weights
    code = (
        "import sys, json, torch; torch.set_num_threads(1); "
        "from rlvr.models.tiny import TinyRecipe, build_portable; "
        f"build_portable(TinyRecipe(**json.loads(sys.argv[1])), {str(tmp_path / 'b')!r}, "
        "progress=False)"
    )
    env["MKL_ENABLE_INSTRUCTIONS"] = "AVX"
    subprocess.run([sys.executable, "-c", code, json.dumps(asdict(MICRO))], env=env, check=True)
    assert weights_sha(tmp_path / "b") == weights_sha(first)


def test_check_reference_reports_a_different_build(micro_base, monkeypatch, capsys):
    import rlvr.models.tiny as tiny

    assert tiny.check_reference(MICRO, micro_base) is None  # no reference for the micro recipe
    monkeypatch.setitem(tiny.REFERENCE_WEIGHTS, MICRO.key(), "0" * 16)
    assert tiny.check_reference(MICRO, micro_base) is False
    assert "not the reference build's 0000000000000000" in capsys.readouterr().out
    monkeypatch.setitem(tiny.REFERENCE_WEIGHTS, MICRO.key(), weights_sha(micro_base))
    assert tiny.check_reference(MICRO, micro_base) is True


def test_cpu_has_amx_reads_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu avx2 fma amx_bf16 amx_tile\n")
    assert numerics.cpu_has_amx(info)
    info.write_text("processor: 0\nflags\t\t: fpu avx2 fma avx512f\n")
    assert not numerics.cpu_has_amx(info)
    assert not numerics.cpu_has_amx(tmp_path / "missing")
