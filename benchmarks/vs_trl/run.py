"""rlvr vs TRL's GRPOTrainer on the CPU, side by side, on the same work (issue 8, CPU part).

    python benchmarks/vs_trl/run.py                       # wait for an idle machine, measure, write
    python benchmarks/vs_trl/run.py --no-wait --rounds 2  # a quick look while developing

Standard library only; it drives three worker processes per max-new-tokens setting:

- ``trl_grpo.py`` with the TRL venv (``.venv-trl`` here, created on the first run: torch 2.13.0 first,
  from local disk, then ``requirements-trl.txt``), TRL 1.16's ``GRPOTrainer``;
- ``rlvr_grpo.py`` with rlvr's venv, ``rlvr.train.train``;
- ``floor.py`` with rlvr's venv: the plain HF model's forwards for the same shapes.

The work is the same on both sides: the embedded tiny base (a Qwen2 HF directory), the grpo recipe's
default task (chain_sum, 3 one-digit terms) in the same order with the same chat-templated prompts,
B = 8 prompts x G = 8 samples, temperature 1.0, GRPO with beta = 0 and one optimizer step per batch,
lr 1e-4, the same strict ``answer`` reward, fp32 on the CPU.

Measuring: ``--warmup`` steps per trainer, then ``--rounds`` rounds of one block of ``--block`` steps
per trainer (the order alternates between rounds) and one floor block that replays the shapes of those
steps, so that load from other processes falls on both trainers alike. A step's time is the wall time
between two consecutive optimizer-step ends of the trainer, the driver's waits excluded. Reported per
trainer: median (p10, p90) seconds per step, steps/s, generated tokens/s (completion tokens, EOS
included, per second of step time and per second of generation), peak RSS (ru_maxrss) of the worker
process, and the split of the step into generation, scoring, learner forward, backward, optimizer and
the rest. The ratio printed at the end is rlvr's steps/s over TRL's (= TRL's median / rlvr's median).
Writes RESULTS.md and results.json next to this file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WORK = HERE / "work"
TRL_VENV = HERE / ".venv-trl"
TRL_PY = TRL_VENV / "bin" / "python"
TRL_STAMP = TRL_VENV / ".installed-stamp"
B, G = 8, 8
PIECES = ["gen", "score", "logp", "backward", "optim"]
PIECE_NAMES = {
    "gen": "generation (sampling)",
    "score": "scoring (reward function)",
    "logp": "learner forward + log-probs",
    "backward": "backward",
    "optim": "optimizer step",
    "other": "rest (decode to text, advantages, loss, grad clip, logging, data)",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_trl_venv(python311: str) -> None:
    """Create .venv-trl once: torch first (the local CPU build), then the pinned TRL requirements."""
    if TRL_STAMP.exists():
        return
    log(f"creating {TRL_VENV} (once; reused by later runs)")
    if not TRL_PY.exists():
        subprocess.run([python311, "-m", "venv", str(TRL_VENV)], check=True)
    pip = [str(TRL_PY), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-r", str(HERE / "requirements-trl.txt")], check=True)
    TRL_STAMP.write_text("ok\n")


def wait_for_load(threshold: float, max_wait: float, poll: float = 30.0) -> dict[str, Any]:
    """Poll the 1-minute load average every ``poll`` s until it is below ``threshold`` (or time out)."""
    t0 = time.time()
    seen = [os.getloadavg()[0]]
    while seen[-1] >= threshold and time.time() - t0 < max_wait:
        log(f"load average {seen[-1]:.2f} >= {threshold}; waiting ({time.time() - t0:.0f} s so far)")
        time.sleep(poll)
        seen.append(os.getloadavg()[0])
    ok = seen[-1] < threshold
    log(f"load average {seen[-1]:.2f}: {'below' if ok else 'STILL NOT below'} {threshold}")
    return {"threshold": threshold, "waited_s": round(time.time() - t0), "polls": seen, "reached": ok}


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of ``xs`` (q in [0, 100])."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


class Proc:
    """One worker process and its line protocol (see protocol.py)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, threads: str) -> None:
        self.name, self.log_path = name, log_path
        self.err = log_path.open("w")
        env = dict(os.environ)
        if threads != "default":  # torch's intra-op threads (its default: one per core)
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        self.p = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            bufsize=1,
            env=env,
        )
        self.ready: dict[str, Any] = {}
        self.final: dict[str, Any] = {}

    def recv(self) -> dict[str, Any]:
        line = self.p.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.p.wait()
            tail = self.log_path.read_text()[-3000:]
            raise RuntimeError(f"worker {self.name} exited (rc {self.p.returncode}); log tail:\n{tail}")
        return json.loads(line)

    def send(self, **cmd: Any) -> None:
        self.p.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]

    def wait_ready(self) -> None:
        msg = self.recv()
        if msg["kind"] != "ready":
            raise RuntimeError(f"worker {self.name}: expected ready, got {msg}")
        self.ready = msg

    def block(self, **cmd: Any) -> tuple[list[dict[str, Any]], float]:
        """Run one block; return its step records and the peak RSS so far."""
        self.send(cmd="run", **cmd)
        steps = []
        while True:
            msg = self.recv()
            if msg["kind"] == "step":
                steps.append(msg)
            elif msg["kind"] == "block_done":
                return steps, msg["peak_rss_mib"]
            else:
                raise RuntimeError(f"worker {self.name}: unexpected {msg}")

    def stop(self) -> None:
        self.send(cmd="stop")
        self.final = self.recv()
        self.p.wait(timeout=60)
        self.err.close()


