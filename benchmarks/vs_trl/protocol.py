"""The driver <-> worker protocol of the rlvr-vs-TRL benchmark, and the step timers both workers share.

Imported by ``rlvr_grpo.py`` and ``floor.py`` (rlvr's venv) and by ``trl_grpo.py`` (the TRL venv), so it
uses the standard library only (torch is imported inside the functions that need it).

A worker is a long-lived process that trains step by step but runs only when the driver tells it to,
so that the driver can interleave blocks of steps of both trainers on the shared machine:

    driver -> worker (stdin, one JSON object a line): {"cmd": "run", "steps": K, ...} | {"cmd": "stop"}
                                                      | {"cmd": "save", "path": P} (between blocks)
    worker -> driver (the original stdout):          {"kind": "ready" | "step" | "block_done" | "final"
                                                      | "saved"}

``save`` writes the policy's weights (the worker's ``saver``) while the worker is between blocks, so
the time it takes is not in any step.

Everything else a worker's libraries print goes to stderr (fd 1 is pointed at fd 2 at start-up).

Per-step wall time is the time between consecutive step ends, minus the time spent waiting for the
driver: ``wall_k = t_end(k) - t_end(k-1) - wait``. It includes everything the trainer does between two
optimizer steps (data, generation, scoring, learning, logging), on both sides alike.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["Timers", "Worker", "peak_rss_mib", "strict_answer_score", "trl_rows"]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)  # as rlvr.rewards.extract_answer


_SCORE_FNS: dict[str, Callable[..., Any]] = {}


def _score_fn(source: str) -> Callable[..., Any]:
    """reasoning-gym's ``score_answer`` of a task, built once (building it makes the task's dataset;
    rlvr's ``answer`` reward caches it the same way)."""
    if source not in _SCORE_FNS:
        import reasoning_gym

        _SCORE_FNS[source] = reasoning_gym.get_score_answer_fn(source)
    return _SCORE_FNS[source]


def strict_answer_score(prompt: Any, completion: Any, answer: str, meta: str) -> float:
    """rlvr's strict ``answer`` reward for one of TRL's (conversational) samples: reasoning-gym's score
    of the text inside the completion's last ``<answer>...</answer>``, 1.0 only for full credit."""
    text = completion[-1]["content"] if isinstance(completion, list) else completion
    found = _ANSWER.findall(text)
    if not found:
        return 0.0
    md = json.loads(meta)
    question = prompt[-1]["content"] if isinstance(prompt, list) else prompt
    score = _score_fn(md["source_dataset"])(
        found[-1].strip(), {"question": question, "answer": answer, "metadata": md}
    )
    return 1.0 if float(score) >= 1.0 else 0.0


def trl_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dumped prompt rows as TRL dataset rows: conversational prompts, answer and metadata."""
    return [
        {"prompt": [{"role": "user", "content": r["content"]}], "answer": r["answer"], "meta": r["meta"]}
        for r in rows
    ]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timers:
    """Wall-clock seconds accumulated per named piece of a step (reset at every step end).

    ``wrap`` times a function; ``install_torch_hooks`` times every ``Tensor.backward`` (not re-entrant
    calls) and every ``Optimizer.step`` of the process through torch's global hooks.
    """

    def __init__(self) -> None:
        self.acc: dict[str, float] = defaultdict(float)
        self.depth: dict[str, int] = defaultdict(int)
        self._opt_t0 = 0.0

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.depth[name] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth[name] -= 1
                if self.depth[name] == 0:
                    self.acc[name] += time.perf_counter() - t0

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def install_torch_hooks(self) -> None:
        import torch
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        torch.Tensor.backward = self.wrap(torch.Tensor.backward, "backward")  # type: ignore[method-assign]

        def pre(*_: Any) -> None:
            self._opt_t0 = time.perf_counter()

        def post(*_: Any) -> None:
            self.acc["optim"] += time.perf_counter() - self._opt_t0

        register_optimizer_step_pre_hook(pre)
        register_optimizer_step_post_hook(post)

    def install_trl_hooks(self) -> None:
        """Time TRL's pieces from the outside: ``GenerationMixin.generate`` ("gen") and
        ``GRPOTrainer._get_per_token_logps_and_entropies`` ("logp"), plus the torch hooks above."""
        from transformers.generation.utils import GenerationMixin
        from trl import GRPOTrainer

        self.install_torch_hooks()
        GenerationMixin.generate = self.wrap(GenerationMixin.generate, "gen")  # type: ignore[method-assign]
        GRPOTrainer._get_per_token_logps_and_entropies = self.wrap(  # type: ignore[method-assign]
            GRPOTrainer._get_per_token_logps_and_entropies, "logp"
        )

    def take(self) -> dict[str, float]:
        out = dict(self.acc)
        self.acc.clear()
        return out


class Worker:
    """The worker side of the protocol: ``start`` (send ready, wait for the first block), then
    ``step_end(record)`` after every optimizer step; it blocks between blocks and exits on stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        out_fd = os.dup(1)
        os.dup2(2, 1)  # library prints go to stderr; the protocol keeps the original stdout
        self._out = os.fdopen(out_fd, "w", buffering=1)
        self.remaining = 0
        self.command: dict[str, Any] = {}
        self.steps_done = 0
        self._last = 0.0
        self._wait = 0.0
        self.saver: Callable[[str], None] | None = None  # writes the policy's weights to a path

    def send(self, kind: str, **data: Any) -> None:
        self._out.write(json.dumps({"kind": kind, "worker": self.name, **data}) + "\n")
        self._out.flush()

    def _next_command(self) -> None:
        line = sys.stdin.readline()
        cmd = json.loads(line) if line.strip() else {"cmd": "stop"}
        while cmd.get("cmd") == "save":
            if self.saver is None:
                raise ValueError(f"worker {self.name}: save asked for, but no saver is set")
            self.saver(str(cmd["path"]))
            self.send("saved", path=cmd["path"], step=self.steps_done)
            line = sys.stdin.readline()
            cmd = json.loads(line) if line.strip() else {"cmd": "stop"}
        if cmd.get("cmd") == "stop":
            self.send("final", peak_rss_mib=peak_rss_mib(), steps=self.steps_done)
            self._out.close()
            os._exit(0)  # no end-of-training work (checkpoints, reports) after the last block
        if cmd.get("cmd") != "run" or int(cmd.get("steps", 0)) < 1:
            raise ValueError(f"worker {self.name}: bad command {line!r}; expected run with steps >= 1")
        self.command = cmd
        self.remaining = int(cmd["steps"])

    def start(self, **info: Any) -> None:
        """Report readiness (with the RSS after imports and model loading) and wait for a block."""
        self.send("ready", rss_ready_mib=peak_rss_mib(), pid=os.getpid(), **info)
        self._next_command()
        self._last = time.perf_counter()

    def step_end(self, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.steps_done += 1
        self.send("step", index=self.steps_done, wall=now - self._last, **record)
        self.remaining -= 1
        if self.remaining == 0:
            self.send("block_done", peak_rss_mib=peak_rss_mib())
            self._next_command()
        self._last = time.perf_counter()
