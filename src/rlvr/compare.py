"""`rlvr compare`: a grid of recipes x seeds, its statistics, and a self-contained HTML report.

    rlvr compare --recipes grpo,dr_grpo,dapo --seeds 3 train.steps=100 eval.samples=4

Every (recipe, seed) run goes to ``DIR/<recipe>/seed<S>/`` (a normal run directory, see
``rlvr.train.trainer.train``). Runs go one after the other, seed-major (every recipe's seed 0, then
every recipe's seed 1, ...), so a grid stopped half-way already holds a like-for-like comparison.
Given an existing ``DIR`` the grid resumes: a finished run (``summary.json`` present) is skipped, an
interrupted one continues from its newest checkpoint, and a run directory whose ``config.toml`` differs
from the config the grid would run now is refused with the differing fields named.

Statistics, per recipe over its finished seeds (values x_1..x_n, one per seed):

    mean  m = (1/n) sum x_i;  sample sd  s = sqrt(sum (x_i - m)^2 / (n - 1))
    95% t-interval: m +- t_{0.975, n-1} s / sqrt(n)

for the final held-out pass@1, pass@k at the largest k, and the pass@1 gain over the base model.

Significance, for each pair of recipes (A, B), Welch's unequal-variance t-test on final pass@1:

    d = m_A - m_B;  se = sqrt(s_A^2 / n_A + s_B^2 / n_B);  t = d / se
    df = se^4 / ((s_A^2 / n_A)^2 / (n_A - 1) + (s_B^2 / n_B)^2 / (n_B - 1))   (Welch-Satterthwaite)
    p = P(|T_df| >= |t|);   95% CI of d: d +- t_{0.975, df} se

with Student's t distribution from scipy.stats (df need not be an integer). Why Welch and not a
permutation test over seeds: with 3 seeds per recipe there are only C(6, 3) = 20 ways to split the 6
values, so the smallest two-sided permutation p-value is 2 / 20 = 0.1 and no difference could ever
reach p < 0.05. Welch's test assumes that a recipe's per-seed pass@1 is roughly normal (plausible:
each is a mean over hundreds of problems and samples) but cannot check it from 3 values; with df
around 2 to 4 the critical |t| is 2.8 to 4.3, so only differences several times larger than the
seed-to-seed spread are flagged, and a non-significant result says little. Holm's step-down
adjustment for the number of pairs is reported beside the raw p-value:

    sort p_(1) <= ... <= p_(m);  p_holm_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))

Outputs: ``DIR/compare.json`` (every number below) and ``DIR/report.html`` (plots embedded as base64
PNG): the recipe table, the pairwise tests, final pass@1 per seed, pass@k curves, learning curves
(mean over seeds with a min-max band), the per-run table, the command and the configs.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import shlex
import statistics
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CURVE_METRICS",
    "WelchResult",
    "add_compare_parser",
    "holm",
    "mean_ci",
    "parse_recipes",
    "parse_seeds",
    "run_compare",
    "run_grid",
    "summarize",
    "t_cdf",
    "t_ppf",
    "welch_test",
    "write_compare",
]

# metric key in metrics.jsonl -> plot title; a metric is plotted when some run logged it
CURVE_METRICS: dict[str, str] = {
    "reward_mean": "reward",
    "accuracy": "train accuracy",
    "heldout_pass@1": "held-out pass@1",
    "entropy": "token entropy",
    "response_length": "response length (tokens)",
    "kl": "KL to reference",
    "clip_frac": "clip fraction",
}
MAX_CURVE_POINTS = 400  # curves are smoothed, then thinned to this many steps for plots and JSON
SMOOTH_DIV = 25  # per-step metrics: trailing mean over 1/25 of the run (at least 5 steps)


# ---------------------------------------------------------------------------------------------------
# the t distribution (scipy.stats)


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail P(|T| >= |t|) of Student's t with ``df`` degrees of freedom (scipy.stats.t)."""
    if df <= 0 or math.isnan(df) or math.isnan(t):
        return math.nan
    return float(2.0 * _t().sf(abs(t), df))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df > 0, need not be an integer)."""
    return float(_t().cdf(t, df))


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (0 < q < 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf needs 0 < q < 1, got {q}")
    return float(_t().ppf(q, df))


def _t() -> Any:
    """scipy's Student t distribution (imported on first use: scipy is slow to import)."""
    from scipy.stats import t

    return t