def summarize(steps: list[dict[str, Any]], peak: float, ready: dict[str, Any]) -> dict[str, Any]:
    walls = [s["wall"] for s in steps]
    tokens = [s["tokens"] for s in steps]
    parts = {k: statistics.fmean(s["parts"].get(k, 0.0) for s in steps) for k in PIECES}
    parts["other"] = statistics.fmean(walls) - sum(parts.values())
    out = {
        "steps_measured": len(steps),
        "median_s": statistics.median(walls),
        "p10_s": pct(walls, 10),
        "p90_s": pct(walls, 90),
        "mean_s": statistics.fmean(walls),
        "steps_per_s": 1 / statistics.median(walls),
        "tokens_per_step": statistics.fmean(tokens),
        "decode_positions_mean": statistics.fmean(s["T"] for s in steps),
        "tokens_per_s": sum(tokens) / sum(walls),
        "gen_tokens_per_s": sum(tokens) / max(1e-9, sum(s["parts"].get("gen", 0.0) for s in steps)),
        "peak_rss_mib": peak,
        "rss_at_ready_mib": ready.get("rss_ready_mib"),
        "accuracy_mean": statistics.fmean(s["accuracy"] for s in steps),
        "same_prompts_as_stream": all(s.get("same_prompts", False) for s in steps),
        "parts_mean_s": parts,
    }
    if "own_step_time" in steps[0]:
        out["own_step_time_median_s"] = statistics.median(s["own_step_time"] for s in steps)
    return out


