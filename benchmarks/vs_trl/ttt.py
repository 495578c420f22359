"""Time to target: wall time for rlvr and TRL's GRPOTrainer to reach a held-out pass@1 (issue 8).

    python benchmarks/vs_trl/ttt.py                  # 3 seeds, target = base pass@1 + 8 points
    python benchmarks/vs_trl/ttt.py --seeds 0 --every 50 --max-steps 200   # a quick look

Standard library only (like ``run.py``, whose worker processes and venvs it reuses). Per seed S:

1. the training stream of seed S is dumped (``rlvr_grpo.py dump --seed S``), so both trainers see the
   same prompts in the same order;
2. an evaluator (``ttt_eval.py``) measures the base's held-out pass@1; target = base + ``--gain``;
3. both trainers start from the base (the work of ``run.py``: 8 prompts x 8 samples, GRPO with
   beta = 0, one optimizer step per batch, lr 1e-4, 12 new tokens, the ``answer`` reward, fp32 on the
   CPU, seed S). TRL runs with ``--match-rlvr-optim`` (constant lr and Adam beta2 = 0.99, rlvr's
   defaults), so that both run the same algorithm and only the speed differs;
4. they take turns of ``--block`` steps (the order alternates), so that load from other processes
   falls on both alike; every ``--every`` steps each trainer's weights are saved and evaluated while
   both wait. A trainer stops at the first evaluation at or above the target, or at ``--max-steps``.

Time to target = the sum of the trainer's step walls (``protocol.py``: everything between two
optimizer steps, the driver's waits, saving and evaluation excluded) up to that evaluation; steps to
target likewise. Writes ttt.json and TTT.md next to this file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, REPO, TRL_PY, WORK, Proc, ensure_trl_venv, log

B = 8
T = 12  # max new tokens (rlvr's default; the cap never binds on this task, see RESULTS.md)


def evaluate(ev: Proc, path: str) -> dict[str, Any]:
    ev.send(path=path)
    msg = ev.recv()
    if msg.get("kind") != "eval":
        raise RuntimeError(f"evaluator: unexpected {msg}")
    return msg


def run_seed(seed: int, a: argparse.Namespace, rlvr_py: str) -> dict[str, Any]:
    d = WORK / f"ttt-seed{seed}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    prompts = d / "prompts.json"
    dump_args = ["--prompts", str(a.max_steps * B), "--seed", str(seed)]
    subprocess.run(
        [rlvr_py, str(HERE / "rlvr_grpo.py"), "dump", "--out", str(prompts), *dump_args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ev_cmd = [rlvr_py, str(HERE / "ttt_eval.py"), "--seed", str(seed)]
    ev = Proc("eval", ev_cmd, d / "eval.log", "default")
    if ev.recv().get("kind") != "ready":
        raise RuntimeError("evaluator did not start")
    base = evaluate(ev, "")
    target = base["pass1"] + a.gain
    log(f"seed {seed}: base pass@1 {base['pass1']:.4f}; target {target:.4f}")
    common = ["--max-new-tokens", str(T), "--steps", str(a.max_steps), "--prompts", str(prompts)]
    common += ["--seed", str(seed)]
    trl_out = ["--out-dir", str(d / "trl-out")]
    procs = {
        "trl": Proc(
            "trl",
            [str(TRL_PY), str(HERE / "trl_grpo.py"), *common, "--match-rlvr-optim", *trl_out],
            d / "trl.log",
            "default",
        ),
        "rlvr": Proc(
            "rlvr",
            [rlvr_py, str(HERE / "rlvr_grpo.py"), "train", *common, "--run-dir", str(d / "rlvr-run")],
            d / "rlvr.log",
            "default",
        ),
    }
    for p in procs.values():
        p.wait_ready()
    state = {k: {"steps": 0, "time_s": 0.0, "walls": [], "curve": [], "reached": None} for k in procs}
    active = list(procs)
    rnd = 0
    while active:
        # sub-blocks of --block steps, alternating, up to the next evaluation of every active trainer
        goal = {n: min(state[n]["steps"] + a.every, a.max_steps) for n in active}
        while any(state[n]["steps"] < goal[n] for n in active):
            for name in list(active if rnd % 2 == 0 else reversed(active)):
                st = state[name]
                k = min(a.block, goal[name] - st["steps"])
                if k <= 0:
                    continue
                steps, _ = procs[name].block(steps=k)
                st["steps"] += k
                st["walls"] += [s["wall"] for s in steps]
                st["time_s"] += sum(s["wall"] for s in steps)
            rnd += 1
        for name in list(active):
            st, p = state[name], procs[name]
            path = d / f"{name}-step{st['steps']}.pt"
            p.send(cmd="save", path=str(path))
            if p.recv().get("kind") != "saved":
                raise RuntimeError(f"{name}: save failed")
            e = evaluate(ev, str(path))
            path.unlink()
            load = os.getloadavg()[0]
            st["curve"].append(
                {"step": st["steps"], "time_s": st["time_s"], "pass1": e["pass1"], "load": load}
            )
            log(
                f"seed {seed} {name}: step {st['steps']} train time {st['time_s']:.1f} s "
                f"pass@1 {e['pass1']:.4f} (eval {e['seconds']:.1f} s, load {load:.2f})"
            )
            if e["pass1"] >= target or st["steps"] >= a.max_steps:
                if e["pass1"] >= target:
                    st["reached"] = {"step": st["steps"], "time_s": st["time_s"], "pass1": e["pass1"]}
                p.stop()
                active.remove(name)
    ev.p.stdin.close()  # type: ignore[union-attr]
    ev.p.wait(timeout=60)
    for st in state.values():
        st["median_step_s"] = statistics.median(st["walls"])
        del st["walls"]
    return {"seed": seed, "base_pass1": base["pass1"], "target": target, "trainers": state}


def write_md(res: dict[str, Any]) -> None:
    md = [
        "# Time to target: rlvr vs TRL GRPOTrainer on the CPU (issue 8)",
        "",
        f"Date: {res['date']}. Command: `{res['command']}`. rlvr commit {res['commit']}. "
        f"Machine: {os.cpu_count()} cores; load average at start {res['load_start']:.2f}, at end "
        f"{res['load_end']:.2f}.",
        "",
        f"Target: the base's held-out pass@1 + {res['gain'] * 100:.0f} points; evaluated every "
        f"{res['every']} steps, turns of {res['block']} steps, at most {res['max_steps']} steps "
        "(method: ttt.py's docstring).",
        "",
        "| seed | base pass@1 | target | rlvr steps | rlvr time (s) | TRL steps | TRL time (s) | "
        "TRL time / rlvr time | rlvr s/step | TRL s/step | ratio at median s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios, robust = [], []
    for r in res["seeds"]:
        tr, rl = r["trainers"]["trl"], r["trainers"]["rlvr"]

        def cell(st: dict[str, Any], key: str) -> str:
            if st["reached"] is None:
                return f"not reached ({st['steps']} steps)" if key == "step" else "-"
            return f"{st['reached'][key]:.0f}" if key == "step" else f"{st['reached'][key]:.1f}"

        ratio, med = "-", "-"
        if tr["reached"] and rl["reached"]:
            q = tr["reached"]["time_s"] / rl["reached"]["time_s"]
            m = tr["reached"]["step"] * tr["median_step_s"]
            m /= rl["reached"]["step"] * rl["median_step_s"]
            ratios.append(q)
            robust.append(m)
            ratio, med = f"**{q:.2f}x**", f"{m:.2f}x"
        md.append(
            f"| {r['seed']} | {r['base_pass1']:.4f} | {r['target']:.4f} | {cell(rl, 'step')} | "
            f"{cell(rl, 'time_s')} | {cell(tr, 'step')} | {cell(tr, 'time_s')} | {ratio} | "
            f"{rl['median_step_s']:.4f} | {tr['median_step_s']:.4f} | {med} |"
        )
    speed = []
    for r in res["seeds"]:  # TRL time / rlvr time at the last step both were evaluated at
        tr, rl = r["trainers"]["trl"]["curve"], r["trainers"]["rlvr"]["curve"]
        k = min(len(tr), len(rl)) - 1
        if k >= 0:
            speed.append((r["seed"], tr[k]["step"], tr[k]["time_s"] / rl[k]["time_s"]))
    if ratios:
        md += [
            "",
            "At equal steps (the speed alone; the rest of a time-to-target ratio is where each noisy "
            "curve first crosses its target, at the same expected step for the same algorithm): "
            + "; ".join(f"seed {s} at step {k}: {q:.2f}x" for s, k, q in speed)
            + ".",
            "",
            f"Mean over seeds of TRL time / rlvr time: **{statistics.fmean(ratios):.2f}x** (with each "
            f"trainer's steps to target times its median s/step, which a burst of load from other "
            f"processes during one trainer's turn moves less: {statistics.fmean(robust):.2f}x).",
        ]
    md += ["", "## Curves (step, training seconds, held-out pass@1)", ""]
    for r in res["seeds"]:
        for name, st in r["trainers"].items():
            pts = "; ".join(
                f"{c['step']}: {c['time_s']:.0f} s {c['pass1']:.3f} (load {c['load']:.1f})"
                for c in st["curve"]
            )
            md.append(f"- seed {r['seed']} {name}: {pts}")
    (HERE / "TTT.md").write_text("\n".join(md) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--gain", type=float, default=0.08, help="target = base pass@1 + this")
    ap.add_argument("--every", type=int, default=100, help="steps between evaluations")
    ap.add_argument("--block", type=int, default=10, help="steps per turn (the trainers alternate)")
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--rlvr-python", default=str(REPO / ".venv" / "bin" / "python"))
    ap.add_argument("--python311", default="python3.11", help="interpreter that creates .venv-trl")
    ap.add_argument("--report-only", action="store_true", help="rewrite TTT.md from ttt.json")
    a = ap.parse_args()
    if a.report_only:
        write_md(json.loads((HERE / "ttt.json").read_text()))
        return
    ensure_trl_venv(a.python311)
    WORK.mkdir(exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    res: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/vs_trl/ttt.py " + " ".join(sys.argv[1:]),
        "commit": commit,
        "gain": a.gain,
        "every": a.every,
        "block": a.block,
        "max_steps": a.max_steps,
        "load_start": os.getloadavg()[0],
        "seeds": [],
    }
    for seed in a.seeds:
        res["seeds"].append(run_seed(seed, a, a.rlvr_python))
        res["load_end"] = os.getloadavg()[0]
        (HERE / "ttt.json").write_text(json.dumps(res, indent=1))
        write_md(res)
    log(f"wrote {HERE / 'TTT.md'} and {HERE / 'ttt.json'}")


if __name__ == "__main__":
    main()