def mean_ci(xs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``xs`` and its two-sided t-interval,
    m +- t_{(1+level)/2, n-1} s / sqrt(n). The interval is (nan, nan) for fewer than 2 values."""
    vals = [float(x) for x in xs if x is not None and not math.isnan(x)]
    if not vals:
        return math.nan, math.nan, math.nan
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, math.nan, math.nan
    half = t_ppf(0.5 + level / 2, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half


@dataclass
class WelchResult:
    """Welch's t-test of mean(a) - mean(b): the difference with its CI, t, df and the two-sided p."""

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> WelchResult:
    """Welch's unequal-variance t-test (formulas in the module docstring).

    Needs at least 2 values per side (else every field but ``diff`` is nan). When both sides have zero
    spread the test degenerates: p = 1 for equal means, p = 0 otherwise (t = +-inf).
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
    if len(a) < 2 or len(b) < 2:
        return WelchResult(diff, math.nan, math.nan, math.nan, math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        t = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return WelchResult(diff, diff, diff, t, math.nan, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    half = t_ppf(0.5 + level / 2, df) * se
    return WelchResult(diff, diff - half, diff + half, t, df, t_sf2(t, df))


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [math.nan] * len(ps)
    m, run = len(idx), 0.0
    for rank, i in enumerate(idx):
        run = max(run, min(1.0, (m - rank) * ps[i]))
        out[i] = run
    return out


# ---------------------------------------------------------------------------------------------------
# the grid


def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2] (that many seeds from 0); ``"0,5"`` -> [0, 5] (an explicit list; a single
    explicit seed is written ``"5,"``)."""
    text = text.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise ValueError(
            f"--seeds {text!r}: expected a count (3 means seeds 0,1,2) or a comma-separated list of "
            "non-negative integers (0,5)"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct non-negative integers")
    return seeds


def parse_recipes(text: str) -> list[str]:
    """``"grpo,dr_grpo"`` -> ["grpo", "dr_grpo"]: names or .toml/.yaml paths, with distinct
    directory names."""
    recipes = [r.strip() for r in text.split(",") if r.strip()]
    if not recipes:
        raise ValueError(f"--recipes {text!r}: expected a comma-separated list of recipe names")
    dirs = [_recipe_dir(r) for r in recipes]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"--recipes {text!r}: two recipes would share a directory name ({dirs})")
    return recipes


def _recipe_dir(recipe: str) -> str:
    return Path(recipe).stem if Path(recipe).suffix in (".toml", ".yaml", ".yml") else recipe


def _run_dir(out: Path, recipe: str, seed: int) -> Path:
    return out / _recipe_dir(recipe) / f"seed{seed}"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_diff(old_toml: str, new_toml: str) -> list[str]:
    """Dotted fields whose values differ between two config.toml texts."""
    old, new = _flat(tomllib.loads(old_toml)), _flat(tomllib.loads(new_toml))
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def run_grid(
    recipes: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    after_run: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every (recipe, seed) into ``out/<recipe>/seed<S>/``; resumable (see the module docstring).

    ``overrides`` (section.field=value) apply to every run, then ``train.seed=S``. Every config is
    built and checked before the first run starts. ``train_fn`` replaces ``rlvr.train.trainer.train``
    (tests); ``after_run`` is called after each run that trained, but the last. A run's wall time
    (``wall_s.txt``) sums the sessions it took. Returns one record per run: recipe, seed, dir,
    action ("skipped", "new" or "resumed") and wall_s (None if skipped).
    """
    from rlvr.train.config import ConfigError, load_config
    from rlvr.utils import atomic_write_text, console

    if train_fn is None:
        from rlvr.train.trainer import train as train_fn
    out = Path(out)
    plan = []
    for seed in seeds:  # seed-major: a grid stopped half-way still compares like with like
        for recipe in recipes:
            cfg = load_config(recipe, [*overrides, f"train.seed={seed}"])
            rdir = _run_dir(out, recipe, seed)
            if (rdir / "config.toml").exists():
                changed = _config_diff((rdir / "config.toml").read_text(), cfg.to_toml())
                if changed:
                    shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                    raise ConfigError(
                        f"{rdir / 'config.toml'} differs from the config this grid would run "
                        f"(fields: {shown}); resume with the same recipes and overrides, or pass a "
                        "new --out"
                    )
            plan.append((recipe, seed, cfg, rdir))
    records = []
    for i, (recipe, seed, cfg, rdir) in enumerate(plan, 1):
        head = f"[bold][{i}/{len(plan)}][/bold] {recipe} seed {seed}"
        if (rdir / "summary.json").exists():
            console.print(f"{head}: finished earlier, skipped ({rdir})")
            rec = {"recipe": recipe, "seed": seed, "dir": str(rdir), "action": "skipped", "wall_s": None}
            records.append(rec)
            continue
        resume = (rdir / "config.toml").exists()
        action = "resumed" if resume else "new"
        console.print(
            f"{head}: {'resuming' if resume else 'training'} {cfg.train.steps} steps -> {rdir}"
        )
        partial = rdir / "wall_s.partial"  # time spent in earlier, interrupted sessions of this run
        before = float(partial.read_text()) if resume and partial.exists() else 0.0
        t0 = time.perf_counter()
        try:
            summary = train_fn(cfg, run_dir=rdir, resume=resume, progress=progress)
        except BaseException:
            if rdir.is_dir():
                atomic_write_text(partial, f"{before + time.perf_counter() - t0:.1f}\n")
            raise
        wall = before + time.perf_counter() - t0
        atomic_write_text(rdir / "wall_s.txt", f"{wall:.1f}\n")
        partial.unlink(missing_ok=True)
        line = f"{head}: done in {wall:.0f} s"
        if "before" in summary and "after" in summary:
            b, a = summary["before"]["pass@1"], summary["after"]["pass@1"]
            line += f"; held-out pass@1 {100 * b:.1f}% -> {100 * a:.1f}% ({100 * (a - b):+.1f} points)"
        console.print(line)
        records.append(
            {"recipe": recipe, "seed": seed, "dir": str(rdir), "action": action, "wall_s": wall}
        )
        if after_run is not None and i < len(plan):
            after_run()
    return records


# ---------------------------------------------------------------------------------------------------
# statistics over the grid


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    """Trailing moving average over ``w`` points (fewer at the start); nan-aware."""
    ok = ~np.isnan(y)
    cs = np.concatenate([[0.0], np.cumsum(np.where(ok, y, 0.0))])  # [n + 1]
    cn = np.concatenate([[0], np.cumsum(ok)])  # [n + 1]
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(0, i - w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cs[i] - cs[lo]) / (cn[i] - cn[lo])  # [n]


def _curve(runs: list[dict[str, Any]], key: str) -> dict[str, list[float]] | None:
    """Mean and min-max band across seeds of one metric, on the steps that every seed logged.

    Per-step metrics are smoothed per seed first (trailing mean over 4% of the run, at least 5
    steps, when the run has more than 20); held-out
    pass@1 is not (it is measured every eval.every steps) and gets the base (step 0) and final
    (last step) evaluations added.
    """
    series = []
    for r in runs:
        pts = {row["step"]: row[key] for row in r["metrics"] if key in row and row[key] is not None}
        if key == "heldout_pass@1":
            s = r["summary"]
            if "before" in s:
                pts[0] = s["before"]["pass@1"]
            if "after" in s:
                pts[int(s.get("steps", max(pts, default=0)))] = s["after"]["pass@1"]
        if not pts:
            return None
        series.append(pts)
    steps = sorted(set.intersection(*(set(p) for p in series)))
    if not steps:
        return None
    ys = np.array([[p[s] for s in steps] for p in series], dtype=float)  # [S, T]
    if key != "heldout_pass@1" and len(steps) > 20:
        w = max(5, len(steps) // SMOOTH_DIV)
        ys = np.stack([_smooth(y, w) for y in ys])  # [S, T]
    keep = np.unique(
        np.linspace(0, len(steps) - 1, min(len(steps), MAX_CURVE_POINTS)).round().astype(int)
    )
    ys = ys[:, keep]  # [S, T']
    with np.errstate(all="ignore"):
        return {
            "step": [steps[i] for i in keep],
            "mean": np.nanmean(ys, axis=0).tolist(),
            "low": np.nanmin(ys, axis=0).tolist(),
            "high": np.nanmax(ys, axis=0).tolist(),
        }


def _tail_mean(rows: list[dict[str, Any]], key: str, frac: float = 0.1) -> float:
    vals = [r[key] for r in rows if key in r and r[key] is not None and not math.isnan(r[key])]
    if not vals:
        return math.nan
    n = max(1, int(len(vals) * frac))
    return statistics.fmean(vals[-n:])


def _stat(xs: list[float]) -> dict[str, Any]:
    m, lo, hi = mean_ci(xs)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "values": xs}


def summarize(out: str | Path, recipes: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Every number of the comparison, from the run directories under ``out`` (finished runs only)."""
    out = Path(out)
    runs: list[dict[str, Any]] = []
    for recipe in recipes:
        for seed in seeds:
            rdir = _run_dir(out, recipe, seed)
            s = _read_json(rdir / "summary.json")
            rec: dict[str, Any] = {
                "recipe": recipe,
                "seed": seed,
                "dir": str(rdir.relative_to(out)),
                "finished": s is not None and "after" in s,
            }
            if rec["finished"]:
                wall = rdir / "wall_s.txt"
                rec.update(
                    summary=s,
                    metrics=_read_metrics(rdir / "metrics.jsonl"),
                    config=(rdir / "config.toml").read_text() if (rdir / "config.toml").exists() else "",
                    wall_s=float(wall.read_text()) if wall.exists() else math.nan,
                    boundary=s.get("boundary") or _boundary(rdir),
                )
            runs.append(rec)
    done = [r for r in runs if r["finished"]]
    ks = sorted(set.intersection(*(set(_ks(r["summary"]["after"])) for r in done)) if done else set())
    kmax = ks[-1] if ks else 1
    per_recipe: dict[str, Any] = {}
    for recipe in recipes:
        rr = [r for r in done if r["recipe"] == recipe]
        st: dict[str, Any] = {"seeds_done": [r["seed"] for r in rr], "seeds_planned": list(seeds)}
        if rr:
            st["pass@1"] = _stat([r["summary"]["after"]["pass@1"] for r in rr])
            st[f"pass@{kmax}"] = _stat([r["summary"]["after"][f"pass@{kmax}"] for r in rr])
            st["gain"] = _stat([r["summary"].get("pass@1_gain", math.nan) for r in rr])
            st["base_pass@1"] = _stat(
                [r["summary"].get("before", {}).get("pass@1", math.nan) for r in rr]
            )
            bounds = [r["boundary"] for r in rr if r["boundary"] is not None]
            for key in ("gained", "lost"):
                st[f"boundary_{key}"] = statistics.fmean(b[key] for b in bounds) if bounds else math.nan
            st["entropy_end"] = statistics.fmean(_tail_mean(r["metrics"], "entropy") for r in rr)
            st["length_end"] = statistics.fmean(_tail_mean(r["metrics"], "response_length") for r in rr)
            st["wall_s"] = statistics.fmean(r["wall_s"] for r in rr)
            passk = {}
            for label, part in (("after", "after"), ("before", "before")):
                rows = [r["summary"][part] for r in rr if part in r["summary"]]
                if rows:
                    passk[label] = {
                        str(k): {
                            "mean": statistics.fmean(x[f"pass@{k}"] for x in rows),
                            "min": min(x[f"pass@{k}"] for x in rows),
                            "max": max(x[f"pass@{k}"] for x in rows),
                        }
                        for k in ks
                    }
            st["passk"] = passk
        per_recipe[recipe] = st
    tests = []
    names = [r for r in recipes if len(per_recipe[r]["seeds_done"]) >= 1]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            res = welch_test(per_recipe[a]["pass@1"]["values"], per_recipe[b]["pass@1"]["values"])
            tests.append({"a": a, "b": b, **asdict(res)})
    for t, p in zip(tests, holm([t["p"] for t in tests]), strict=True):
        t["p_holm"] = p
        t["significant"] = bool(t["p"] < 0.05)
    curves: dict[str, dict[str, Any]] = {}
    for key in CURVE_METRICS:
        per = {}
        for recipe in recipes:
            rr = [r for r in done if r["recipe"] == recipe]
            c = _curve(rr, key) if rr else None
            if c is not None:
                per[recipe] = c
        if per:
            curves[key] = per
    configs = {}
    for recipe in recipes:
        rr = [r for r in done if r["recipe"] == recipe]
        if rr:
            configs[recipe] = rr[0]["config"]
    return {
        "out": str(out),
        "recipes": list(recipes),
        "seeds": list(seeds),
        "ks": ks,
        "k_max": kmax,
        "runs": [
            {k: v for k, v in r.items() if k not in ("metrics", "config", "summary")}
            | ({"summary": _slim(r["summary"])} if r["finished"] else {})
            for r in runs
        ],
        "recipe_stats": per_recipe,
        "tests": tests,
        "curves": curves,
        "configs": configs,
    }


def _boundary(rdir: Path) -> dict[str, int] | None:
    """The reasoning boundary from eval_before/after.json, for runs whose summary predates it."""
    from rlvr.eval import reasoning_boundary

    before, after = _read_json(rdir / "eval_before.json"), _read_json(rdir / "eval_after.json")
    if before is None or after is None or before.get("n") != after.get("n"):
        return None
    return reasoning_boundary(before["correct"], after["correct"])


def _ks(s: dict[str, Any]) -> list[int]:
    return sorted(int(k.split("@")[1]) for k in s if k.startswith("pass@") and "_ci" not in k)


def _slim(s: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in s.items()
        if k in ("steps", "before", "after", "pass@1_gain", "pass@1_gain_ci", "boundary", "crossover_k")
    }


def _json_safe(x: Any) -> Any:
    """nan and inf -> None, so that compare.json is standard JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------------
# the report

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9})
    return plt


def _legend_below(fig: Any, ax: Any, n: int) -> None:
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(n, 4),
        frameon=False,
    )


def _curve_plot(key: str, per: dict[str, Any], colors: dict[str, str]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 2.9))
    for recipe, c in per.items():
        marker = "o" if key == "heldout_pass@1" else None
        ax.plot(c["step"], c["mean"], color=colors[recipe], lw=1.6, marker=marker, ms=4, label=recipe)
        ax.fill_between(c["step"], c["low"], c["high"], color=colors[recipe], alpha=0.18, lw=0)
    ax.set_title(CURVE_METRICS[key])
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.margins(x=0.01)
    _legend_below(fig, ax, len(per))
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def _passk_plot(data: dict[str, Any], colors: dict[str, str]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    base = [
        st["passk"]["before"] for st in data["recipe_stats"].values() if "before" in st.get("passk", {})
    ]
    ks = data["ks"]
    if base:
        y = [statistics.fmean(b[str(k)]["mean"] for b in base) for k in ks]
        ax.plot(  # on top of the recipes, which often start from the same point
            ks, y, color="#444444", ls="--", marker="s", ms=4, lw=1.4, label="base model", zorder=4
        )
    for recipe, st in data["recipe_stats"].items():
        if "after" not in st.get("passk", {}):
            continue
        a = st["passk"]["after"]
        ax.plot(
            ks,
            [a[str(k)]["mean"] for k in ks],
            color=colors[recipe],
            marker="o",
            ms=4,
            lw=1.6,
            label=recipe,
        )
        ax.fill_between(
            ks,
            [a[str(k)]["min"] for k in ks],
            [a[str(k)]["max"] for k in ks],
            color=colors[recipe],
            alpha=0.15,
            lw=0,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("held-out pass@k")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    _legend_below(fig, ax, len(data["recipe_stats"]) + 1)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def _seeds_plot(data: dict[str, Any], colors: dict[str, str]) -> str:
    """Final held-out pass@1 of every seed (dots), the mean (bar) and its 95% t-interval (whisker)."""
    plt = _plt()
    names = [r for r, st in data["recipe_stats"].items() if "pass@1" in st]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(names), 3.2))
    for i, recipe in enumerate(names):
        st = data["recipe_stats"][recipe]["pass@1"]
        vals = [100 * v for v in st["values"]]
        jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)  # [S]
        ax.scatter(i + jitter, vals, color=colors[recipe], s=28, zorder=3, edgecolor="white", lw=0.5)
        ax.hlines(100 * st["mean"], i - 0.25, i + 0.25, color=colors[recipe], lw=2.2)
        if not math.isnan(st["ci_low"]):
            ax.vlines(i + 0.3, 100 * st["ci_low"], 100 * st["ci_high"], color=colors[recipe], lw=1.2)
    base = [
        v
        for st in data["recipe_stats"].values()
        if "base_pass@1" in st
        for v in st["base_pass@1"]["values"]
        if v is not None and not math.isnan(v)
    ]
    if base:
        ax.axhline(100 * statistics.fmean(base), color="#555555", ls="--", lw=1.0)
        ax.text(  # outside the axes, on the right, at the base model's height
            1.01,
            100 * statistics.fmean(base),
            "base",
            transform=ax.get_yaxis_transform(),
            fontsize=9,
            color="#555555",
            va="center",
            ha="left",
        )
    ax.set_xticks(range(len(names)), names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("held-out pass@1 (%)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def _pct(x: float | None, sign: str = "") -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:{sign}.1f}"


def _pm(st: dict[str, Any], sign: str = "") -> str:
    """'m [lo, hi]' in percent."""
    if math.isnan(st["ci_low"]):
        return f"{_pct(st['mean'], sign)} (1 seed)"
    lo, hi = _pct(st["ci_low"], sign), _pct(st["ci_high"], sign)
    return f"{_pct(st['mean'], sign)} <span class=ci>[{lo}, {hi}]</span>"


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _pval(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1120px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:0.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd;
padding-bottom:0.2em}.meta{color:#555;font-size:0.92em}
table{border-collapse:collapse;margin:0.6em 0}
td,th{border:1px solid #ccc;padding:4px 9px;font-size:13.5px;text-align:right}td{white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.ci{color:#666;font-size:12px}.sig{font-weight:bold;color:#b00020}.note{font-size:13px;color:#444;
max-width:60em}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:10px 18px;align-items:start}
img{max-width:100%}
.swatch{display:inline-block;width:0.8em;height:0.8em;border-radius:2px;margin-right:0.3em}
details{margin:0.4em 0}summary{cursor:pointer}
"""


def write_compare(out: str | Path, data: dict[str, Any], command: str = "") -> Path:
    """Write ``out/compare.json`` (``data`` plus the command) and ``out/report.html``; returns the
    path of the report."""
    from rlvr.utils import atomic_write_text

    out = Path(out)
    data = {**data, "command": command, "created": datetime.now().isoformat(timespec="seconds")}
    atomic_write_text(out / "compare.json", json.dumps(_json_safe(data), indent=1))
    recipes = data["recipes"]
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(recipes)}
    stats, kmax = data["recipe_stats"], data["k_max"]
    done = [r for r in data["runs"] if r["finished"]]
    esc = html.escape
    steps = sorted({r["summary"].get("steps") for r in done if r["summary"].get("steps") is not None})
    p = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rlvr compare</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rlvr compare: {esc(', '.join(recipes))}</h1>",
        f"<p class=meta>{len(recipes)} recipes × {len(data['seeds'])} seeds (seeds "
        f"{', '.join(map(str, data['seeds']))}); {len(done)} of {len(data['runs'])} runs finished"
        + (f"; {', '.join(map(str, steps))} training steps" if steps else "")
        + f"; written {esc(data['created'])}; directory <code>{esc(str(out))}</code></p>",
    ]
    if not done:
        p.append("<p>No finished run yet.</p></body></html>")
        atomic_write_text(out / "report.html", "\n".join(p))
        return out / "report.html"

    def swatch(r: str) -> str:
        return f"<span class=swatch style='background:{colors[r]}'></span>{esc(r)}"

    p.append(
        "<h2>Recipes</h2><table><tr><th>recipe</th><th>seeds</th><th>pass@1 after</th>"
        f"<th>pass@{kmax} after</th><th>gain over base</th><th>gained / lost (k={kmax})</th>"
        "<th>entropy (end)</th><th>length (end)</th><th>wall / run</th></tr>"
    )
    for r in recipes:
        st = stats[r]
        n_done, n_plan = len(st["seeds_done"]), len(st["seeds_planned"])
        if not n_done:
            p.append(f"<tr><td>{swatch(r)}</td><td>0/{n_plan}</td>" + "<td>–</td>" * 7 + "</tr>")
            continue
        p.append(
            f"<tr><td>{swatch(r)}</td><td>{n_done}/{n_plan}</td><td>{_pm(st['pass@1'])}</td>"
            f"<td>{_pm(st[f'pass@{kmax}'])}</td><td>{_pm(st['gain'], '+')}</td>"
            f"<td>{_num(st['boundary_gained'], 1)} / {_num(st['boundary_lost'], 1)}</td>"
            f"<td>{st['entropy_end']:.3f}</td><td>{st['length_end']:.2f}</td>"
            f"<td>{st['wall_s']:.0f} s</td></tr>"
        )
    p.append(
        "</table><p class=note>Held-out pass@k in %, mean over seeds with its 95% t-interval in "
        "brackets. Gain: the trained model's pass@1 minus the base model's, on the same problems. "
        f"Problems gained / lost: held-out problems that the trained model solves at least once in "
        f"{kmax} samples and the base never does, and the reverse (mean over seeds). Entropy and "
        "length: mean over the last 10% of training steps.</p>"
    )
    tests = data["tests"]
    if tests:
        p.append(
            "<h2>Pairwise tests on final pass@1</h2><table><tr><th>A − B</th><th>difference "
            "(points)</th><th>95% CI</th><th>t</th><th>df</th><th>p</th><th>p (Holm)</th></tr>"
        )
        for t in tests:
            cls = " class=sig" if t["significant"] else ""
            mark = " *" if t["significant"] else ""
            df = "–" if t["df"] is None or math.isnan(t["df"]) else f"{t['df']:.1f}"
            tv = "–" if t["t"] is None or math.isnan(t["t"]) else f"{t['t']:.2f}"
            p.append(
                f"<tr{cls}><td>{esc(t['a'])} − {esc(t['b'])}</td><td>{_pct(t['diff'], '+')}</td>"
                f"<td>[{_pct(t['ci_low'], '+')}, {_pct(t['ci_high'], '+')}]</td><td>{tv}</td>"
                f"<td>{df}</td><td>{_pval(t['p'])}{mark}</td><td>{_pval(t['p_holm'])}</td></tr>"
            )
        n_min = min(len(stats[r]["seeds_done"]) for r in recipes if stats[r]["seeds_done"])
        p.append(
            "</table><p class=note>Welch's t-test over seeds (unequal variances), two-sided; "
            "* marks p &lt; 0.05 (not adjusted); Holm's adjustment for the number of pairs beside it. "
            f"With {n_min} seed{'s' if n_min != 1 else ''} per recipe this test is weak: it has few "
            "degrees of freedom, cannot check its normality assumption, and misses any difference "
            "that is not several times the seed-to-seed spread, so a missing star does not mean the "
            "recipes are equal. (A permutation test over 3 + 3 seeds could not go below p = 0.1 at "
            "all.) Fewer than 2 seeds on a side: no test.</p>"
        )
    p.append(
        "<h2>Final pass@1 by seed</h2><div class=grid>"
        f"<img alt='final pass@1 per seed' src='data:image/png;base64,{_seeds_plot(data, colors)}'>"
        f"<img alt='pass@k curves' src='data:image/png;base64,{_passk_plot(data, colors)}'></div>"
        "<p class=note>Left: one dot per seed, the bar is the mean and the whisker its 95% "
        "t-interval; dashed: the base model. Right: held-out pass@k after training, mean over seeds "
        "with a min–max band; dashed: the base model (mean over the runs' evaluations).</p>"
    )
    if data["curves"]:
        p.append("<h2>Learning curves</h2><div class=grid>")
        for key, per in data["curves"].items():
            p.append(
                f"<img alt='{esc(CURVE_METRICS[key])}' "
                f"src='data:image/png;base64,{_curve_plot(key, per, colors)}'>"
            )
        p.append(
            "</div><p class=note>Mean over seeds (line) with the min–max band across seeds. "
            "Per-step metrics are smoothed per seed first, with a trailing mean over 4% of the run "
            "(at least 5 steps); "
            "held-out pass@1 is measured before training, every eval.every steps and after "
            "training.</p>"
        )
    p.append(
        "<h2>Runs</h2><table><tr><th>recipe</th><th>seed</th><th>pass@1 base</th><th>pass@1 after"
        f"</th><th>pass@{kmax} after</th><th>gain (95% CI over problems)</th><th>wall</th>"
        "<th>report</th></tr>"
    )
    for r in data["runs"]:
        if not r["finished"]:
            p.append(
                f"<tr><td>{swatch(r['recipe'])}</td><td>{r['seed']}</td>"
                "<td colspan=6 style='text-align:left'>not finished</td></tr>"
            )
            continue
        s = r["summary"]
        gain = "–"
        if "pass@1_gain" in s:
            lo, hi = s["pass@1_gain_ci"]
            gain = (
                f"{_pct(s['pass@1_gain'], '+')} <span class=ci>[{_pct(lo, '+')}, {_pct(hi, '+')}]</span>"
            )
        wall = r.get("wall_s")
        link = f"{r['dir']}/report.html"
        p.append(
            f"<tr><td>{swatch(r['recipe'])}</td><td>{r['seed']}</td>"
            f"<td>{_pct(s.get('before', {}).get('pass@1'))}</td><td>{_pct(s['after']['pass@1'])}</td>"
            f"<td>{_pct(s['after'].get(f'pass@{kmax}'))}</td><td>{gain}</td>"
            f"<td>{'–' if wall is None or math.isnan(wall) else f'{wall:.0f} s'}</td>"
            f"<td><a href='{esc(link)}'>{esc(r['dir'])}</a></td></tr>"
        )
    p.append("</table>")
    p.append("<h2>Command and configs</h2>")
    if command:
        p.append(f"<pre>{esc(command)}</pre>")
    p.append(
        "<p class=note>The resolved config of each recipe's first finished seed (the seeds differ "
        "only in train.seed).</p>"
    )
    for recipe, text in data["configs"].items():
        p.append(f"<details><summary>{swatch(recipe)}</summary><pre>{esc(text)}</pre></details>")
    p.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(p))
    return out / "report.html"


