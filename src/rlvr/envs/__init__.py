"""Multi-turn environments, tools, and the episode runner.

Importing the package registers the shipped environments (``calculator``, ``gridworld``,
``textarena``) in
:data:`ENVS` and their problem streams in :data:`ENV_TASKS`.
"""

from rlvr.envs import calculator as _calculator  # noqa: F401  (registers "calculator")
from rlvr.envs import gridworld as _gridworld  # noqa: F401  (registers "gridworld")
from rlvr.envs import textarena as _textarena  # noqa: F401  (registers "textarena"; needs textarena)
from rlvr.envs.base import ENV_TASKS, ENVS, Env, EnvTask, build_env_task, make_env, state_id
from rlvr.envs.calculator import CalculatorEnv
from rlvr.envs.episodes import Episodes, episode_metrics, evaluate_episodes, run_episodes
from rlvr.envs.gridworld import GridWorld
from rlvr.envs.gym_adapter import GymTextEnv
from rlvr.envs.tools import Tool, calculate, describe_tools, parse_tool_call, tool_from_function

__all__ = [
    "ENVS",
    "ENV_TASKS",
    "CalculatorEnv",
    "Env",
    "EnvTask",
    "Episodes",
    "GridWorld",
    "GymTextEnv",
    "Tool",
    "build_env_task",
    "calculate",
    "describe_tools",
    "episode_metrics",
    "evaluate_episodes",
    "make_env",
    "parse_tool_call",
    "run_episodes",
    "state_id",
    "tool_from_function",
]
