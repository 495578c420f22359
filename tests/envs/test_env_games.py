"""The shipped environments (calculator, gridworld), their problem streams, and the gym adapter."""

from __future__ import annotations

import pytest

from rlvr.data.tasks import Problem
from rlvr.envs import ENV_TASKS, ENVS, GymTextEnv, build_env_task, make_env
from rlvr.envs.base import Env, seed_stream, state_id
from rlvr.envs.calculator import CALC_INSTRUCTION, CalculatorEnv, calculator_observation
from rlvr.envs.gridworld import GridWorld
from rlvr.envs.tools import format_tool_call
from rlvr.registry import UnknownComponentError

CALC_KW = {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}


def _calc_problem() -> Problem:
    return build_env_task("calculator", seed=0, heldout_seed=0, heldout_size=4, **CALC_KW).next(1)[0]


# --------------------------------------------------------------------------------------------------
# registry and state ids


def test_registries_name_the_shipped_environments():
    assert {"calculator", "gridworld"} <= set(ENVS.names()) and set(ENVS.names()) == set(
        ENV_TASKS.names()
    )
    with pytest.raises(UnknownComponentError, match="valid names: calculator, gridworld"):
        build_env_task("chess", seed=0, heldout_seed=0, heldout_size=1)
    with pytest.raises(ValueError, match=r"no meta\['env'\]"):
        make_env(Problem("q", "a"))
    assert isinstance(make_env(_calc_problem()), Env)


def test_state_id_is_stable_and_positive():
    # fixed values: the same in every process (Python's hash() is salted per process)
    assert state_id("") == 3797230976420062951
    assert state_id("grid 3x3 goal 1,2 at 0,0") == state_id("grid 3x3 goal 1,2 at 0,0")
    ids = {state_id(f"s{i}") for i in range(1000)}
    assert len(ids) == 1000 and min(ids) >= 1 and max(ids) < 2**62
    assert seed_stream(0, 5, "train") != seed_stream(1, 5, "train") != seed_stream(0, 5, "heldout")


# --------------------------------------------------------------------------------------------------
# calculator


def test_calculator_env_tool_call_then_answer():
    p = _calc_problem()
    env = make_env(p)
    assert env.reset(0) == calculator_observation(p.question) and env.system is None
    expr = p.meta["expression"]
    obs, r, done, info = env.step(
        "I'll compute. " + format_tool_call("calculator", {"expression": expr})
    )
    assert obs == f"<tool_response>{p.answer}</tool_response>" and r == 0.0 and not done
    assert info["tool_calls"] == 1 and info["tool_errors"] == 0 and info["role"] == "tool"
    assert info["state"] == f"{p.question}\x1f{obs}"
    obs, r, done, info = env.step(f"<answer>{p.answer}</answer>")
    assert (obs, r, done, info["success"]) == ("", 1.0, True, True)
    with pytest.raises(RuntimeError, match="finished episode"):
        env.step("more")


def test_calculator_env_errors_wrong_answers_and_silence():
    p = _calc_problem()
    env = make_env(p)
    env.reset(0)
    bad = '<tool_call>{"name": "calculator"</tool_call>'
    bad += '<tool_call>{"name": "calc", "arguments": {}}</tool_call>'
    bad += format_tool_call("calculator", {"expression": "import os"})
    obs, r, done, info = env.step(bad)
    assert not done and info["tool_calls"] == 3 and info["tool_errors"] == 3
    assert obs.count("<tool_response>error: ") == 3 and "unknown tool 'calc'" in obs
    _, r, done, info = env.step(f"<answer>{int(p.answer) + 1}</answer>")
    assert (r, done, info["success"]) == (0.0, True, False)
    env.reset(0)  # a reset starts over
    _, r, done, info = env.step("no idea")  # neither a call nor an answer ends the episode
    assert (r, done, info["success"]) == (0.0, True, False)
    env.reset(0)  # an answer wins over a call in the same turn
    _, r, done, info = env.step(
        format_tool_call("calculator", {"expression": "1"}) + f"<answer>{p.answer}</answer>"
    )
    assert (r, done, info["success"]) == (1.0, True, True)