# ---------------------------------------------------------------------------------------------------
# command line


def add_compare_parser(sub: Any) -> None:
    """Add the ``compare`` subcommand to argparse subparsers ``sub`` (sets ``fn=run_compare``)."""
    p = sub.add_parser(
        "compare",
        help="train a grid of recipes x seeds and compare them (HTML report)",
        description="Run every (recipe, seed) one after the other into DIR/<recipe>/seed<S>/, then "
        "write DIR/compare.json and DIR/report.html: mean and 95% t-interval per recipe, learning "
        "curves with bands, pass@k curves and Welch's t-test for each pair of recipes. Give an "
        "existing DIR to resume: finished runs are skipped, interrupted ones continue from their "
        "checkpoint. Overrides (section.field=value) apply to every run.",
    )
    p.add_argument(
        "--recipes",
        default="grpo,dr_grpo,dapo",
        help="comma-separated recipe names or .toml/.yaml paths (default: grpo,dr_grpo,dapo)",
    )
    p.add_argument(
        "--seeds",
        default="3",
        help="a count (3: seeds 0,1,2) or a comma-separated list (0,5; a single seed: 5,)",
    )
    p.add_argument("--steps", type=int, help="training steps of every run (train.steps)")
    p.add_argument(
        "--out", help="grid directory (default: runs/compare-<time>; an existing one resumes)"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite compare.json and report.html from the finished runs in --out",
    )
    p.add_argument("--quiet", action="store_true", help="no per-step progress bars")
    p.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import this module or .py file first, so its registered components can be named",
    )
    p.add_argument("overrides", nargs="*", help="section.field=value, applied to every run")
    p.set_defaults(fn=run_compare)


