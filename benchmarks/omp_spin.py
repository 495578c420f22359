"""How long torch's OpenMP threads spin when they wait, and what it costs when the cores are shared.

    python benchmarks/omp_spin.py                    # idle and contended, three settings
    python benchmarks/omp_spin.py --steps 20 --contended-steps 8    # quicker

Importing rlvr sets ``GOMP_SPINCOUNT=1000`` (``rlvr._short_openmp_spin``) unless the user set it,
``OMP_WAIT_POLICY``, or ``RLVR_OMP_TUNING=0``. This runs the default job (``rlvr train``, grpo on the
embedded model, ``train.threads`` = all cores, no evaluation) with each setting:

- ``libgomp default``: ``RLVR_OMP_TUNING=0`` (a waiting thread spins 300,000 times, then sleeps);
- ``rlvr default``: 1,000 spins;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once);

on the machine as it is ("idle": run it with nothing else running) and with one busy process per core
beside it (``contended``: one other ``rlvr train`` per core, one torch thread each and the same
setting, each in a session of its own, as when experiments are started from different terminals;
started and stopped here). The session matters: with the kernel's autogroup scheduling (on by
default on desktop Linux, ``/proc/sys/kernel/sched_autogroup_enabled``) each session gets a fair
share of the CPU as a whole, so a spinning thread burns its own job's share while the thread it waits
for is off the CPU. Reported: the median of
the trainer's own ``step_time`` after the first 5 steps. Writes benchmarks/omp_spin.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# a competitor: another training run on the same machine, one torch thread, with the same setting
HOG = ["-m", "rlvr.cli", "train", "--quiet", "train.steps=1000000", "train.threads=1"]
HOG += [
    "eval.before=false",
    "eval.after=false",
    "train.tensorboard=false",
    "train.checkpoint_every=100000",
]
SETTINGS = [
    ("libgomp default (300,000 spins)", {"RLVR_OMP_TUNING": "0"}),
    ("rlvr default (1,000 spins)", {}),
    ("passive (no spinning)", {"OMP_WAIT_POLICY": "PASSIVE"}),
]


def _autogroup() -> str:
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return "unknown"
    return "on" if on else "off"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return {**env, **extra}


def _run(env_extra: dict[str, str], steps: int, run_dir: Path) -> float:
    env = _env(env_extra)
    cmd = [sys.executable, "-m", "rlvr.cli", "train", "--quiet", "--run-dir", str(run_dir)]
    cmd += [f"train.steps={steps}", "eval.before=false", "eval.after=false", "train.tensorboard=false"]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return statistics.median(r["step_time"] for r in rows[5:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="steps per idle run")
    ap.add_argument("--contended-steps", type=int, default=12, help="steps per contended run")
    ap.add_argument("--hog-start", type=float, default=15.0, help="seconds for the competitors to start")
    ap.add_argument("--out", type=Path, default=ROOT / "omp_spin.md")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    load0 = os.getloadavg()[0]
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cond in ("idle", "contended"):
            hogs = []
            try:
                for i, (label, extra) in enumerate(SETTINGS):
                    steps = a.steps if cond == "idle" else a.contended_steps
                    if cond == "contended":  # cores other training runs, each with the setting
                        hogs = [
                            subprocess.Popen(
                                [sys.executable, *HOG, "--run-dir", f"{tmp}/hog-{i}-{k}"],
                                env=_env(extra),
                                start_new_session=True,  # as from another terminal (see below)
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                            for k in range(cores)
                        ]
                        time.sleep(a.hog_start)  # until they train
                    try:
                        s = _run(extra, steps, Path(tmp) / f"{cond}-{i}")
                    finally:
                        for h in hogs:
                            h.kill()
                            h.wait()
                        hogs = []
                    res.setdefault(label, {})[cond] = s
                    print(f"{cond:9s} {label:32s} {s:.3f} s/step", flush=True)
            finally:
                for h in hogs:
                    h.kill()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    head += "+uncommitted src" if dirty else ""
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": head,
        "cores": cores,
        "load_before": load0,
        "s_per_step": res,
    }
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# OpenMP spin-waiting: the default job's step time, idle and with the cores shared",
        "",
        f"`python benchmarks/omp_spin.py` on {out['date']} at {head}, {cores} cores (load average "
        f"before: {load0:.2f}); `rlvr train` (grpo, embedded model, torch threads = cores), median "
        f"step_time after 5 steps of {a.steps} (idle) or {a.contended_steps} (contended: beside it, "
        "one other `rlvr train` per core, one torch thread each, with the same setting, each in a "
        "session of its own). Kernel autogroup scheduling: "
        f"{_autogroup()}.",
        "",
        "| setting | idle s/step | contended s/step |",
        "|---|---|---|",
    ]
    for label, r in res.items():
        lines.append(f"| {label} | {r['idle']:.3f} | {r['contended']:.3f} |")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
