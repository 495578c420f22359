"""The ``rlvr`` command line: train, eval, base, recipes, tasks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

USER_ERRORS: tuple[type[BaseException], ...] = ()


def _train(args: argparse.Namespace) -> int:
    from rlvr.train.config import apply_overrides, config_from_dict, load_config
    from rlvr.train.trainer import train

    if args.resume:
        run_dir = Path(args.resume)
        cfg_file = run_dir / "config.toml"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory: no config.toml")
        import tomllib

        data = tomllib.loads(cfg_file.read_text())
        cfg = config_from_dict(apply_overrides(data, args.overrides))
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
        cfg = load_config(args.recipe, overrides)
        summary = train(cfg, run_dir=args.run_dir, runs_root=args.runs_root, progress=not args.quiet)
    _print_summary(summary)
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
    from rlvr.eval import evaluate
    from rlvr.models.tiny import ensure_base, load_model, load_tokenizer
    from rlvr.train.config import load_config
    from rlvr.train.trainer import build_task, build_verifier
    from rlvr.utils import console, pick_device

    cfg = load_config(args.recipe, args.overrides)
    model_path = Path(args.model) if args.model else None
    tok = load_tokenizer(model_path or ensure_base()) if cfg.task.max_prompt_tokens else None
    task = build_task(cfg, tok)  # a bad task fails before any model is loaded
    model_path = model_path or ensure_base()
    model, tok = load_model(model_path, device=pick_device(cfg.model.device))
    res = evaluate(
        model,
        tok,
        task.heldout,
        build_verifier(cfg),
        n=args.samples,
        max_new_tokens=cfg.eval.max_new_tokens,
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        seed=cfg.train.seed,
    )
    s = res.summary()
    for k in sorted(res.pass_at):
        lo, hi = res.ci[k]
        console.print(
            f"pass@{k:<4d} {100 * res.pass_at[k]:5.1f}%  (95% CI {100 * lo:.1f}–{100 * hi:.1f})"
        )
    console.print(
        f"mean length {s['mean_length']:.2f} tokens over {len(task.heldout)} problems "
        f"× {args.samples} samples ({model_path})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, "correct": res.correct}, indent=2))
    return 0


def _base(args: argparse.Namespace) -> int:
    from rlvr.models.tiny import TinyRecipe, build_base, cache_dir, ensure_base
    from rlvr.utils import console

    recipe = TinyRecipe()
    if args.out:
        path = build_base(recipe, args.out)
    elif args.force:
        path = build_base(recipe, cache_dir() / "base" / recipe.key())
    else:
        path = ensure_base(recipe)
    console.print(f"base model: {path}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from rich.table import Table

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
    table = Table("recipe", "components", "what it does", "paper", show_lines=False)
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
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=_train)

    p = sub.add_parser(
        "eval",
        parents=[plugin],
        help="held-out pass@k of a model",
        description="Sample n completions per held-out problem; print pass@k.",
    )
    p.add_argument("--model", help="local Hugging Face causal-LM directory (default: embedded)")
    p.add_argument("--recipe", default="grpo", help="recipe whose task and eval settings to use")
    p.add_argument("--samples", "-n", type=int, default=8, help="samples per problem")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=_eval)

    p = sub.add_parser(
        "base",
        parents=[plugin],
        help="build (or reuse) the embedded tiny base model",
        description="Build the embedded tiny base model, cached by recipe hash.",
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