def _command(args: argparse.Namespace, out: Path, recipes: list[str], seeds: list[int]) -> str:
    """The canonical command that (re)runs this grid."""
    parts = ["rlvr", "compare", "--recipes", ",".join(recipes), "--seeds", ",".join(map(str, seeds))]
    if len(seeds) == 1:
        parts[-1] += ","
    if args.steps is not None:
        parts += ["--steps", str(args.steps)]
    parts += ["--out", str(out)]
    for plug in args.plugin or []:
        parts += ["--plugin", plug]
    return shlex.join(parts + list(args.overrides))


def run_compare(args: argparse.Namespace) -> int:
    """The ``rlvr compare`` command: run (or resume) the grid, then write the comparison report."""
    from rlvr.train.config import ConfigError
    from rlvr.train.trainer import TrainingInterrupted
    from rlvr.utils import console

    try:
        recipes, seeds = parse_recipes(args.recipes), parse_seeds(args.seeds)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.out:
        out = Path(args.out)
    elif args.report_only:
        raise ConfigError("--report-only needs --out DIR (the grid directory to report on)")
    else:
        out = Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    if args.report_only and not out.is_dir():
        raise FileNotFoundError(f"--out {out}: no such grid directory")
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    command = _command(args, out, recipes, seeds)

    def report() -> Path:
        return write_compare(out, summarize(out, recipes, seeds), command)

    t0 = time.perf_counter()
    if not args.report_only:
        console.print(f"[bold]rlvr compare[/bold]: {len(recipes)} recipes × {len(seeds)} seeds -> {out}")
        try:
            run_grid(recipes, seeds, out, overrides, progress=not args.quiet, after_run=report)
        except TrainingInterrupted:
            console.print(f"[yellow]grid interrupted; resume it with:[/yellow] {command}", markup=True)
            raise
    path = report()
    data = json.loads((out / "compare.json").read_text())
    for r in recipes:
        st = data["recipe_stats"][r]
        if st.get("pass@1"):
            m, lo, hi = (st["pass@1"][k] for k in ("mean", "ci_low", "ci_high"))
            ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
            console.print(f"{r:>12s}: pass@1 {100 * m:.1f}%{ci} over {len(st['seeds_done'])} seeds")
    for t in data["tests"]:
        if t["p"] is not None:
            star = " *" if t["significant"] else ""
            console.print(
                f"{t['a']} − {t['b']}: {100 * t['diff']:+.1f} points, Welch p = {t['p']:.3f}{star}"
            )
    wall = time.perf_counter() - t0
    console.print(f"report: {path}  ({wall / 60:.1f} min)")
    return 0