def test_calculator_env_knobs():
    p = _calc_problem()
    env = ENVS["calculator"](p, describe_tools=True, python=True)
    assert isinstance(env, CalculatorEnv) and set(env.tools) == {"calculator", "python"}
    assert '"name": "python"' in env.system and '"name": "calculator"' in env.system
    assert ENVS.knobs("calculator") == {
        "describe_tools": False,
        "python": False,
        "instruction": CALC_INSTRUCTION,
    }


def test_calculator_task_heldout_never_in_training_and_resumes():
    task = build_env_task("calculator", seed=0, heldout_seed=5, heldout_size=64, **CALC_KW)
    held = {p.question for p in task.heldout}
    assert len(held) == 64 and all(p.meta["env"] == "calculator" for p in task.heldout)
    first = task.next(300)
    assert not held & {p.question for p in first}
    state = task.state_dict()
    more = [p.question for p in task.next(5)]
    again = build_env_task("calculator", seed=0, heldout_seed=5, heldout_size=64, **CALC_KW)
    again.load_state_dict(state)
    assert [p.question for p in again.next(5)] == more
    assert first[0].meta["source_dataset"] == "chain_sum" and first[0].meta["num_digits"] == 2
    with pytest.raises(ValueError, match="cannot create reasoning-gym task"):
        build_env_task("calculator", seed=0, heldout_seed=0, heldout_size=1, task="no_such_task")


# --------------------------------------------------------------------------------------------------
# gridworld


def test_gridworld_moves_walls_and_goal():
    env = GridWorld(0, width=3, height=3, max_steps=20)
    env.start, env.goal = (0, 0), (2, 1)  # a known layout
    assert env.reset(0) == "Grid 3x3. You are at 0,0. Goal at 2,1. Move up, down, left or right."
    assert env.state == "grid 3x3 goal 2,1 at 0,0"
    assert env.step("up")[:3] == ("Wall. At 0,0.", 0.0, False)
    assert env.step("I go RIGHT now")[:3] == ("At 1,0.", 0.0, False)
    obs, r, done, info = env.step("hmm")
    assert obs == "Say up, down, left or right. At 1,0." and info["state"] == "grid 3x3 goal 2,1 at 1,0"
    assert env.step("down then left")[0] == "At 1,1."  # the first move word counts
    obs, r, done, info = env.step("right")
    assert (obs, r, done, info["success"]) == ("Goal!", 1.0, True, True)


def test_gridworld_step_penalty_and_max_steps():
    env = GridWorld(0, width=4, height=1, max_steps=2, step_penalty=0.1)
    env.start, env.goal = (0, 0), (3, 0)
    env.reset(0)
    assert env.step("right")[1:3] == (-0.1, False)
    _, r, done, info = env.step("right")
    assert (r, done, info["success"]) == (-0.1, True, False)
    with pytest.raises(ValueError, match="at least 2 cells"):
        GridWorld(0, width=1, height=1)


def test_gridworld_is_deterministic_and_states_repeat():
    problems = build_env_task("gridworld", seed=0, heldout_seed=0, heldout_size=4).next(8)
    layouts = []
    for p in problems:
        a, b = make_env(p), make_env(p)
        assert a.reset(1) == b.reset(2)  # the layout is the problem's, whatever the reset seed
        assert (a.start, a.goal) == (b.start, b.goal) and a.start != a.goal
        layouts.append((a.start, a.goal))
    assert len(set(layouts)) > 1
    # two episodes of one group that walk different paths meet in the same cells: equal state keys
    p = problems[0]
    keys = []
    for moves in (["left", "right", "up", "down"], ["up", "down", "left", "right"]):
        env = make_env(p, width=5, height=5, max_steps=10)
        env.start, env.goal = (2, 2), (0, 4)
        env.reset(0)
        keys.append([env.state] + [env.step(m)[3]["state"] for m in moves])
    assert keys[0][0] == keys[1][0] == keys[0][2] == keys[0][4] == keys[1][2] == keys[1][4]
    assert keys[0][1] != keys[1][1]


