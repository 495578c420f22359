"""The ``rlvr`` command line: train, eval, compare, base, recipes, tasks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]

USER_ERRORS: tuple[type[BaseException], ...] = ()


def _train(args: argparse.Namespace) -> int:
    from rlvr.train.config import apply_overrides, config_from_dict, load_config
    from rlvr.train.scale import launch_learners, under_launcher
    from rlvr.train.setup import new_run_dir
    from rlvr.train.trainer import train

    if args.resume:
        run_dir = Path(args.resume)
        cfg_file = run_dir / "config.toml"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory: no config.toml")
        import tomllib

        data = tomllib.loads(cfg_file.read_text())
        cfg = config_from_dict(apply_overrides(data, args.overrides))
        if cfg.scale.learners > 1 and not under_launcher():
            return launch_learners(args.argv, cfg.scale.learners)
        summary = train(cfg, run_dir=run_dir, resume=True, progress=not args.quiet)
    else:
        overrides = list(args.overrides)
        if args.model:
            overrides.append(f"model.path={json.dumps(args.model)}")
        if args.steps is not None:
            overrides.append(f"train.steps={args.steps}")
        if args.seed is not None:
            overrides.append(f"train.seed={args.seed}")
        if args.on_bad_row:
            overrides.append(f"task.on_bad_row='{args.on_bad_row}'")
        for flag, key in (("workers", "workers"), ("learners", "learners"), ("staleness", "staleness")):
            if getattr(args, flag) is not None:
                overrides.append(f"scale.{key}={getattr(args, flag)}")
        if args.ray_address:
            overrides.append(f"scale.ray_address={json.dumps(args.ray_address)}")
        if args.shard:
            overrides.append(f"scale.shard={json.dumps(args.shard)}")
        cfg = load_config(args.recipe, overrides)
        if cfg.scale.learners > 1 and not under_launcher():
            # start the learner ranks with torchrun; they share the run directory picked here
            argv = (
                args.argv
                if args.run_dir
                else [*args.argv, "--run-dir", str(new_run_dir(cfg, Path(args.runs_root)))]
            )
            return launch_learners(argv, cfg.scale.learners)
        summary = train(cfg, run_dir=args.run_dir, runs_root=args.runs_root, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # one summary from a group of learner ranks
        _print_summary(summary)
    return 0


def _sft(args: argparse.Namespace) -> int:
    from rlvr.train.config import ConfigError
    from rlvr.train.sft import sft, sft_config
    from rlvr.utils import console

    overrides = list(args.overrides)
    for flag, key in (("model", "model_path"), ("steps", "steps"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={json.dumps(getattr(args, flag))}")
    run_dir = Path(args.resume or args.run_dir or Path(args.runs_root) / "sft")
    base = None
    if args.resume:
        saved = run_dir / "sft_config.json"
        if not saved.exists():
            raise FileNotFoundError(f"{run_dir} is not an sft run directory: no sft_config.json")
        base = json.loads(saved.read_text())
    try:
        cfg = sft_config(overrides, base)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    summary = sft(cfg, run_dir=run_dir, resume=bool(args.resume), progress=not args.quiet)
    b, a = summary["before"], summary["after"]
    parts = [f"{k} {b[k]:.3f} → {a[k]:.3f}" for k in ("heldout_loss", "pass@1") if k in a and k in b]
    console.print(f"[bold]held-out {', '.join(parts)}; model: {summary['model']}")
    return 0


def _print_summary(summary: dict) -> None:
    from rlvr.eval import summary_ks
    from rlvr.utils import console

    if "after" in summary and "before" in summary:
        b, a = summary["before"], summary["after"]
        lo, hi = summary["pass@1_gain_ci"]
        ks = summary_ks(a)
        kmax = ks[-1]
        console.print(
            f"[bold]held-out pass@1 {100 * b['pass@1']:.1f}% → {100 * a['pass@1']:.1f}% "
            f"(gain {100 * summary['pass@1_gain']:+.1f} points, 95% CI "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}]), pass@{kmax} {100 * b[f'pass@{kmax}']:.1f}% → "
            f"{100 * a[f'pass@{kmax}']:.1f}%; run dir: {summary['run_dir']}"
        )
        if "boundary" in summary:
            bd = summary["boundary"]
            cross = summary.get("crossover_k")
            console.print(
                f"reasoning boundary at k = {kmax}: {bd['gained']} problems gained, {bd['lost']} lost, "
                f"{bd['kept']} kept, {bd['neither']} solved by neither"
                + (f"; the base catches up at pass@{cross}" if cross else "")
            )
    else:
        console.print(f"run dir: {summary['run_dir']}")


def _eval(args: argparse.Namespace) -> int:
    """Evaluate one or more models on the recipe's held-out problems (n samples each); with --base,
    also the reasoning boundary of each --model against the base, and a pass@k plot."""
    import math

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from rlvr.eval import (
        boundary_rows,
        crossover_k,
        reasoning_boundary,
        summary_ks,
        write_boundary_csv,
    )
    from rlvr.eval.plots import save_passk_plot
    from rlvr.models.hf import check_model_dir, load_model, load_tokenizer
    from rlvr.models.tiny import EMBEDDED, ensure_base
    from rlvr.train.checkpoint import latest_checkpoint
    from rlvr.train.config import ConfigError, load_config
    from rlvr.train.evaluation import by_family, evaluate_problems
    from rlvr.train.setup import build_task, build_verifier
    from rlvr.utils import atomic_write_text, console, pick_device

    def resolve(value: str) -> Path | None:
        """A model argument -> its directory; None = the embedded base ('embedded')."""
        path = Path(value)
        if value == "embedded" and not path.exists():
            return None
        if path.is_dir() and (path / "checkpoints").is_dir() and not (path / "config.json").exists():
            ckpt = latest_checkpoint(path)  # a run directory: its newest complete checkpoint
            if ckpt is None:
                raise FileNotFoundError(f"run directory {path} has no complete checkpoint")
            path = ckpt
        return check_model_dir(path)  # FileNotFoundError naming the path and what is missing

    def label_of(path: Path | None) -> str:
        if path is None:
            return "embedded"
        if path.parent.name == "checkpoints":  # RUN/checkpoints/step_N -> RUN/step_N
            return f"{path.parent.parent.name}/{path.name}"
        return path.name

    cfg = load_config(args.recipe, args.overrides)
    n = args.samples if args.samples is not None else cfg.eval.samples
    if n < 1 or args.max_batch_seqs < 1:
        raise ConfigError(f"--samples ({n}) and --max-batch-seqs ({args.max_batch_seqs}) must be >= 1")
    if args.base and not args.model:
        raise ConfigError("--base needs at least one --model to compare with it")
    specs: list[tuple[str, Path | None]] = []  # (label, directory or None = embedded base)
    if args.base:
        specs.append(("base", resolve(args.base)))
    for value in args.model or ([] if args.base else ["embedded"]):
        path = resolve(value)
        label, i = label_of(path), 2
        while label in {s[0] for s in specs}:
            label, i = f"{label_of(path)}#{i}", i + 1
        specs.append((label, path))

    first = specs[0][1]
    embedded = EMBEDDED[cfg.model.embedded]
    tok = load_tokenizer(first or ensure_base(embedded)) if cfg.task.max_prompt_tokens else None
    task = build_task(cfg, tok)  # a bad task fails before any model is loaded
    problems = list(task.heldout)
    if not problems:
        raise ConfigError("the task has no held-out problems: set task.heldout_size (or heldout_path)")
    t = cfg.task
    task_desc = {"file": t.path, "env": f"env {t.env}"}.get(
        t.source, "+".join(t.mixture) if t.mixture else t.name
    )
    device = pick_device(cfg.model.device)
    verifier = build_verifier(cfg)
    results, dirs = {}, {}
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    for label, path in specs:
        dirs[label] = path or ensure_base(embedded, progress=not args.quiet)
        model, mtok = load_model(dirs[label], device=device)
        with Progress(*columns, TimeElapsedColumn(), console=console, disable=args.quiet) as bar:
            job = bar.add_task(f"eval {label}", total=len(problems))
            results[label] = evaluate_problems(
                model,
                mtok,
                problems,
                cfg,
                verifier,
                n=n,
                max_batch_seqs=args.max_batch_seqs,
                on_batch=lambda k, job=job, bar=bar: bar.update(job, advance=k),
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    summaries = {label: res.summary() for label, res in results.items()}
    table = Table(
        "metric",
        *results,
        title=f"held-out {task_desc}: {len(problems)} problems × {n} samples (95% CI over problems)",
    )

    def pct(s: dict[str, float], key: str) -> str:
        return f"{100 * s[key]:.1f}% [{100 * s[key + '_ci_low']:.1f}, {100 * s[key + '_ci_high']:.1f}]"

    ks = summary_ks(next(iter(summaries.values())))
    for metric in ("pass", "maj"):
        for k in ks:
            table.add_row(f"{metric}@{k}", *(pct(s, f"{metric}@{k}") for s in summaries.values()))
    for name, key, fmt in (
        ("mean length (tokens)", "mean_length", "{:.2f}"),
        ("entropy (nats/token)", "entropy", "{:.3f}"),
        ("distinct answers", "distinct_answers", "{:.2f}"),
    ):
        table.add_row(name, *(fmt.format(s.get(key, math.nan)) for s in summaries.values()))
    families = {label: by_family(problems, res.correct, n) for label, res in results.items()}
    for fam, row in next(iter(families.values())).items():  # a mixture: each family on its own
        table.add_row(
            f"{fam} ({row['problems']}): pass@1 / @{n}",
            *(
                f"{100 * f[fam]['pass@1']:.1f}% / {100 * f[fam][f'pass@{n}']:.1f}%"
                for f in families.values()
            ),
        )
    console.print(table)
    for label, path in specs:
        console.print(f"{label}: {'embedded base ' if path is None else ''}{dirs[label]}")

    boundary, crossovers, rows = [], {}, []
    if args.base:
        base = results["base"]
        trained = {label: res for label, res in results.items() if label != "base"}
        for label, res in trained.items():
            counts = reasoning_boundary(base.correct, res.correct)
            crossovers[label] = crossover_k(base.pass_at, res.pass_at)
            boundary.append({"model": label, "k": n, **counts, "crossover_k": crossovers[label]})
            cross = crossovers[label]
            console.print(
                f"reasoning boundary at k = {n}, base → {label}: {counts['gained']} gained, "
                f"{counts['lost']} lost, {counts['kept']} kept, {counts['neither']} solved by neither; "
                + (f"crossover at k = {cross} (the base catches up)" if cross else "no crossover")
            )
        rows = boundary_rows(
            [p.question for p in problems],
            [p.answer for p in problems],
            base.correct,
            {label: res.correct for label, res in trained.items()},
            n=n,
        )
    out_dir = Path(args.out) if args.out else None
    record = {
        "recipe": cfg.name,
        "task": task_desc,
        "problems": len(problems),
        "n": n,
        "seed": cfg.train.seed,
        "models": [
            {
                "label": label,
                "path": str(dirs[label]),
                "embedded": path is None,
                "summary": summaries[label],
                "correct": results[label].correct,
                "distinct": results[label].distinct,
                "voted": results[label].voted,
                "by_family": families[label],
            }
            for label, path in specs
        ],
    }
    if args.base:
        record.update(boundary=boundary, boundary_table=rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.json), json.dumps(record, indent=1))
        console.print(f"results: {args.json}")
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "eval.json", json.dumps(record, indent=1))
        if args.base:
            console.print(f"per-problem boundary: {write_boundary_csv(out_dir / 'boundary.csv', rows)}")
    plot = args.plot or (
        out_dir / "passk.png" if out_dir else Path(args.json).with_suffix(".png") if args.json else None
    )
    if plot:
        title = f"{task_desc}, {len(problems)} problems, n = {n}"
        console.print(f"plot: {save_passk_plot(plot, summaries, crossovers=crossovers, title=title)}")
    return 0


def _base(args: argparse.Namespace) -> int:
    from rlvr.models.tiny import EMBEDDED, build_portable, cache_dir, check_reference, ensure_base
    from rlvr.train.config import ConfigError
    from rlvr.utils import console

    if args.embedded not in EMBEDDED:
        raise ConfigError(f"--embedded {args.embedded!r}; valid names: {', '.join(EMBEDDED)}")
    recipe = EMBEDDED[args.embedded]
    if args.out or args.force:
        path = build_portable(recipe, args.out or cache_dir() / "base" / recipe.key())
        check_reference(recipe, path)
    else:
        path = ensure_base(recipe)
    console.print(f"base model: {path}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from rich.table import Column, Table

    from rlvr.train.config import load_config, recipe_names
    from rlvr.utils import console

    if args.action == "show":
        if not args.name:
            console.print("[red]error:[/red] `rlvr recipes show` needs a recipe name or path")
            return 2
        console.print(load_config(args.name, args.overrides).to_toml(), markup=False, end="")
        return 0
    if args.name or args.overrides:
        console.print(
            "[red]error:[/red] `rlvr recipes` takes no arguments; try `rlvr recipes show NAME`"
        )
        return 2
    # a recipe's name is never wrapped: it is what `rlvr train --recipe` takes
    recipe_col = Column("recipe", no_wrap=True)
    table = Table(recipe_col, "components", "what it does", "paper", show_lines=False)
    for name in recipe_names():
        cfg = load_config(name)
        a = cfg.algo
        parts = f"{a.credit or a.advantage} / {a.objective} / {a.aggregation}"
        if a.token_weights != "none":
            parts += f" / {a.token_weights}"
        if a.beta > 0:
            parts += f" / {a.kl} β={a.beta:g}"
        table.add_row(name, parts, cfg.description, cfg.paper)
    console.print(table)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    import dataclasses

    from reasoning_gym.factory import DATASETS
    from rich.table import Table

    from rlvr.utils import console

    if args.action == "show":
        if not args.name:
            console.print("[red]error:[/red] `rlvr tasks show` needs a task name")
            return 2
        if args.name not in DATASETS:
            console.print(
                f"[red]error:[/red] unknown reasoning-gym task {args.name!r}; `rlvr tasks` lists them"
            )
            return 2
        dataset_cls, config_cls = DATASETS[args.name][:2]
        table = Table("knob (task.kwargs)", "default", title=f"{args.name}: {dataset_cls.__module__}")
        for f in dataclasses.fields(config_cls):
            if f.name in ("seed", "size"):  # set by rlvr (train.seed, task.split_seed)
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            table.add_row(f.name, repr(default))
        console.print(table)
        import reasoning_gym

        item = reasoning_gym.create_dataset(args.name, seed=0, size=1)[0]
        console.print(f"example question: {item['question']}", markup=False)
        console.print(f"example answer:   {item['answer']}", markup=False)
        return 0
    groups: dict[str, list[str]] = {}
    for name, entry in DATASETS.items():
        groups.setdefault(entry[0].__module__.split(".")[1], []).append(name)
    table = Table("group", "tasks", title=f"{len(DATASETS)} reasoning-gym tasks (task.name)")
    for group in sorted(groups):
        table.add_row(group, ", ".join(sorted(groups[group])))
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr", description="Reinforcement-learning post-training with verifiable rewards."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plugin = argparse.ArgumentParser(add_help=False)
    plugin.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import this module or .py file first, so its registered components can be named "
        "(repeatable)",
    )

    p = sub.add_parser(
        "train",
        parents=[plugin],
        help="train a policy with a recipe",
        description="Train a policy. Overrides are section.field=value "
        "(TOML values), e.g. algo.clip_high=0.28 optim.lr=1e-4.",
    )
    p.add_argument("--recipe", default="grpo", help="shipped recipe name or .toml/.yaml path")
    p.add_argument("--model", help="local Hugging Face causal-LM directory (default: embedded)")
    p.add_argument("--steps", type=int, help="training steps (train.steps)")
    p.add_argument("--seed", type=int, help="seed (train.seed)")
    p.add_argument("--run-dir", help="run directory (default: RUNS_ROOT/<recipe>-<time>)")
    p.add_argument("--runs-root", default="runs", help="where new run directories go")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--on-bad-row",
        choices=["fail", "skip"],
        help="a dataset with bad rows: refuse it, listing them (fail, the default), or train on the "
        "good rows (skip) (task.on_bad_row)",
    )
    p.add_argument("--workers", type=int, help="Ray rollout workers (scale.workers)")
    p.add_argument(
        "--learners",
        type=int,
        help="data-parallel learner ranks, started with torchrun (scale.learners)",
    )
    p.add_argument(
        "--shard",
        choices=["none", "fsdp"],
        help="fsdp: shard the policy, its gradients and optimizer state over the learner ranks "
        "(scale.shard)",
    )
    p.add_argument("--ray-address", help="a running Ray cluster's address (scale.ray_address)")
    p.add_argument(
        "--staleness",
        type=int,
        help="asynchronous rollouts, generated up to this many steps ahead (scale.staleness)",
    )
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=_train)

    p = sub.add_parser(
        "eval",
        parents=[plugin],
        help="held-out pass@k, maj@k and the reasoning boundary of one or more models",
        description="Sample n completions per held-out problem of the recipe's task (any task, "
        "mixture or dataset file via overrides) with each model; print pass@k and maj@k with 95% "
        "CIs, length, entropy and distinct answers per model. With --base, also the reasoning "
        "boundary of each --model against the base at k = n, the crossover k, and a pass@k plot.",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="DIR",
        help="Hugging Face model directory, checkpoint (RUN/checkpoints/step_N) or run directory "
        "(its newest checkpoint); 'embedded' = the embedded base; repeatable (default: embedded)",
    )
    p.add_argument(
        "--base",
        metavar="DIR",
        help="the base model (same forms as --model): report which problems each --model gains "
        "and loses against it",
    )
    p.add_argument("--recipe", default="grpo", help="recipe whose task and eval settings to use")
    p.add_argument(
        "--samples", "-n", type=int, help="samples per problem (default: the recipe's eval.samples)"
    )
    p.add_argument(
        "--max-batch-seqs",
        type=int,
        default=4096,
        help="most sequences per generate call (prompts x samples); bounds memory for large n",
    )
    p.add_argument("--json", help="write all results (and the boundary table) to this JSON file")
    p.add_argument(
        "--out", metavar="DIR", help="write eval.json, boundary.csv (with --base) and passk.png here"
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="pass@k plot of every model (default: DIR/passk.png with --out, else next to --json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=_eval)

    p = sub.add_parser(
        "base",
        parents=[plugin],
        help="build (or reuse) an embedded tiny base model",
        description="Build an embedded tiny base model (rlvr.models.tiny.EMBEDDED), cached by "
        "recipe hash: 'default' (chain_sum answers), 'calculator' (calculator tool calls) or "
        "'reasoner' (worked solutions before the answer, on a task mixture; trained by rlvr sft).",
    )
    p.add_argument(
        "--embedded",
        default="default",
        metavar="NAME",
        help="which embedded base: default, calculator, reasoner or student (a train config's "
        "model.embedded; default: default)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--out", help="build into this directory instead of the cache")
    p.set_defaults(fn=_base)

    p = sub.add_parser(
        "recipes",
        parents=[plugin],
        help="list the shipped recipes, or show one resolved",
        description="`rlvr recipes` lists the shipped recipes with their components and paper; "
        "`rlvr recipes show NAME [section.field=value ...]` prints the resolved config as TOML.",
    )
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="recipe name or .toml/.yaml path (for show)")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=_recipes)

    p = sub.add_parser(
        "tasks",
        help="list the reasoning-gym tasks, or show one's generation knobs",
        description="`rlvr tasks` lists every reasoning-gym task by group; `rlvr tasks show NAME` "
        "lists its generation knobs (set them in task.kwargs, or per task in task.mixture) and an "
        "example problem.",
    )
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="task name (for show)")
    p.set_defaults(fn=_tasks)

    p = sub.add_parser(
        "sft",
        parents=[plugin],
        help="supervised warm start on worked solutions, a dataset or a run's good samples",
        description="Fine-tune a local HF causal LM (or the embedded base) on worked solutions of a "
        "reasoning-gym task (source=task), a dataset's solution field (source=file) or the "
        "samples of an rlvr train run with reward >= min_reward (source=samples). Settings are "
        "key=value (rlvr.train.sft.SFTConfig); RUN_DIR/model is the result.",
    )
    p.add_argument("--model", help="local HF model directory (default: the embedded base)")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir", help="run directory (default: RUNS_ROOT/sft)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an sft run from its newest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key=value (SFTConfig fields)")
    p.set_defaults(fn=_sft)

    from rlvr.compare import add_compare_parser  # light: heavy imports happen when it runs

    add_compare_parser(sub)
    return parser


def load_plugins(names: list[str]) -> None:
    """Import the user's modules (``--plugin``) so that their components register themselves.

    A name is a module on ``sys.path`` (the current directory included) or a path to a ``.py`` file.
    """
    from rlvr.plugins import import_plugin
    from rlvr.train.config import ConfigError

    for name in names:
        try:
            import_plugin(name)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
        except ModuleNotFoundError as err:
            raise ConfigError(f"plugin {name!r} cannot be imported: {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors before the heavy imports
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start learner ranks with
    from rlvr.numerics import use_portable_numerics

    use_portable_numerics()  # before torch starts: the same results on any machine with AVX2

    from rlvr.registry import UnknownComponentError
    from rlvr.train.config import ConfigError
    from rlvr.train.trainer import NonFiniteError, TrainingInterrupted
    from rlvr.utils import console

    try:
        load_plugins(getattr(args, "plugin", None) or [])
        return args.fn(args)
    except (ConfigError, UnknownComponentError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    except TrainingInterrupted as err:
        console.print(f"[yellow]{err}[/yellow]")
        return 128 + err.signum
    except NonFiniteError as err:
        console.print(f"[red]error:[/red] {err}")
        return 3
    except OSError as err:  # e.g. the disk filled up mid-run: checkpoints already saved are intact
        where = f" ({err.filename})" if err.filename else ""
        console.print(
            f"[red]error:[/red] {err.strerror or err}{where}; every checkpoint already saved is "
            "complete, and `rlvr train --resume RUN_DIR` continues from the newest"
        )
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
