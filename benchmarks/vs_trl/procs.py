"""rlvr vs TRL on 2 CPU cores, each in its best layout: one process with 2 threads, or 2 processes.

    python benchmarks/vs_trl/procs.py                    # 2 rounds x 4 layouts, 40 steps each
    python benchmarks/vs_trl/procs.py --rounds 1 --steps 16     # a quick look

``run.py`` compares the two trainers as one process each, with the same number of torch threads.
On 2 cores either trainer can instead run as 2 data-parallel processes of 1 thread: rlvr with
``rlvr train --learners 2`` (torchrun, gloo; each rank generates and back-propagates half the batch),
TRL with ``torchrun --nproc-per-node 2`` (DDP over gloo; ``per_device_train_batch_size`` halved so the
global batch stays 8 prompts x 8 samples). This script measures all four layouts on the same work as
run.py (the embedded model, the grpo recipe's task in rlvr's order, 8 x 8 samples, ``--max-new-tokens``
new tokens, temperature 1, beta 0, one optimizer step per batch, lr 1e-4, fp32) and compares each
trainer's best layout with the other's.

Each run trains freely for ``--steps`` steps (no driver pauses); a step's time is the wall time between
two consecutive optimizer-step ends (rlvr: the wall time of its per-step TensorBoard event; TRL: an
``on_step_end`` callback on rank 0). The first ``--warmup`` steps of a run are dropped. The layouts run
one after the other, in an order reversed every round, so slow drifts of the machine's load fall on all
of them. Needs the TRL venv that run.py creates (``.venv-trl``). Writes PROCS.md and procs.json here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TRL_VENV = HERE / ".venv-trl"
LAYOUTS = [("rlvr", 1), ("rlvr", 2), ("TRL", 1), ("TRL", 2)]  # (trainer, processes); 2 cores in all

sys.path.insert(0, str(HERE))
from rlvr_grpo import overrides  # noqa: E402  (the same work as run.py's rlvr side)


def _rlvr(procs: int, steps: int, tokens: int, run_dir: Path) -> list[float]:
    """Step-end wall times of an ``rlvr train`` run (rank 0's TensorBoard events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ov = [*overrides(tokens, steps), f"train.threads={2 // procs}", "train.tensorboard=true"]
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "--quiet", "--run-dir", str(run_dir)]
    cmd += ["--learners", str(procs)] if procs > 1 else []
    subprocess.run([*cmd, *ov], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return [e.wall_time for e in sorted(acc.Scalars("reward_mean"), key=lambda e: e.step)]


def _trl(procs: int, steps: int, tokens: int, prompts: Path, out: Path) -> list[float]:
    """Step-end times of a ``trl_free.py`` run (rank 0's callback)."""
    script = [str(HERE / "trl_free.py"), "--max-new-tokens", str(tokens), "--steps", str(steps)]
    script += ["--prompts", str(prompts), "--out", str(out), "--work", str(out.parent / "trl-work")]
    if procs == 1:
        cmd = [str(TRL_VENV / "bin" / "python"), *script]
        env = {**os.environ, "OMP_NUM_THREADS": "2"}
    else:
        cmd = [str(TRL_VENV / "bin" / "torchrun"), "--standalone", f"--nproc-per-node={procs}", *script]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["ends"]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=HERE / "PROCS.md")
    a = ap.parse_args()
    if not (TRL_VENV / "bin" / "torchrun").exists():
        raise SystemExit(f"{TRL_VENV} is missing: run benchmarks/vs_trl/run.py once to create it")
    if a.steps <= a.warmup + 2:
        raise SystemExit(f"--steps {a.steps} must exceed --warmup {a.warmup} by at least 3")
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {f"{t} x{p}": [] for t, p in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prompts = work / "prompts.json"
        subprocess.run(
            [sys.executable, str(HERE / "rlvr_grpo.py"), "dump", "--out", str(prompts),
             "--prompts", str(a.steps * 8)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for r in range(a.rounds):
            for trainer, procs in LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]:
                d = work / f"{trainer}-{procs}-{r}"
                if trainer == "rlvr":
                    ends = _rlvr(procs, a.steps, a.max_new_tokens, d)
                else:
                    d.mkdir()
                    ends = _trl(procs, a.steps, a.max_new_tokens, prompts, d / "ends.json")
                steps = [t1 - t0 for t0, t1 in itertools.pairwise(ends)][a.warmup :]
                times[f"{trainer} x{procs}"] += steps
                print(f"round {r}: {trainer} x{procs} median {statistics.median(steps):.3f} s/step")
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {t: min((k for k in med if k.startswith(t)), key=med.get) for t in ("rlvr", "TRL")}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip()  # fmt: skip
    res = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": head,
        "load_before": load0,
        "load_after": os.getloadavg(),
        "max_new_tokens": a.max_new_tokens,
        "steps": a.steps,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "s_per_step": {k: sorted(v) for k, v in times.items()},
        "median": med,
        "best": best,
        "ratio_best": med[best["TRL"]] / med[best["rlvr"]],
    }
    a.out.with_name(a.out.stem.lower() + ".json").write_text(json.dumps(res, indent=1))
    lines = [
        "# rlvr vs TRL on 2 cores, each in its best layout",
        "",
        f"`python benchmarks/vs_trl/procs.py` on {res['date']} at {head}: {a.rounds} rounds x 4 "
        f"layouts, {a.steps} steps each (the first {a.warmup} dropped), {a.max_new_tokens} new "
        f"tokens, 8 x 8 samples, grpo with beta 0. Load average before / after: {load0[0]:.2f} / "
        f"{res['load_after'][0]:.2f}. 'x2' is 2 processes of 1 thread (rlvr `--learners 2`, TRL under "
        "torchrun with DDP); 'x1' is one process of 2 threads.",
        "",
        "| layout | s/step median | p10 | p90 | steps measured |",
        "|---|---|---|---|---|",
    ]
    for k, v in times.items():
        lines.append(f"| {k} | {med[k]:.3f} | {_pct(v, 0.1):.3f} | {_pct(v, 0.9):.3f} | {len(v)} |")
    lines += [
        "",
        f"Best layouts: rlvr {best['rlvr']}, TRL {best['TRL']}; rlvr's best is "
        f"**{res['ratio_best']:.2f}x** TRL's best in steps per second. Same layout: "
        f"x1 {med['TRL x1'] / med['rlvr x1']:.2f}x, x2 {med['TRL x2'] / med['rlvr x2']:.2f}x.",
    ]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
