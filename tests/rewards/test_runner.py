"""The reward runner: weighted components, failures, timeouts, async and batched rewards, workers."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time

import pytest

from rlvr.rewards import REWARDS
from rlvr.rewards.runner import RewardComponent, RewardRunner, load_function
from rlvr.rewards.verifiers import BatchedReward

PROMPTS = ["a", "b", "c", "d"]
COMPLETIONS = ["<answer>1</answer>", "x", "<answer>3</answer>", "<answer>4</answer> tail"]
ANSWERS = ["1", "2", "3", "4"]
METAS = [{"i": i} for i in range(4)]


@pytest.fixture(autouse=True)
def _restore_registry():
    """Tests here register rewards; leave the global registry as the other tests expect it."""
    before = dict(REWARDS._items)
    yield
    REWARDS._items.clear()
    REWARDS._items.update(before)


def _score(runner, **kw):
    return runner.score(PROMPTS, COMPLETIONS, ANSWERS, METAS, **kw)


@pytest.fixture
def user_module(tmp_path):
    """A user's reward file: plain, failing, slow, wrong-type, async and knob-taking functions."""
    path = tmp_path / "user_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            import asyncio, os, time

            def length(prompt, completion, answer, **meta):
                return len(completion) / 10

            def boom(prompt, completion, answer, **meta):
                if meta["i"] % 2:
                    raise RuntimeError("odd sample " + str(meta["i"]))
                return 1.0

            def slow(prompt, completion, answer, **meta):
                if meta["i"] == 2:
                    while True:
                        pass
                return 0.5

            def sleepy(prompt, completion, answer, **meta):
                if meta["i"] == 1:
                    time.sleep(30)
                return 0.25

            def swallow(prompt, completion, answer, **meta):
                try:
                    time.sleep(30)
                except Exception:
                    return 9.0
                return 9.0

            def text(prompt, completion, answer, **meta):
                return "1.0"

            def nan(prompt, completion, answer, **meta):
                return float("nan")

            def crash(prompt, completion, answer, **meta):
                if meta["i"] == 3:
                    os._exit(7)
                return 1.0

            async def remote(prompt, completion, answer, **meta):
                await asyncio.sleep(0.2)
                return float(meta["i"])

            async def hang(prompt, completion, answer, **meta):
                await asyncio.sleep(0.05 if meta["i"] else 30)
                return 1.0

            def scaled(prompt, completion, answer, *, factor, **meta):
                return factor * meta["i"]
            """
        )
    )
    return str(path)


def test_weighted_sum_and_parts():
    comps = [RewardComponent("answer_exact", 1.0), RewardComponent("format", 0.5)]
    REWARDS.register("answer_exact")(
        lambda: (
            lambda prompt, completion, answer, **meta: float(f"<answer>{answer}</answer>" in completion)
        )
    )
    runner = RewardRunner(comps)
    res = _score(runner)
    assert res.parts == [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]
    assert res.rewards == [1.5, 0.0, 1.5, 1.0]
    assert res.failures == {}


def test_user_function_by_path_and_module(user_module, tmp_path, monkeypatch):
    runner = RewardRunner([RewardComponent("len", 2.0, {"function": f"{user_module}:length"})])
    assert _score(runner).rewards == [2 * len(c) / 10 for c in COMPLETIONS]
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_function("user_rewards:length")("p", "abcd", "a") == 0.4
    knob = RewardRunner([RewardComponent("s", 1.0, {"function": f"{user_module}:scaled", "factor": 3})])
    assert _score(knob).rewards == [0.0, 3.0, 6.0, 9.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nomodule", "expected 'module:function'"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("/no/such/file.py:f", "no such file"),
        ("os.path:no_such_function", "has no attribute"),
        ("os:sep", "is not callable"),
    ],
)
def test_bad_function_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        load_function(spec)
    assert spec in str(err.value)


def test_exception_gives_failure_score_logged_once(user_module):
    logged: list[str] = []
    runner = RewardRunner(
        [RewardComponent("boom", 1.0, {"function": f"{user_module}:boom"})],
        failure_score=-1.0,
        log=logged.append,
    )
    res = _score(runner)
    assert res.rewards == [1.0, -1.0, 1.0, -1.0]
    assert res.failures == {"boom": 2}
    _score(runner)
    assert runner.total_failures == {"boom": 4}
    assert len(logged) == 1 and "RuntimeError: odd sample 1" in logged[0] and "Traceback" in logged[0]


@pytest.mark.parametrize("fn", ["text", "nan"])
def test_non_number_and_nan_are_failures(user_module, fn):
    runner = RewardRunner(
        [RewardComponent(fn, 1.0, {"function": f"{user_module}:{fn}"})], log=lambda m: None
    )
    res = _score(runner)
    assert res.rewards == [0.0] * 4 and res.failures == {fn: 4}


@pytest.mark.parametrize("fn", ["slow", "sleepy", "swallow"])
def test_inline_timeout(user_module, fn):
    logged: list[str] = []
    runner = RewardRunner(
        [RewardComponent(fn, 1.0, {"function": f"{user_module}:{fn}"})], timeout=0.3, log=logged.append
    )
    t0 = time.perf_counter()
    res = _score(runner)
    assert time.perf_counter() - t0 < 5
    assert res.failures[fn] >= 1
    assert "timed out after 0.3 s" in logged[0]
    if fn == "swallow":  # `except Exception` cannot swallow the timeout
        assert res.rewards == [0.0] * 4


def test_async_rewards_run_concurrently_with_timeout(user_module):
    runner = RewardRunner([RewardComponent("remote", 1.0, {"function": f"{user_module}:remote"})])
    t0 = time.perf_counter()
    assert _score(runner).rewards == [0.0, 1.0, 2.0, 3.0]
    assert time.perf_counter() - t0 < 0.6  # four 0.2 s calls, concurrently
    hang = RewardRunner(
        [RewardComponent("hang", 1.0, {"function": f"{user_module}:hang"})],
        timeout=0.5,
        log=lambda m: None,
    )
    res = _score(hang)
    assert res.rewards == [0.0, 1.0, 1.0, 1.0] and res.failures == {"hang": 1}


class _GroupRank(BatchedReward):
    """Rank within the group (a batched reward that needs the group)."""

    def __call__(self, prompts, completions, answers, metas, *, group_size, policy=None):
        out = []
        for start in range(0, len(completions), group_size):
            group = completions[start : start + group_size]
            out += [sorted(group).index(c) / (group_size - 1) for c in group]
        return out


def test_batched_reward_gets_the_step_and_group_size():
    REWARDS.register("group_rank_test")(lambda: _GroupRank())
    res = _score(RewardRunner([RewardComponent("group_rank_test", 1.0)]), group_size=2)
    # groups: ("<answer>1</answer>", "x") and ("<answer>3</answer>", "<answer>4</answer> tail")
    assert res.rewards == [0.0, 1.0, 0.0, 1.0]


def test_batched_reward_failure_scores_all_samples():
    class Bad(BatchedReward):
        def __call__(self, prompts, completions, answers, metas, *, group_size, policy=None):
            return [1.0]  # wrong length

    REWARDS.register("bad_batched_test")(lambda: Bad())
    logged: list[str] = []
    res = _score(RewardRunner([RewardComponent("bad_batched_test", 1.0)], log=logged.append))
    assert res.rewards == [0.0] * 4 and res.failures == {"bad_batched_test": 4}
    assert "returned 1 scores for 4 samples" in logged[0]


def test_batched_reward_none_fails_that_sample_only():
    """A batched reward's None (a judge's unparseable verdict) is that sample's failure: failure_score,
    counted, its reason (failure_reasons) logged once; the other samples keep their scores."""

    class Partial(BatchedReward):
        def __call__(self, prompts, completions, answers, metas, *, group_size, policy=None):
            self.failure_reasons = {1: "no score in 'x'"}
            return [0.25, None, 0.75, None]

    REWARDS.register("partial_batched_test")(lambda: Partial())
    logged: list[str] = []
    runner = RewardRunner(
        [RewardComponent("partial_batched_test", 1.0)], failure_score=-1.0, log=logged.append
    )
    res = _score(runner)
    assert res.rewards == [0.25, -1.0, 0.75, -1.0] and res.failures == {"partial_batched_test": 2}
    assert len(logged) == 1 and "sample 1 of the step: no score in 'x'" in logged[0]
    assert runner.total_failures == {"partial_batched_test": 2}


def test_policy_is_passed_only_when_needed():
    seen = []

    class NeedsPolicy(BatchedReward):
        needs_policy = True

        def __call__(self, prompts, completions, answers, metas, *, group_size, policy=None):
            seen.append(policy)
            return [0.0] * len(prompts)

    REWARDS.register("needs_policy_test")(lambda: NeedsPolicy())
    runner = RewardRunner([RewardComponent("needs_policy_test", 1.0)])
    assert runner.needs_policy
    _score(runner, policy=("model", "tok"))
    assert seen == [("model", "tok")]


def test_workers_equal_inline(user_module):
    comps = [
        RewardComponent("format", 0.5),
        RewardComponent("len", 1.0, {"function": f"{user_module}:length"}),
        RewardComponent("boom", 1.0, {"function": f"{user_module}:boom"}),
    ]
    inline = _score(RewardRunner(comps, log=lambda m: None))
    with RewardRunner(comps, workers=2, log=lambda m: None) as pooled:
        res = _score(pooled)
        assert _score(pooled).parts == res.parts  # the pool is reused
    assert res.parts == inline.parts and res.failures == inline.failures == {"boom": 2}


def test_worker_timeout(user_module):
    logged: list[str] = []
    comps = [RewardComponent("slow", 1.0, {"function": f"{user_module}:slow"})]
    with RewardRunner(comps, workers=2, timeout=0.5, log=logged.append) as runner:
        res = _score(runner)
    assert res.rewards == [0.5, 0.5, 0.0, 0.5] and res.failures == {"slow": 1}
    assert "timed out after 0.5 s" in logged[0]


def test_worker_crash_does_not_stop_the_run(user_module):
    """A worker that dies fails the samples in flight on the pool; the next step gets a fresh pool."""
    comps = [RewardComponent("crash", 1.0, {"function": f"{user_module}:crash"})]
    logged: list[str] = []
    with RewardRunner(comps, workers=1, log=logged.append) as runner:
        res = _score(runner)
        assert res.rewards[3] == 0.0 and res.failures["crash"] >= 1
        assert "BrokenProcessPool" in logged[0] or "terminated abruptly" in logged[0]
        again = _score(runner)
        assert again.rewards[3] == 0.0 and again.failures["crash"] >= 1


def test_pool_finds_plugin_components(tmp_path):
    plugin = tmp_path / "my_plugin_rewards.py"
    plugin.write_text(
        "from rlvr.rewards import REWARDS\n"
        "@REWARDS.register('plugin_len_test')\n"
        "def make():\n"
        "    return lambda prompt, completion, answer, **meta: float(len(completion))\n"
    )
    from rlvr.cli import load_plugins

    load_plugins([str(plugin)])
    with RewardRunner([RewardComponent("plugin_len_test", 1.0)], workers=1) as runner:
        assert _score(runner).rewards == [float(len(c)) for c in COMPLETIONS]


def test_ctrl_c_is_not_a_reward_failure(user_module):
    def interrupt(prompt, completion, answer, **meta):
        raise KeyboardInterrupt

    REWARDS.register("interrupt_test")(lambda: interrupt)
    with pytest.raises(KeyboardInterrupt):
        _score(RewardRunner([RewardComponent("interrupt_test", 1.0)]))


def test_asyncio_and_os_imports_used():  # keep the fixtures' imports honest for ruff
    assert asyncio and os


def test_metadata_named_like_an_argument_is_renamed():
    """A dataset column called 'prompt' (beside a chat) cannot collide with the positional prompt."""
    seen = []

    def fn(prompt, completion, answer, **meta):
        seen.append(meta)
        return 1.0

    REWARDS.register("collide_test")(lambda: fn)
    runner = RewardRunner([RewardComponent("collide_test", 1.0)])
    res = runner.score(["p"], ["c"], ["a"], [{"prompt": "x", "answer": "y", "other": 1}])
    assert res.rewards == [1.0] and res.failures == {}
    assert seen == [{"meta_prompt": "x", "meta_answer": "y", "other": 1}]


def test_timed_loop_restores_the_alarm_handler_and_leaves_no_timer(user_module):
    """The handler is installed once for a component's loop of timed calls (not once per sample), and
    the caller's SIGALRM handler and a clear timer are back afterwards, also after a timeout."""
    mine = lambda signum, frame: None  # noqa: E731
    old = signal.signal(signal.SIGALRM, mine)
    try:
        for fn in ("sleepy", "text"):
            runner = RewardRunner(
                [RewardComponent(fn, 1.0, {"function": f"{user_module}:{fn}"})],
                timeout=0.3,
                log=lambda m: None,
            )
            _score(runner)
            assert signal.getsignal(signal.SIGALRM) is mine
            assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)
