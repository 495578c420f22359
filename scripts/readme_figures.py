"""The README's quoted runs, measured and saved, so that a test can hold the README to them.

    python scripts/readme_figures.py                       # train both runs into runs/readme-*
    python scripts/readme_figures.py --reuse               # read finished run directories instead

Two runs, the ones the README quotes: ``make run`` (``rlvr train``: the default recipe on the
embedded base) and the calculator example (``rlvr train --recipe examples/calculator.toml``). Each is
started as the ``rlvr`` command (so with the portable numerics of ``rlvr.numerics``) into
``runs/readme-default`` and ``runs/readme-calculator``; ``--reuse`` reads a finished run directory
that is already there. The figures, the weights hash of the base each run started from and the
machine go to ``benchmarks/results/readme_figures.json``; ``tests/test_readme_figures.py`` checks
that the README quotes exactly these figures and that the bases are the reference builds
(``rlvr.models.tiny.REFERENCE_WEIGHTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "readme_figures.json"
RUNS = {  # name -> the rlvr train arguments
    "default": [],
    "calculator": ["--recipe", "examples/calculator.toml"],
}


def figures(run_dir: Path) -> dict:
    """The quoted numbers of one finished run, rounded as the final line of ``rlvr train`` prints
    them (percent, one decimal)."""
    s = json.loads((run_dir / "summary.json").read_text())
    base = json.loads((Path(s["model"]) / "rlvr_base.json").read_text())
    from rlvr.models.tiny import weights_sha

    lo, hi = s["pass@1_gain_ci"]
    kmax = max(int(k.split("@")[1]) for k in s["after"] if k.startswith("pass@") and "_ci" not in k)
    pct = lambda x: round(100 * x, 1)  # noqa: E731
    return {
        "steps": s["steps"],
        "base_key": base["key"],
        "base_weights": weights_sha(s["model"]),
        "pass@1_before": pct(s["before"]["pass@1"]),
        "pass@1_after": pct(s["after"]["pass@1"]),
        "gain": pct(s["pass@1_gain"]),
        "gain_ci": [pct(lo), pct(hi)],
        "k_max": kmax,
        f"pass@{kmax}_before": pct(s["before"][f"pass@{kmax}"]),
        f"pass@{kmax}_after": pct(s["after"][f"pass@{kmax}"]),
    }


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs-root", default=str(ROOT / "runs"), help="where the run directories go")
    ap.add_argument("--reuse", action="store_true", help="read finished runs, train none")
    args = ap.parse_args(argv)
    rlvr = Path(sys.executable).with_name("rlvr")
    result: dict = {
        "measured": date.today().isoformat(),
        "machine": {"cpu": cpu(), "cores": os.cpu_count(), "torch_threads": None},
        "runs": {},
    }
    for name, extra in RUNS.items():
        run_dir = Path(args.runs_root) / f"readme-{name}"
        if not (run_dir / "summary.json").exists():
            if args.reuse:
                print(f"{run_dir}: no finished run to reuse", file=sys.stderr)
                return 1
            cmd = [str(rlvr), "train", *extra, "--run-dir", str(run_dir), "--quiet"]
            print("running:", " ".join(cmd), flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
        result["runs"][name] = {"command": " ".join(["rlvr", "train", *extra]), **figures(run_dir)}
    import torch

    result["machine"]["torch_threads"] = torch.get_num_threads()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(OUT)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