def measure(t: int, threads: str, a: argparse.Namespace, prompts: Path, rlvr_py: str) -> dict[str, Any]:
    """Warm-up and interleaved rounds for max_new_tokens = t with ``threads`` torch threads in every
    worker; returns the raw steps and summaries."""
    total = a.warmup + a.rounds * a.block
    d = WORK / f"threads-{threads}-T{t}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    common = ["--max-new-tokens", str(t), "--steps", str(total), "--prompts", str(prompts)]
    trl_cmd = [str(TRL_PY), str(HERE / "trl_grpo.py"), *common]
    rlvr_cmd = [rlvr_py, str(HERE / "rlvr_grpo.py"), "train", *common]
    trainers = {
        "trl": Proc(
            "trl",
            [*trl_cmd, "--out-dir", str(d / "trl-out")],
            d / "trl.log",
            threads,
        ),
        "rlvr": Proc(
            "rlvr",
            [*rlvr_cmd, "--run-dir", str(d / "rlvr-run")],
            d / "rlvr.log",
            threads,
        ),
    }
    if not a.no_trl_nogc:
        trainers["trl_nogc"] = Proc(
            "trl_nogc",
            [*trl_cmd, "--out-dir", str(d / "trl-nogc-out"), "--gradient-checkpointing", "off"],
            d / "trl_nogc.log",
            threads,
        )
    floor = Proc(
        "floor", [rlvr_py, str(HERE / "floor.py"), "--prompts", str(prompts)], d / "floor.log", threads
    )
    procs = [*trainers.values(), floor]
    try:
        for p in procs:
            p.wait_ready()
        log(
            f"threads={threads} T={t}: workers ready ({', '.join(trainers)}, floor); "
            f"warm-up {a.warmup} steps each"
        )
        raw: dict[str, list[dict[str, Any]]] = {k: [] for k in [*trainers, "floor"]}
        peaks: dict[str, float] = {}
        loads: list[dict[str, Any]] = []
        names = list(trainers)
        for rnd in range(a.rounds + 1):  # round 0 is the warm-up
            k = a.warmup if rnd == 0 else a.block
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            shapes = []
            for name in order:
                before = os.getloadavg()[0]
                t0 = time.perf_counter()
                steps, peaks[name] = trainers[name].block(steps=k)
                loads.append(
                    {
                        "round": rnd,
                        "who": name,
                        "load_before": before,
                        "load_after": os.getloadavg()[0],
                        "seconds": time.perf_counter() - t0,
                    }
                )
                for s in steps:
                    s["round"] = rnd
                raw[name] += steps
                if name in ("trl", "rlvr"):  # trl_nogc samples as trl does (same seed, same model)
                    shapes += [{"side": name, "step": s["index"] - 1, "T": s["T"]} for s in steps]
            before = os.getloadavg()[0]
            fsteps, peaks["floor"] = floor.block(steps=len(shapes), shapes=shapes)
            loads.append(
                {"round": rnd, "who": "floor", "load_before": before, "load_after": os.getloadavg()[0]}
            )
            for s in fsteps:
                s["round"] = rnd
            raw["floor"] += fsteps
            if rnd:
                med = {n: statistics.median(s["wall"] for s in raw[n] if s["round"] > 0) for n in names}
                log(
                    f"threads={threads} T={t} round {rnd}/{a.rounds}: median s/step so far "
                    + ", ".join(f"{n} {v:.3f}" for n, v in med.items())
                    + f"; load {os.getloadavg()[0]:.2f}"
                )
        for p in procs:
            p.stop()
    finally:
        for p in procs:
            if p.p.poll() is None:
                p.p.kill()
    res: dict[str, Any] = {
        "max_new_tokens": t,
        "threads": threads,
        "load": loads,
        "raw": raw,
        "sides": {},
    }
    for name, p in trainers.items():
        measured = [s for s in raw[name] if s["round"] > 0]
        res["sides"][name] = summarize(measured, p.final["peak_rss_mib"], p.ready)
        res["sides"][name]["ready"] = p.ready
        side = "trl" if name == "trl_nogc" else name
        fl = [s for s in raw["floor"] if s["round"] > 0 and s["side"] == side]
        fmed = statistics.median(s["floor"] for s in fl)
        res["sides"][name]["floor"] = {
            "median_s": fmed,
            "median_padded_s": statistics.median(s["floor_padded"] for s in fl),
            "parts_mean_s": {k: statistics.fmean(s["parts"][k] for s in fl) for k in fl[0]["parts"]},
            "step_over_floor": res["sides"][name]["median_s"] / fmed,
        }
    res["floor_peak_rss_mib"] = floor.final["peak_rss_mib"]
    res["ratio_rlvr_over_trl_steps_per_s"] = (
        res["sides"]["trl"]["median_s"] / res["sides"]["rlvr"]["median_s"]
    )
    return res


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return {"commit": git("rev-parse", "HEAD"), "src_dirty": bool(dirty)}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def fmt_table(res: dict[str, Any]) -> list[str]:
    lines = [
        "| trainer | s/step median | p10 | p90 | steps/s | tokens/step | tokens/s (step) | "
        "tokens/s (generation) | peak RSS MiB | accuracy | floor s/step | step / floor | "
        "padded floor s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in res["sides"].items():
        lines.append(
            f"| {name} | {s['median_s']:.4f} | {s['p10_s']:.4f} | {s['p90_s']:.4f} | "
            f"{s['steps_per_s']:.2f} | {s['tokens_per_step']:.0f} | {s['tokens_per_s']:.0f} | "
            f"{s['gen_tokens_per_s']:.0f} | {s['peak_rss_mib']:.0f} | {s['accuracy_mean']:.3f} | "
            f"{s['floor']['median_s']:.4f} | {s['floor']['step_over_floor']:.2f} | "
            f"{s['floor']['median_padded_s']:.4f} |"
        )
    return lines


def fmt_profile(res: dict[str, Any]) -> list[str]:
    names = list(res["sides"])
    lines = [
        "| piece (mean s/step) | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for k in [*PIECES, "other"]:
        cells = []
        for n in names:
            p = res["sides"][n]["parts_mean_s"]
            cells.append(f"{p[k]:.4f} ({100 * p[k] / res['sides'][n]['mean_s']:.0f}%)")
        lines.append(f"| {PIECE_NAMES[k]} | " + " | ".join(cells) + " |")
    lines.append(
        "| total (mean of step walls) | "
        + " | ".join(f"{res['sides'][n]['mean_s']:.4f}" for n in names)
        + " |"
    )
    return lines


def _rounded(x: Any) -> Any:
    """``x`` with every float rounded to 6 significant digits (a smaller results.json)."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def write_results(out: dict[str, Any]) -> None:
    slim = _rounded(out)
    for res in slim["runs"]:  # the raw step records without the protocol's fields
        for name, steps in res["raw"].items():
            res["raw"][name] = [
                {k: v for k, v in s.items() if k not in ("kind", "worker")} for s in steps
            ]
    (HERE / "results.json").write_text(json.dumps(slim, indent=1))
    trl_ready = next(iter(out["runs"]))["sides"]["trl"]["ready"]
    rl_ready = next(iter(out["runs"]))["sides"]["rlvr"]["ready"]
    m = out["machine"]
    md = [
        "# rlvr vs TRL GRPOTrainer on the CPU (issue 8, CPU part)",
        "",
        f"Date: {out['date']}. Command: `{out['command']}` (from the repository root).",
        "",
        f"Machine: {m['cpu_count']} cores ({m['cpu_model']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; shared with other sessions (load below). torch {trl_ready['torch']} "
        f"(both venvs), transformers {trl_ready['transformers']}, TRL {trl_ready['trl']}, rlvr "
        f"{rl_ready['rlvr']} at commit {out['git']['commit'][:12]}"
        f"{' (src/ with uncommitted changes)' if out['git']['src_dirty'] else ''}.",
        "",
        f"Load before measuring: waited {out['load_wait']['waited_s']} s for the 1-minute load average "
        f"to fall below {out['load_wait']['threshold']}: "
        + ("reached" if out["load_wait"]["reached"] else "**not reached; measured anyway**")
        + f" (polls: {', '.join(f'{x:.2f}' for x in out['load_wait']['polls'])}).",
        "",
        "Work (both sides): the embedded tiny base (Qwen2, 0.7 M parameters, vocabulary 339), chain_sum "
        "with 3 one-digit terms in rlvr's stream order and chat template (TRL checked to get the same "
        "prompt token ids), 8 prompts x 8 samples, temperature 1.0, GRPO with beta = 0, one optimizer "
        "step per batch, lr 1e-4, fp32 on the CPU, the strict `answer` reward (reasoning-gym "
        f"`score_answer` on the last `<answer>`). {out['warmup']} warm-up steps each, then "
        f"{out['rounds']} rounds of {out['block']} steps per trainer, interleaved (the order "
        "alternates).",
        "",
    ]
    md += [
        "## Summary",
        "",
        "| torch threads | max new tokens | TRL s/step | rlvr s/step | rlvr / TRL (steps/s) | "
        "rlvr / TRL without gradient checkpointing | rlvr / floor | TRL / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in out["runs"]:
        sd = res["sides"]
        nogc = f"{sd['trl_nogc']['median_s'] / sd['rlvr']['median_s']:.2f}x" if "trl_nogc" in sd else "-"
        md.append(
            f"| {res['threads']} | {res['max_new_tokens']} | {sd['trl']['median_s']:.4f} | "
            f"{sd['rlvr']['median_s']:.4f} | **{res['ratio_rlvr_over_trl_steps_per_s']:.2f}x** | "
            f"{nogc} | {sd['rlvr']['floor']['step_over_floor']:.2f} | "
            f"{sd['trl']['floor']['step_over_floor']:.2f} |"
        )
    md += [
        "",
        "The load average during the blocks includes the benchmark's own running worker (about 1 per "
        "torch thread); other sessions' work could not be excluded beyond the wait above. While "
        "developing (3-step blocks at a load of about 5 from other sessions, not in results.json), "
        "torch's default 2 threads collapsed on both sides (TRL about 7 s/step, rlvr about 0.8 s/step, "
        "single forwards 50x slower than with 1 thread) while 1 thread gave TRL 0.46 and rlvr 0.15 "
        "s/step: on a shared 2-core machine the thread setting matters more than anything else here.",
        "",
    ]
    for res in out["runs"]:
        t = res["max_new_tokens"]
        positions = [x["T"] for n in ("trl", "rlvr") for x in res["raw"][n] if x["round"] > 0]
        md += [
            f"## torch threads = {res['threads']} ({res['sides']['rlvr']['ready']['threads']}), "
            f"max new tokens = {t}",
            "",
            *fmt_table(res),
            "",
            f"Generated positions per step (the longest completion of the batch, both trainers): mean "
            f"{statistics.fmean(positions):.1f}, max {max(positions)}"
            + (
                f" -- the cap of {t} never binds, so this is the same work as every other cap above "
                "it (same seeds, same samples)."
                if max(positions) < t
                else "."
            ),
            "",
            f"**rlvr / TRL in steps per second: {res['ratio_rlvr_over_trl_steps_per_s']:.2f}x**"
            + (
                f" (TRL with gradient checkpointing off: "
                f"{res['sides']['trl_nogc']['median_s'] / res['sides']['rlvr']['median_s']:.2f}x)"
                if "trl_nogc" in res["sides"]
                else ""
            ),
            "",
            "Where the step goes (mean seconds per measured step, share of the mean step):",
            "",
            *fmt_profile(res),
            "",
            "Floor parts (mean s, for the shapes of rlvr's steps): "
            + ", ".join(f"{k} {v:.4f}" for k, v in res["sides"]["rlvr"]["floor"]["parts_mean_s"].items())
            + " (optim is not in the floor).",
            "",
            "Load average (1 min) before/after each block: "
            + "; ".join(
                f"r{x['round']} {x['who']} {x['load_before']:.2f}/{x['load_after']:.2f}"
                for x in res["load"]
            )
            + ".",
            "",
        ]
    md += [
        "## Method",
        "",
        "- One process per trainer (TRL in its own venv, `.venv-trl`, pins in `requirements-trl.txt`), "
        "kept alive for the whole measurement; the driver runs blocks of steps in each in turn, so "
        "load from other processes falls on both alike. A step's time is the wall time between two "
        "consecutive optimizer-step ends (TRL: `on_step_end` callback; rlvr: the trainer's metrics "
        "line), "
        "minus the driver's waits: everything between two updates counts, logging included.",
        "- Pieces are timed from outside the trainers: generation = `GenerationMixin.generate` (TRL) / "
        "`rlvr.rollout.generate` as the trainer calls it (rlvr); scoring = the reward function (TRL) / "
        "`_score_step` (rlvr); learner forward = `GRPOTrainer._get_per_token_logps_and_entropies` / "
        "`rlvr.rollout.sequence_logp`; backward = every `Tensor.backward`; optimizer = torch's global "
        "optimizer step hooks. With one epoch neither side computes old-policy log-probs (TRL: steps "
        "aligned with generation; rlvr: the sampler's log-probs are `old_logp`).",
        "- Floor (`floor.py`, the plain HF model, no trainer code), for the exact prompts and number of "
        "generated positions T of every measured step of each trainer (same process, same rounds): "
        "prefill of the 8 prompts with a KV cache expanded to 64 rows + T - 1 forwards of [64, 1] "
        "(no sampling), then the learner pass over the step's distinct tokens with gradients (the 8 "
        "prompts once, the cache expanded to 64 rows, the 64 x T completion tokens on it, completion "
        "log-softmax) and its backward. The padded floor does the learner pass over the plain "
        "[64, P + T] batch instead. The AdamW step is timed apart and is not in either floor.",
        "- Peak RSS is `ru_maxrss` of each worker process at the end (imports, model and data "
        "included); "
        "RSS when ready (before the first step) in results.json.",
        "- TRL keeps GRPOConfig's defaults except: per_device_train_batch_size = 64 and "
        "num_generations = 8 (8 prompts x 8 samples, one optimizer step per generation batch), "
        "max_completion_length, temperature 1.0, beta 0, num_iterations 1, learning_rate 1e-4, "
        "max_steps, use_cpu, bf16 off, seed 0 (fixed by the issue); shuffle_dataset = False (rlvr's "
        "prompt order), save_strategy = 'no', report_to = 'none' (no checkpoints or trackers). Defaults "
        f"that matter for speed: gradient checkpointing = {trl_ready['gradient_checkpointing']}, "
        f"optimizer {trl_ready['optim']}, logging every {trl_ready['logging_steps']} steps, loss "
        f"{trl_ready['loss_type']}, scheduler {trl_ready['lr_scheduler']}.",
        "- rlvr runs the grpo recipe through `rlvr.train.train` with `rewards={answer={weight=1.0}}` "
        "(no format reward, as TRL), evaluation off and its other defaults (tensorboard logging on, "
        "progress bar on, beta2 0.99, constant lr).",
        "",
        "- The floor is the plain Hugging Face model's work (every row decoded to the batch's last "
        "token, the prompt cache spread by a differentiable index); rlvr's sampler drops finished "
        "rows and its learner spreads the cache with an expand, so rlvr's pieces can come in under "
        "the floor's.",
        "",
        "Raw per-step records (walls, pieces, shapes, floor) are in results.json. Time to a held-out "
        "target, 3 seeds: TTT.md (`ttt.py`). The H100 half: GPU.md (`gpu.py`, the one device command).",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-new-tokens", type=int, nargs="+", default=[32, 12])
    ap.add_argument(
        "--threads",
        nargs="+",
        default=["default", "1"],
        help="torch threads of every worker, one measurement each: 'default' (torch's, one per core) "
        "or a number (OMP_NUM_THREADS)",
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds of --block steps each")
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--load-below", type=float, default=1.3)
    ap.add_argument("--max-wait", type=float, default=1200.0, help="seconds to wait for the load")
    ap.add_argument("--no-wait", action="store_true", help="measure at once (development)")
    ap.add_argument(
        "--no-trl-nogc",
        action="store_true",
        help="skip the extra TRL trainer with gradient checkpointing off (TRL's default is on)",
    )
    ap.add_argument("--rlvr-python", default=str(REPO / ".venv" / "bin" / "python"))
    ap.add_argument("--python311", default="python3.11", help="interpreter that creates .venv-trl")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md from results.json, measure nothing",
    )
    a = ap.parse_args()
    if a.report_only:
        write_results(json.loads((HERE / "results.json").read_text()))
        return
    if a.rounds * a.block < 20:
        log(f"note: {a.rounds * a.block} measured steps per trainer (the issue asks for >= 20)")
    ensure_trl_venv(a.python311)
    WORK.mkdir(exist_ok=True)
    prompts = WORK / "prompts.json"
    n = (a.warmup + a.rounds * a.block) * B
    subprocess.run(
        [a.rlvr_python, str(HERE / "rlvr_grpo.py"), "dump", "--out", str(prompts), "--prompts", str(n)],
        check=True,
    )
    load_wait = (
        {"threshold": a.load_below, "waited_s": 0, "polls": [os.getloadavg()[0]], "reached": None}
        if a.no_wait
        else wait_for_load(a.load_below, a.max_wait)
    )
    out: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/vs_trl/run.py", *sys.argv[1:]]),
        "machine": machine(),
        "git": git_info(),
        "load_wait": load_wait,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "block": a.block,
        "runs": [],
    }
    for threads in a.threads:
        for t in a.max_new_tokens:
            out["runs"].append(measure(t, threads, a, prompts, a.rlvr_python))
            write_results(out)
    for res in out["runs"]:
        s = res["sides"]
        log(
            f"threads={res['threads']} max_new_tokens={res['max_new_tokens']}: "
            f"TRL {s['trl']['median_s']:.4f} s/step, rlvr "
            f"{s['rlvr']['median_s']:.4f} s/step, floor {s['rlvr']['floor']['median_s']:.4f} s "
            f"(rlvr {s['rlvr']['floor']['step_over_floor']:.2f}x floor); "
            f"rlvr/TRL steps per second = {res['ratio_rlvr_over_trl_steps_per_s']:.2f}"
        )
    log(f"wrote {HERE / 'RESULTS.md'} and {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
