"""Importing rlvr shortens OpenMP spin-waiting unless the user chose (benchmarks/omp_spin.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import rlvr, os; print(os.environ.get('GOMP_SPINCOUNT'))"


@pytest.mark.parametrize(
    ("extra", "want"),
    [
        ({}, "1000"),
        ({"RLVR_OMP_TUNING": "0"}, "None"),  # the opt-out
        ({"GOMP_SPINCOUNT": "5"}, "5"),  # the user's own setting wins
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "None"),  # so does a wait policy
    ],
)
def test_importing_rlvr_sets_a_short_spin_count(extra, want):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.pop("RLVR_OMP_TUNING", None)
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == want
