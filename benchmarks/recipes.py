"""Quality of every shipped recipe on the embedded task: 3 seeds each, one table.

    python benchmarks/recipes.py                       # every recipe, seeds 0 1 2, recipe budgets
    python benchmarks/recipes.py --recipes grpo dapo --seeds 0 1 2 --steps 500

Each (recipe, seed) run goes to benchmarks/runs/<recipe>/seed<S>/ and is skipped when its
summary.json exists, so an interrupted benchmark resumes (a run cut mid-way resumes from its last
checkpoint). The table, benchmarks/recipes.md, is rewritten from every finished run after each run:
held-out pass@1 after training (mean over seeds, with a t-interval), the gain over the base, pass@16,
the policy's token entropy and the mean completion length over the last 100 steps, and wall time.
Runs are sequential on purpose: two training processes on a 2-core machine slow each other down.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from rlvr.compare import mean_ci
from rlvr.train.config import load_config, recipe_names
from rlvr.train.trainer import train
from rlvr.utils import atomic_write_text, console

ROOT = Path(__file__).resolve().parent


def _pm(mean: float, half: float, sign: str = "") -> str:
    """'m ± h', or just 'm (1 seed)' when there is no interval."""
    if math.isnan(half):
        return f"{mean:{sign}.1f} (1 seed)"
    return f"{mean:{sign}.1f} ± {half:.1f}"


def mean_half(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (``rlvr.compare.mean_ci``; nan for one value)."""
    m, lo, hi = mean_ci(xs)
    return m, (hi - lo) / 2


def run_one(recipe: str, seed: int, steps: int | None, out: Path) -> None:
    overrides = [f"train.seed={seed}", "eval.samples=16"]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    cfg = load_config(recipe, overrides)
    t0 = time.perf_counter()
    resume = (out / "config.toml").exists()
    train(cfg, run_dir=out, resume=resume, progress=False)
    (out / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")


def _tail_mean(metrics: Path, key: str, n: int = 100) -> float:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    vals = [r[key] for r in rows[-n:] if key in r and r[key] == r[key]]
    return statistics.fmean(vals) if vals else math.nan


def table(runs: Path) -> str:
    lines = [
        "| recipe | seeds | pass@1 after (mean ± 95% CI) | gain over base | pass@16 "
        "| entropy (last 100 steps) | length | wall time / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rdir in sorted(p for p in runs.iterdir() if p.is_dir()):
        sums = []
        for sdir in sorted(rdir.glob("seed*")):
            if (sdir / "summary.json").exists():
                s = json.loads((sdir / "summary.json").read_text())
                wall = (
                    float((sdir / "wall_s.txt").read_text())
                    if (sdir / "wall_s.txt").exists()
                    else math.nan
                )
                sums.append((sdir, s, wall))
        if not sums:
            continue
        p1 = mean_half([100 * s["after"]["pass@1"] for _, s, _ in sums])
        gain = mean_half([100 * s["pass@1_gain"] for _, s, _ in sums if "pass@1_gain" in s])
        p16 = statistics.fmean(100 * s["after"].get("pass@16", math.nan) for _, s, _ in sums)
        ent = statistics.fmean(_tail_mean(d / "metrics.jsonl", "entropy") for d, _, _ in sums)
        length = statistics.fmean(_tail_mean(d / "metrics.jsonl", "response_length") for d, _, _ in sums)
        wall = statistics.fmean(w for _, _, w in sums)
        lines.append(
            f"| {rdir.name} | {len(sums)} | {_pm(*p1)} | {_pm(*gain, sign='+')} "
            f"| {p16:.1f} | {ent:.3f} | {length:.2f} | {wall / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--recipes", nargs="*", default=None, help="default: every shipped recipe")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="default: each recipe's own train.steps")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs")
    ap.add_argument("--out", type=Path, default=ROOT / "recipes.md")
    ap.add_argument("--table-only", action="store_true", help="rewrite the table from finished runs")
    args = ap.parse_args()
    header = (
        "# Recipes on the embedded task\n\n"
        "Produced by `python benchmarks/recipes.py` (see its docstring); held-out set: 256 "
        "chain_sum problems, 16 samples each; numbers in %. Wall times are only comparable within "
        "one uncontended session.\n\n"
        "With one update per rollout batch (the grpo recipe) the PPO ratio is exactly 1 at the "
        "update, so clip bounds do nothing: recipes that differ from grpo only in clipping need "
        "several mini-batches or epochs (dapo uses 4 mini-batches) to differ at all.\n\n"
    )
    if args.table_only:
        atomic_write_text(args.out, header + table(args.runs))
        console.print(table(args.runs))
        return
    for recipe in args.recipes or recipe_names():
        for seed in args.seeds:
            out = args.runs / recipe / f"seed{seed}"
            if (out / "summary.json").exists():
                continue
            console.print(f"[bold]{recipe} seed {seed}[/bold] -> {out}")
            run_one(recipe, seed, args.steps, out)
            atomic_write_text(args.out, header + table(args.runs))
    console.print(table(args.runs))


if __name__ == "__main__":
    main()
