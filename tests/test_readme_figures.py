"""The README quotes the runs that scripts/readme_figures.py measured, on the reference bases.

When a change moves these numbers, rerun ``python scripts/readme_figures.py`` and update the README;
this test fails until both agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.models.tiny import EMBEDDED, REFERENCE_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
FIGURES = json.loads((ROOT / "benchmarks" / "results" / "readme_figures.json").read_text())
README = (ROOT / "README.md").read_text()


def _p(x: float) -> str:
    return f"{x:.1f}%"


def test_runs_started_from_the_reference_bases():
    keys = {EMBEDDED["default"].key(): "default", EMBEDDED["calculator"].key(): "calculator"}
    for name, run in FIGURES["runs"].items():
        assert keys.get(run["base_key"]) == name, (name, run["base_key"])
        assert REFERENCE_WEIGHTS[run["base_key"]] == run["base_weights"], name


def test_readme_quotes_make_run():
    r = FIGURES["runs"]["default"]
    k = r["k_max"]
    lo, hi = r["gain_ci"]
    line = (
        f"held-out pass@1 {_p(r['pass@1_before'])} → {_p(r['pass@1_after'])} "
        f"(gain {r['gain']:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}]), "
        f"pass@{k} {_p(r[f'pass@{k}_before'])} → {_p(r[f'pass@{k}_after'])}"
    )
    assert line in README, f"README should quote: {line}"


def test_readme_quotes_the_calculator_run():
    r = FIGURES["runs"]["calculator"]
    lo, hi = r["gain_ci"]
    text = (
        f"{r['steps']} GRPO steps from the embedded tool base took held-out pass@1 from "
        f"{_p(r['pass@1_before'])} to {_p(r['pass@1_after'])} ({r['gain']:+.1f} points, 95% CI "
        f"[{lo:+.1f}, {hi:+.1f}]; one seed)"
    )
    flat = " ".join(README.split())  # the README wraps its lines
    assert text in flat, f"README should say: {text}"
