"""Running several reward components over a step's completions: weights, timeouts, failures, workers.

A run's rewards are a list of components, each ``(name, weight, function)``. The function is built
from the :data:`REWARDS` registry by name with its knobs, or imported from a user's module
(``function = "mypkg.rewards:score"`` or ``"path/to/file.py:score"``). It is one of

- a per-sample function ``fn(prompt, completion, answer, **meta) -> float`` (extra knobs of a user
  function are passed to it as keyword arguments);
- an ``async def`` per-sample function (all samples of a step are awaited concurrently);
- a :class:`~rlvr.rewards.verifiers.BatchedReward`, called once per step with all samples; it may
  return ``None`` for a sample it could not score (an LLM judge's unparseable verdict), which is then
  that sample's failure (``failure_reasons`` [index -> text], when the reward sets it, says why).

Metadata keys named ``prompt``, ``completion`` or ``answer`` reach a per-sample function as
``meta_prompt`` and so on. The weighted sum is the reward; the unweighted components are kept per
sample (``parts`` [N, K]) for estimators that need them (GDPO) and for the logs.

A component that raises, returns a non-number or runs past ``timeout`` seconds gives the sample
``failure_score`` instead; the failure is counted (per component, in the step's metrics) and the
first traceback of each component is logged once; the run goes on.

Per-call timeouts use ``SIGALRM`` (``setitimer``) in the process that runs the call: the trainer's main
thread when ``workers = 0``, or each worker process of the pool when ``workers > 0``. (rlvr's math
reward turns math-verify's own signal timeouts off and keeps the runner's timer running.) ``async``
functions are timed out by the event loop; batched rewards (reward models) run in the trainer's
process without a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import importlib
import inspect
import math
import multiprocessing as mp
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.plugins import exec_file
from rlvr.rewards.verifiers import REWARDS

__all__ = ["RewardComponent", "RewardRunner", "RewardTimeout", "ScoreResult", "load_function"]


class RewardTimeout(BaseException):
    """A reward call ran past its time limit."""


def load_function(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` or ``"path/to/file.py:attr"`` and return the callable.

    Raises ValueError naming the spec when the module, the file or the attribute is missing or the
    attribute is not callable.
    """
    if ":" not in spec:
        raise ValueError(f"function {spec!r}: expected 'module:function' or 'file.py:function'")
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ValueError(f"function {spec!r}: no such file {path}")
        name = f"rlvr_user_reward_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(name)
        if module is None:
            try:
                module = exec_file(path, name)
            except Exception as err:
                raise ValueError(f"function {spec!r}: importing {path} failed: {err!r}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise ValueError(f"function {spec!r}: cannot import module {where!r}: {err}") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"function {spec!r}: module {where!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"function {spec!r}: {attr!r} is not callable")
    return fn


def build_reward(name: str, spec: dict[str, Any]) -> Callable[..., Any]:
    """The callable of one reward component from its recipe table (``weight`` is ignored here).

    With ``function`` the user's callable is imported and its other keys are bound as keyword
    arguments; otherwise ``REWARDS[name]`` is called with the keys as knobs.
    """
    knobs = {k: v for k, v in spec.items() if k not in ("weight", "function")}
    if spec.get("function"):
        fn = load_function(str(spec["function"]))
        if not knobs:
            return fn
        if inspect.iscoroutinefunction(fn):

            async def bound_async(*args: Any, **kw: Any) -> Any:
                return await fn(*args, **knobs, **kw)

            return bound_async

        def bound(*args: Any, **kw: Any) -> Any:
            return fn(*args, **knobs, **kw)

        return bound
    return REWARDS[name](**knobs)


@dataclass
class RewardComponent:
    """One reward component of a run: its name, weight and recipe table (knobs, optional function)."""

    name: str
    weight: float
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreResult:
    """Scores of a step: per component and sample, and failures per component."""

    parts: list[list[float]]  # [N][K] unweighted component scores
    weights: list[float]  # [K]
    failures: dict[str, int]  # component name -> samples that got the failure score

    @property
    def rewards(self) -> list[float]:
        """The weighted sum per sample [N]."""
        return [sum(w * p for w, p in zip(self.weights, row, strict=True)) for row in self.parts]


# ------------------------------------------------------------------------------- timeouts


def _on_alarm(signum: int, frame: Any) -> None:
    raise RewardTimeout


def _call_with_timeout(
    fn: Callable[..., Any], timeout: float, args: tuple, kwargs: dict, *, armed: bool = False
) -> Any:
    """``fn(*args, **kwargs)`` with a SIGALRM timer when this is the main thread (else no limit).

    ``armed``: the caller holds :func:`_alarm_handler` (a loop of calls installs the handler once and
    only sets and clears the timer per call)."""
    if timeout <= 0 or not (armed or threading.current_thread() is threading.main_thread()):
        return fn(*args, **kwargs)
    if armed:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    with _alarm_handler(timeout) as armed_here:
        return _call_with_timeout(fn, timeout, args, kwargs, armed=armed_here)


@contextlib.contextmanager
def _alarm_handler(timeout: float) -> Iterator[bool]:
    """Install the SIGALRM handler for a run of timed calls; yields whether timers can be used
    (a positive timeout in the main thread), and restores the previous handler after."""
    if timeout <= 0 or threading.current_thread() is not threading.main_thread():
        yield False
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_POSITIONAL = ("prompt", "completion", "answer")


def _meta_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    """A problem's metadata as keyword arguments: a key named like one of the positional arguments
    (a dataset column "prompt" beside a chat, say) is passed as ``meta_<key>`` instead."""
    if not any(k in meta for k in _POSITIONAL):
        return dict(meta)
    return {(f"meta_{k}" if k in _POSITIONAL else k): v for k, v in meta.items()}


def _one(
    fn: Callable[..., Any],
    timeout: float,
    prompt: str,
    completion: str,
    answer: str,
    meta: dict,
    armed: bool = False,
) -> tuple[float | None, str | None]:
    """Score one sample: (value, None) or (None, error text)."""
    try:
        value = _call_with_timeout(
            fn, timeout, (prompt, completion, answer), _meta_kwargs(meta), armed=armed
        )
        return _as_score(value), None
    except RewardTimeout:
        return None, f"timed out after {timeout:g} s"
    except Exception:
        return None, traceback.format_exc()


def _as_score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a reward must return a number, got {type(value).__name__}: {value!r}")
    value = float(value)
    if not math.isfinite(value):  # a NaN reward is a failure of the reward, not of training
        raise ValueError(f"a reward returned {value}")
    return value


# ------------------------------------------------------------------------------- worker processes

_WORKER_FNS: list[Callable[..., Any] | None] = []


def _init_worker(components: list[tuple[str, dict[str, Any]]], plugins: list[str]) -> None:
    """Worker initializer: import the plugins, then build every per-sample component by name."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    import rlvr.rewards  # noqa: F401 - registers the built-in rewards
    from rlvr.plugins import import_plugin

    for name in plugins:
        import_plugin(name)

    _WORKER_FNS.clear()
    _WORKER_FNS.extend(build_reward(name, spec) if name else None for name, spec in components)


def _worker_chunk(
    k: int, timeout: float, items: list[tuple[str, str, str, dict]]
) -> list[tuple[float | None, str | None]]:
    fn = _WORKER_FNS[k]
    assert fn is not None
    with _alarm_handler(timeout) as armed:
        return [_one(fn, timeout, *item, armed=armed) for item in items]


# ------------------------------------------------------------------------------- the runner


class RewardRunner:
    """Scores completions with weighted reward components; see the module docstring.

    ``workers`` > 0 runs the per-sample (synchronous) components in that many worker processes, each
    building its own copy of the component from the recipe (so user functions must be importable).
    ``log`` receives one message with the traceback the first time a component fails.
    """

    def __init__(
        self,
        components: Sequence[RewardComponent],
        *,
        workers: int = 0,
        timeout: float = 10.0,
        failure_score: float = 0.0,
        plugins: Sequence[str] = (),
        log: Callable[[str], None] = print,
    ) -> None:
        if not components:
            raise ValueError("no reward components")
        self.components = list(components)
        self.names = [c.name for c in self.components]
        self.weights = [float(c.weight) for c in self.components]
        self.fns = [build_reward(c.name, c.spec) for c in self.components]
        self.workers, self.timeout, self.failure_score = int(workers), float(timeout), failure_score
        self.plugins = list(plugins) + self._plugin_files()
        self.log = log
        self.total_failures: dict[str, int] = dict.fromkeys(self.names, 0)
        self._logged: set[str] = set()
        self._pool: cf.ProcessPoolExecutor | None = None

    def _plugin_files(self) -> list[str]:
        """Source files of registered components defined outside rlvr (a ``--plugin``), so that a
        worker process can import them and find the same names in its registry."""
        files: list[str] = []
        for c in self.components:
            if c.spec.get("function") or c.name not in REWARDS:
                continue
            factory = REWARDS[c.name]
            if factory.__module__.split(".")[0] == "rlvr":
                continue
            src = inspect.getsourcefile(factory)
            if src and src not in files:
                files.append(src)
        return files

    @property
    def needs_policy(self) -> bool:
        return any(getattr(fn, "needs_policy", False) for fn in self.fns)

    # -- kinds
    @staticmethod
    def _batched(fn: Any) -> bool:
        return bool(getattr(fn, "batched", False))

    @staticmethod
    def _async(fn: Any) -> bool:
        return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )

    def _pool_components(self) -> list[int]:
        return [k for k, fn in enumerate(self.fns) if not self._batched(fn) and not self._async(fn)]

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            pooled = set(self._pool_components())
            # indices must line up with self.fns; a component that is not pooled is not built there
            specs = [
                (c.name, c.spec) if k in pooled else ("", {}) for k, c in enumerate(self.components)
            ]
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("forkserver"),
                initializer=_init_worker,
                initargs=(specs, self.plugins),
            )
        return self._pool

    def close(self) -> None:
        """Shut the worker pool down (kills its processes)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            for p in list(getattr(pool, "_processes", {}).values()):
                p.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RewardRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scoring
    def _fail(self, k: int, err: str, counts: dict[str, int]) -> float:
        name = self.names[k]
        counts[name] = counts.get(name, 0) + 1
        if name not in self._logged:
            self._logged.add(name)
            self.log(
                f"reward {name!r} failed (scored {self.failure_score:g}; further failures of this "
                f"component are only counted):\n{err.rstrip()}"
            )
        return self.failure_score

    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        answers: Sequence[str],
        metas: Sequence[dict[str, Any]],
        *,
        group_size: int = 1,
        policy: tuple[Any, Any] | None = None,
    ) -> ScoreResult:
        """Score N samples with every component -> :class:`ScoreResult` (parts [N][K])."""
        n, kk = len(completions), len(self.fns)
        if not (len(prompts) == len(answers) == len(metas) == n):
            raise ValueError("prompts, completions, answers and metas must have the same length")
        parts = [[0.0] * kk for _ in range(n)]  # [N][K]
        counts: dict[str, int] = {}
        pooled = self._pool_components() if self.workers > 0 else []
        futures: dict[cf.Future, tuple[int, int]] = {}
        if pooled:
            futures = self._submit(pooled, prompts, completions, answers, metas)
        for k, fn in enumerate(self.fns):
            if k in pooled:
                continue
            if self._batched(fn):
                self._score_batched(
                    k, fn, prompts, completions, answers, metas, group_size, policy, parts, counts
                )
            elif self._async(fn):
                self._score_async(k, fn, prompts, completions, answers, metas, parts, counts)
            else:
                with _alarm_handler(self.timeout) as armed:
                    for i in range(n):
                        value, err = _one(
                            fn, self.timeout, prompts[i], completions[i], answers[i], metas[i], armed
                        )
                        parts[i][k] = value if err is None else self._fail(k, err, counts)  # type: ignore[assignment]
        if futures:
            self._collect(futures, parts, counts)
        for name, c in counts.items():
            self.total_failures[name] += c
        return ScoreResult(parts=parts, weights=list(self.weights), failures=counts)

    def _score_batched(
        self, k, fn, prompts, completions, answers, metas, group_size, policy, parts, counts
    ):
        n = len(completions)
        try:
            kw: dict[str, Any] = {"group_size": group_size}
            if getattr(fn, "needs_policy", False):
                kw["policy"] = policy
            values = list(
                fn(list(prompts), list(completions), list(answers), [dict(m) for m in metas], **kw)
            )
            if len(values) != n:
                raise ValueError(f"a batched reward returned {len(values)} scores for {n} samples")
            values = [None if v is None else _as_score(v) for v in values]
        except Exception:
            err = traceback.format_exc()
            values = [self._fail(k, err, counts) for _ in range(n)]
        reasons = getattr(fn, "failure_reasons", None) or {}
        for i in range(n):
            if values[i] is None:  # a sample the batched reward could not score (e.g. a judge's
                # unparseable verdict): a failure of that sample only
                why = reasons.get(i, "the batched reward returned None for it")
                values[i] = self._fail(k, f"sample {i} of the step: {why}", counts)
            parts[i][k] = values[i]

    def _score_async(self, k, fn, prompts, completions, answers, metas, parts, counts):
        timeout = self.timeout if self.timeout > 0 else None

        async def one(i: int) -> tuple[float | None, str | None]:
            try:
                value = await asyncio.wait_for(
                    fn(prompts[i], completions[i], answers[i], **_meta_kwargs(metas[i])), timeout
                )
                return _as_score(value), None
            except TimeoutError:
                return None, f"timed out after {self.timeout:g} s"
            except Exception:
                return None, traceback.format_exc()

        async def all_of() -> list[tuple[float | None, str | None]]:
            return await asyncio.gather(*(one(i) for i in range(len(completions))))

        for i, (value, err) in enumerate(asyncio.run(all_of())):
            parts[i][k] = value if err is None else self._fail(k, err, counts)  # type: ignore[assignment]

    def _submit(self, ks, prompts, completions, answers, metas) -> dict[cf.Future, tuple[int, int]]:
        n = len(completions)
        chunk = max(1, math.ceil(n / (4 * self.workers)))
        pool = self._get_pool()
        futures = {}
        for k in ks:
            for start in range(0, n, chunk):
                items = [
                    (prompts[i], completions[i], answers[i], dict(metas[i]))
                    for i in range(start, min(n, start + chunk))
                ]
                futures[pool.submit(_worker_chunk, k, self.timeout, items)] = (k, start)
        return futures

    def _collect(self, futures, parts, counts) -> None:
        # a worker stuck outside Python (where SIGALRM cannot reach) is the only way past the per-call
        # limit: allow every call its full limit (spread over the workers) plus slack, then give up on
        # what is left and rebuild the pool
        limit = None
        if self.timeout > 0:
            limit = self.timeout * len(parts) * len({k for k, _ in futures.values()}) / self.workers + 30
        done, pending = cf.wait(futures, timeout=limit)
        broken = bool(pending)
        for fut in futures:
            k, start = futures[fut]
            if fut in done and fut.exception() is None:
                for j, (value, err) in enumerate(fut.result()):
                    parts[start + j][k] = value if err is None else self._fail(k, err, counts)
                continue
            broken = True
            if fut in done:
                exc = fut.exception()
                err = "".join(traceback.format_exception(exc)) if exc else "worker failed"
            else:
                err = "the worker process did not answer in time and was killed"
            size = self._chunk_len(futures, fut, len(parts))
            for j in range(size):
                parts[start + j][k] = self._fail(k, err, counts)
        if broken:  # a dead or stuck worker: start a fresh pool for the next step
            self.close()

    @staticmethod
    def _chunk_len(futures, fut, n: int) -> int:
        k, start = futures[fut]
        later = sorted(s for kk, s in futures.values() if kk == k and s > start)
        return (later[0] if later else n) - start
