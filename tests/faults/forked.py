"""`rlvr train` in a real process that starts in a fraction of a second: forked by a fork server
(``multiprocessing``'s "forkserver") that imported the trainer once.

A fresh interpreter spends about 10 s of CPU importing torch, transformers and reasoning-gym before
its first step (the fault tests start a dozen of them); a child of the fork server has them already.
It is still a process of its own: its own pid, its own files, killed by a real SIGKILL (no handler
runs, nothing is flushed), its exit status the one `rlvr train` returns (``sys.exit(main(argv))``,
as ``python -m rlvr.cli``). The fork server itself is a clean interpreter (not a fork of pytest and
its threads), started with one torch thread as ``_spawn`` gives a fresh process (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PRELOAD = ["rlvr.cli", "rlvr.train.trainer"]


def _context() -> Any:
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the process's one fork server (the reward pools' too)
    if server._forkserver_pid is not None and server._preload_modules != PRELOAD:
        server._stop()  # started by a reward pool without the trainer: restart it with it
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # read by the server's torch when it starts
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    return ctx


def _run(argv: list[str], log: str, env: dict[str, str]) -> None:
    """The child: stdout and stderr to ``log``, then `rlvr <argv>`; exits with its status."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the child
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ.update(env)
    import torch

    torch.set_num_threads(1)
    from rlvr.cli import main

    sys.exit(main(argv))


class Forked:
    """The part of ``subprocess.Popen``'s interface the fault tests use, for a forked `rlvr`
    (``argv`` without the leading "rlvr"); its output goes to the file ``log``."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        self._proc = _context().Process(target=_run, args=(list(argv), str(self.log), env or {}))
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def kill(self) -> None:
        """SIGKILL, as ``Popen.kill``."""
        self._proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(f"rlvr (pid {self.pid})", timeout or 0)
        return self._proc.exitcode

    def output(self) -> str:
        return self.log.read_text()

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self.wait(timeout)
        return self.output(), None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(argv: list[str], ranks: int, log_dir: Path, timeout: float = 600) -> int:
    """`rlvr <argv>` as ``ranks`` learner ranks forked by the fork server, each given the environment
    torchrun gives its ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); returns 0 when
    every rank exited 0, else the first non-zero status (the others are killed, as torchrun does).
    For tests of what the ranks compute; the launch itself (`rlvr train --learners N` -> torchrun) is
    tested by tests/train/test_scale_runs.py::test_a_killed_learner_rank_stops_the_run_and_it_resumes.
    Each rank's output goes to ``log_dir``/rank<R>.out (appended to an assertion error on failure)."""
    import time

    base = {
        "WORLD_SIZE": str(ranks),
        "LOCAL_WORLD_SIZE": str(ranks),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    procs = [
        Forked(argv, Path(log_dir) / f"rank{r}.out", {**base, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(ranks)
    ]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.poll() for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    codes = [p.poll() for p in procs]
    bad = [c for c in codes if c != 0]
    if bad:
        for r, p in enumerate(procs):
            print(f"--- rank {r} (exit {codes[r]}) ---\n{p.output()[-4000:]}")
    return bad[0] if bad else 0
