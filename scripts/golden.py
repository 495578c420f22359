"""Record or check the golden metrics of the training loop (``tests/train/golden.py``).

    python scripts/golden.py record [--scale] [--only SUBSTRING ...]   # into tests/train/golden.json
    python scripts/golden.py check  [--scale] [--only SUBSTRING ...]   # exit 1 on any difference

Each case trains a few steps on the micro model of the test suite (built here in a temporary cache),
with one torch thread and the portable kernels of ``rlvr.numerics`` (as the test suite).
``--scale`` adds the scale-out cases: learner ranks under torchrun, Ray rollout
workers, asynchronous rollouts and FSDP2 (slower: each starts processes). ``record`` merges into the
existing file, so a case can be re-recorded alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scale_cases(base: Path, tmp: Path) -> dict[str, list[str]]:
    """case -> `rlvr train` arguments (the run directory is added): the runs of
    tests/train/test_scale_runs.py, with the same overrides."""
    from tests.train import golden

    ov = golden.scale_overrides(base, tmp)
    three = [*ov, "train.steps=3"]
    fsdp = [
        *ov,
        "train.steps=3",
        "train.checkpoint_every=2",
        "algo.beta=0.05",
        "algo.ref_reset_every=2",
        "eval.every=2",
        "eval.after=true",
    ]
    return {
        "scale/learners2": ["--learners", "2", *three],
        "scale/workers1": [*three, "scale.workers=1"],
        "scale/learners2_workers1": ["--learners", "2", "--workers", "1", *three],
        "scale/learners2_workers1_fsdp": [
            "--learners",
            "2",
            "--workers",
            "1",
            "--shard",
            "fsdp",
            *three,
        ],
        "scale/learners2_kl_reset_eval": ["--learners", "2", *fsdp],
        "scale/fsdp_kl_reset_eval": ["--learners", "2", "--shard", "fsdp", *fsdp],
        "scale/async": [
            *ov,
            "scale.workers=1",
            "scale.staleness=1",
            "train.checkpoint_every=2",
            "train.steps=4",
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("mode", choices=["record", "check"])
    ap.add_argument("--scale", action="store_true", help="also the scale-out cases")
    ap.add_argument("--only", nargs="*", default=None, help="cases whose name contains one of these")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rlvr-golden-"))
    os.environ["RLVR_CACHE"] = str(tmp / "cache")
    from rlvr.numerics import use_portable_numerics

    use_portable_numerics()  # the kernels of the test suite (tests/conftest.py), before torch starts
    import torch

    torch.set_num_threads(1)
    from tests.conftest import MICRO, MICRO_TEACHER, _length_reward
    from tests.train import golden

    from rlvr.cli import main as cli
    from rlvr.models.tiny import build_base
    from rlvr.rewards import REWARDS
    from rlvr.train.config import load_config
    from rlvr.train.trainer import train

    REWARDS._items["length"] = _length_reward
    base = build_base(MICRO, tmp / "micro" / "base", progress=False)
    teacher = build_base(MICRO_TEACHER, tmp / "micro_teacher" / "base", progress=False)
    from tests.conftest import micro_run

    jobs: list[tuple[str, object]] = []
    for case, (recipe, extra) in golden.in_process_cases(teacher).items():
        jobs.append((case, ("train", recipe, micro_run(base, *extra))))
    if args.scale:
        for case, argv in scale_cases(base, tmp).items():
            jobs.append((case, ("cli", argv)))
    if args.only:
        jobs = [(c, j) for c, j in jobs if any(s in c for s in args.only)]

    records = golden.load_golden() if golden.GOLDEN.exists() else {}
    failed = []
    for case, job in jobs:
        run = tmp / "runs" / case.replace("/", "_")
        t0 = time.perf_counter()
        if job[0] == "train":
            train(load_config(job[1], job[2]), run_dir=run, progress=False)
        else:
            code = cli(["train", "--quiet", "--run-dir", str(run), *job[1]])
            if code != 0:
                raise SystemExit(f"{case}: rlvr train exited {code}")
        got = golden.record_of(run)
        took = time.perf_counter() - t0
        if args.mode == "record":
            records[case] = got
            print(f"recorded {case} ({len(got['metrics'])} steps, {took:.1f} s)", flush=True)
        else:
            diffs = (
                golden.differences(records[case], got, case) if case in records else [f"{case}: none"]
            )
            print(f"{'ok  ' if not diffs else 'DIFF'} {case} ({took:.1f} s)", flush=True)
            for d in diffs[:10]:
                print("     " + d)
            failed += [case] if diffs else []
    if args.mode == "record":
        tmp_out = golden.GOLDEN.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(dict(sorted(records.items())), indent=1, sort_keys=True) + "\n")
        tmp_out.replace(golden.GOLDEN)
        print(f"wrote {golden.GOLDEN} ({len(records)} cases)")
        return 0
    print(f"{len(jobs) - len(failed)} of {len(jobs)} cases repeat their records")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
