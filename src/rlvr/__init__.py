"""rlvr: reinforcement-learning post-training of language models with verifiable rewards."""

import os as _os

__version__ = "0.1.0"

OMP_SPINCOUNT = "1000"
"""``GOMP_SPINCOUNT`` that importing rlvr sets (see :func:`_short_openmp_spin`)."""


def _short_openmp_spin() -> bool:
    """Make torch's OpenMP threads sleep soon when they wait, instead of spinning for long.

    GNU OpenMP (the CPU wheel's ``libgomp``) lets a thread that waits at the end of a parallel region
    spin for ``GOMP_SPINCOUNT`` iterations (300,000 by default) before it sleeps. A training step runs
    thousands of small parallel regions; when other processes compete for the cores, a spinning
    thread keeps the one it waits for off its core, and each region costs a scheduler time slice.
    Measured on 2 cores (``benchmarks/omp_spin.md``), a 2-thread ``rlvr train`` beside two
    single-thread training runs started from other sessions: 0.895 s per step by default, 0.214 s
    with 1,000 spins, and the same 0.074 s on an idle machine. Beside the recipe benchmark's two runs
    it was 9.6 s against 0.19 s. Set here, before torch loads libgomp (it reads the variable once);
    child processes (learner ranks, Ray workers) inherit it. Nothing is done when the user set
    ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``, or ``RLVR_OMP_TUNING=0``; importing torch before rlvr
    also leaves the default. Returns whether the variable was set.
    """
    env = _os.environ
    if env.get("RLVR_OMP_TUNING", "1") == "0" or "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return False
    env["GOMP_SPINCOUNT"] = OMP_SPINCOUNT
    return True


_short_openmp_spin()