def test_gridworld_task_seeds_disjoint_and_resume():
    task = build_env_task("gridworld", seed=3, heldout_seed=9, heldout_size=50)
    held = {p.meta["seed"] for p in task.heldout}
    assert len(held) == 50 and task.heldout[0].question == f"gridworld #{task.heldout[0].meta['seed']}"
    train = [p.meta["seed"] for p in task.next(200)]
    assert not held & set(train) and len(set(train)) == 200
    state = task.state_dict()
    nxt = [p.meta["seed"] for p in task.next(3)]
    again = build_env_task("gridworld", seed=3, heldout_seed=9, heldout_size=50)
    again.load_state_dict(state)
    assert [p.meta["seed"] for p in again.next(3)] == nxt
    other = build_env_task("gridworld", seed=4, heldout_seed=9, heldout_size=50)
    assert [p.meta["seed"] for p in other.heldout] == [p.meta["seed"] for p in task.heldout]
    assert [p.meta["seed"] for p in other.next(3)] != train[:3]
    with pytest.raises(ValueError, match="missing 'position'"):
        again.load_state_dict({})
    # a training seed that is a held-out seed is skipped
    forced = build_env_task("gridworld", seed=3, heldout_seed=9, heldout_size=1)
    forced._heldout_seeds = {seed_stream(3, 0, "train")}
    assert forced.next(1)[0].meta["seed"] == seed_stream(3, 1, "train")


# --------------------------------------------------------------------------------------------------
# gym adapter


class FakeGym:
    """The gymnasium API with text observations: count to ``target`` by writing "+1"."""

    def __init__(self, target: int = 2, limit: int = 3) -> None:
        self.target, self.limit = target, limit
        self.seeds: list[int | None] = []

    def reset(self, *, seed: int | None = None):
        self.seeds.append(seed)
        self.n, self.t = 0, 0
        return "count: 0", {"state": "0"}

    def step(self, action: str):
        self.t += 1
        self.n += action.strip() == "+1"
        terminated = self.n == self.target
        truncated = self.t >= self.limit and not terminated
        return f"count: {self.n}", float(terminated), terminated, truncated, {"state": str(self.n)}


def test_gym_adapter_maps_the_api():
    env = GymTextEnv(FakeGym())
    assert isinstance(env, Env)
    assert env.reset(7) == "count: 0" and env.state == "0"
    obs, r, done, info = env.step("+1")
    assert (obs, r, done) == ("count: 1", 0.0, False) and info["state"] == "1"
    assert info["terminated"] is False and info["truncated"] is False
    obs, r, done, info = env.step("+1")
    assert (obs, r, done, info["success"], info["terminated"]) == ("count: 2", 1.0, True, True, True)
    env.reset(0)
    env.step("x")
    env.step("x")
    _, r, done, info = env.step("x")
    assert (r, done, info["truncated"], info["success"]) == (0.0, True, True, False)
    assert env.env.seeds == [7, 0]
    fixed = GymTextEnv(FakeGym(), seed=42)
    fixed.reset(1)
    assert fixed.env.seeds == [42]


def test_gym_adapter_errors():
    class NoStep:
        def reset(self, seed=None):
            return "x", {}

    class Numbers(FakeGym):
        def reset(self, *, seed=None):
            return 3, {}

    class Four(FakeGym):
        def step(self, action):
            return "x", 0.0, False, {}

    with pytest.raises(TypeError, match="no method step"):
        GymTextEnv(NoStep())
    with pytest.raises(TypeError, match="int observation, not text"):
        GymTextEnv(Numbers()).reset(0)
    env = GymTextEnv(Four())
    env.reset(0)
    with pytest.raises(TypeError, match="got 4 values"):
        env.step("a")
