"""Every number of a comparison, read from the grid's run directories: per-recipe statistics,
pairwise tests, learning curves (mean and min-max band over seeds) and pass@k curves."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.compare.grid import run_dir
from rlvr.compare.stats import holm, mean_ci, welch_test

__all__ = ["CURVE_METRICS", "json_safe", "summarize"]

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
            rdir = run_dir(out, recipe, seed)
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


def json_safe(x: Any) -> Any:
    """nan and inf -> None, so that compare.json is standard JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x
