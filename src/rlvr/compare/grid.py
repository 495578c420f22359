"""The grid of (recipe, seed) runs: parsing ``--recipes`` / ``--seeds`` and running the grid
resumably, seed-major, into ``DIR/<recipe>/seed<S>/``."""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["parse_recipes", "parse_seeds", "run_dir", "run_grid"]


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


def run_dir(out: Path, recipe: str, seed: int) -> Path:
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
            rdir = run_dir(out, recipe, seed)
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
