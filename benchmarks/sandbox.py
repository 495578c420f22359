"""Throughput of the code sandbox on HumanEval's 164 canonical solutions.

    python benchmarks/sandbox.py                 # 1 and 2 workers, 2 rounds each
    python benchmarks/sandbox.py --workers 1 2 4 --rounds 3

Each program is ``prompt + canonical_solution`` run against its ``check`` by
:func:`rlvr.rewards.code.run_tests`: one sandbox process per program, all of a round submitted to a
thread pool of ``workers`` threads. Reported per worker count: programs/s (164 x rounds / wall time of
the rounds), and the p50/p95 latency of one call (from submission of the call to its result, so with
2 workers on 2 cores it includes queueing for a core, not for a thread). Also the bare cost of a
sandbox call (``run_python("pass")``) under each isolation mode this machine supports. Writes
benchmarks/results/sandbox.json and benchmarks/sandbox.md. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rlvr.data.code_tasks import humaneval_problems
from rlvr.rewards.code import run_tests
from rlvr.rewards.code import tests_of as get_tests
from rlvr.rewards.sandbox import run_python, sandbox_layers

ROOT = Path(__file__).resolve().parent


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of ``xs`` (q in [0, 100])."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "load_avg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "root": os.geteuid() == 0,
        "sandbox": sandbox_layers(),
    }


def bench_humaneval(workers: int, rounds: int) -> dict[str, object]:
    problems = humaneval_problems()
    jobs = []
    for p in problems:
        preamble, tests = get_tests(p.meta)
        jobs.append((p.meta["code_prompt"] + p.answer, tests, preamble))
    latencies: list[float] = []
    passed = 0

    def one(job: tuple[str, list[str], str]) -> tuple[bool, float]:
        t0 = time.perf_counter()
        run = run_tests(job[0], job[1], preamble=job[2], timeout=20.0)
        return run.all_passed, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(rounds):
            for ok, dt in pool.map(one, jobs):
                passed += ok
                latencies.append(dt)
    wall = time.perf_counter() - t0
    n = len(jobs) * rounds
    return {
        "workers": workers,
        "programs": n,
        "passed": passed,
        "wall_s": round(wall, 3),
        "programs_per_s": round(n / wall, 2),
        "latency_p50_ms": round(1000 * percentile(latencies, 50), 1),
        "latency_p95_ms": round(1000 * percentile(latencies, 95), 1),
    }


def bench_bare(mode: str, calls: int = 40) -> dict[str, object]:
    run_python("pass", isolation=mode)  # warm the page cache
    lat = []
    for _ in range(calls):
        t0 = time.perf_counter()
        res = run_python("pass", isolation=mode)
        lat.append(time.perf_counter() - t0)
        assert res.ok, res
    return {
        "isolation": mode,
        "calls": calls,
        "latency_p50_ms": round(1000 * percentile(lat, 50), 1),
        "latency_p95_ms": round(1000 * percentile(lat, 95), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    info = machine()
    layers = info["sandbox"]
    modes = ["full", "drop", "hook"] if layers["root"] else ["full", "hook"]  # type: ignore[index]
    modes = modes[modes.index(layers["mode"]) :]  # type: ignore[index]
    bare = []
    for mode in modes:
        try:
            bare.append(bench_bare(mode))
        except Exception as err:  # a mode this machine cannot set up (or cannot import in)
            bare.append({"isolation": mode, "error": str(err)[:200]})
    humaneval = [bench_humaneval(w, args.rounds) for w in args.workers]
    result = {"machine": info, "humaneval_canonical": humaneval, "bare_call": bare}

    out = ROOT / "results" / "sandbox.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        "# Code sandbox throughput",
        "",
        "Produced by `python benchmarks/sandbox.py` (see its docstring): HumanEval's 164 canonical",
        f"solutions, {args.rounds} rounds, one sandbox process per program (isolation "
        f"`{layers['mode']}`: namespaces {', '.join(layers['namespaces']) or 'none'}; "  # type: ignore[index]
        f"{'a uid of its own' if layers['drop_privileges'] else 'the caller uid'}; audit hook). "  # type: ignore[index]
        f"Machine: {info['cpu_count']} cores, {info['cpu_model'] or 'unknown CPU'}, kernel "
        f"{info['kernel']}, Python {info['python']}; load average at start "
        f"{info['load_avg_at_start'][0]:.1f} (1 min).",  # type: ignore[index]
        "",
        "| workers | programs | passed | programs/s | p50 latency (ms) | p95 latency (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in humaneval:
        lines.append(
            f"| {r['workers']} | {r['programs']} | {r['passed']} | {r['programs_per_s']} | "
            f"{r['latency_p50_ms']} | {r['latency_p95_ms']} |"
        )
    lines += ["", "Bare call (`run_python('pass')`, sequential):", ""]
    lines += ["| isolation | p50 (ms) | p95 (ms) |", "|---|---|---|"]
    for b in bare:
        if "error" in b:
            lines.append(f"| {b['isolation']} | unavailable: {b['error'][:60]} | |")
        else:
            lines.append(f"| {b['isolation']} | {b['latency_p50_ms']} | {b['latency_p95_ms']} |")
    (ROOT / "sandbox.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
