"""The ``calculator`` environment: a reasoning-gym problem solved with a calculator tool.

First observation: the question and an instruction. Each model turn is one of

- one or more tool calls (``<tool_call>{"name": "calculator", "arguments": {"expression": ...}}
  </tool_call>``): the observation is one ``<tool_response>`` block per call, reward 0, not done;
- a final answer ``<answer>X</answer>`` (it wins over calls in the same turn): done, reward 1 when the
  task's own scorer gives full credit (the ``answer`` reward of :mod:`rlvr.rewards.verifiers`), else 0;
- neither: done, reward 0.

info: ``tool_calls``/``tool_errors`` of the step, ``success`` at done, ``state`` (the anchor key:
the question plus the observation, so the turns after equal tool responses share an anchor),
``role`` ("tool" after calls).

The task (:class:`CalculatorTask`) wraps a :class:`~rlvr.data.tasks.ReasoningGymTask` (default
``chain_sum``), so the training stream never contains a held-out question.
"""

from __future__ import annotations

from typing import Any

from rlvr.data.prompts import INSTRUCTION
from rlvr.data.tasks import Problem, ReasoningGymTask
from rlvr.envs.base import ENV_TASKS, ENVS, EnvTask
from rlvr.envs.tools import (
    BUILTIN_TOOLS,
    Tool,
    ToolCallError,
    call_tool,
    describe_tools,
    format_tool_response,
    parse_tool_calls,
)
from rlvr.rewards.verifiers import extract_answer, make_task_reward

__all__ = ["CALC_INSTRUCTION", "CalculatorEnv", "CalculatorTask", "calculator_observation"]

CALC_INSTRUCTION = f"You may use the calculator. {INSTRUCTION}"


def calculator_observation(question: str, instruction: str = CALC_INSTRUCTION) -> str:
    """The first observation of a problem (the user turn)."""
    return f"{question}\n{instruction}" if instruction else question


class CalculatorEnv:
    """One episode on one problem; ``tools`` are the callable tools (default: the calculator)."""

    def __init__(
        self,
        problem: Problem,
        *,
        tools: list[Tool] | None = None,
        describe: bool = False,
        instruction: str = CALC_INSTRUCTION,
        max_calls_per_turn: int = 4,
    ) -> None:
        self.problem = problem
        self.tools = {t.name: t for t in (tools or [BUILTIN_TOOLS["calculator"]])}
        self.system = describe_tools(self.tools.values()) if describe else None
        self.instruction = instruction
        self.max_calls_per_turn = max_calls_per_turn
        self._score = make_task_reward()
        self._first = calculator_observation(problem.question, instruction)
        self.state = problem.question
        self.done = True

    def reset(self, seed: int) -> str:
        """The question and instruction (``seed`` is unused: the problem fixes the episode)."""
        self.done = False
        self.state = self.problem.question
        return self._first

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self.done:
            raise RuntimeError("CalculatorEnv.step called on a finished episode; call reset first")
        p = self.problem
        if extract_answer(action) is not None:
            self.done = True
            ok = self._score(p.question, action, p.answer, **p.meta) >= 1.0
            return "", float(ok), True, {"success": ok, "state": self.state}
        calls = parse_tool_calls(action)
        if not calls:
            self.done = True
            return "", 0.0, True, {"success": False, "state": self.state}
        blocks, errors = [], 0
        for call in calls[: self.max_calls_per_turn]:
            if isinstance(call, ToolCallError):
                text, ok = f"error: {call}", False
            else:
                res = call_tool(self.tools, call[0], call[1])
                text, ok = res.text, res.ok
            errors += not ok
            blocks.append(format_tool_response(text))
        obs = "".join(blocks)
        self.state = f"{p.question}\x1f{obs}"
        info = {
            "tool_calls": len(blocks),
            "tool_errors": errors,
            "state": self.state,
            "role": "tool",
        }
        return obs, 0.0, False, info


@ENVS.register("calculator")
def make_calculator_env(
    problem: Problem,
    *,
    describe_tools: bool = False,
    python: bool = False,
    instruction: str = CALC_INSTRUCTION,
) -> CalculatorEnv:
    """The calculator environment of ``problem``. ``describe_tools``: put the tool schemas in a system
    prompt (too long for the tiny model's 256-token context); ``python``: also offer the sandboxed
    Python interpreter as the tool ``python``."""
    tools = [BUILTIN_TOOLS["calculator"]] + ([BUILTIN_TOOLS["python"]] if python else [])
    return CalculatorEnv(problem, tools=tools, describe=describe_tools, instruction=instruction)


class CalculatorTask(EnvTask):
    """The problems of the calculator environment: a reasoning-gym task's, with
    ``meta["env"] = "calculator"`` and ``meta["seed"]`` = the item's index."""

    def __init__(
        self,
        *,
        seed: int,
        heldout_seed: int,
        heldout_size: int,
        task: str = "chain_sum",
        **task_kwargs: Any,
    ) -> None:
        self.name = "calculator"
        self.inner = ReasoningGymTask(
            task, seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size, **task_kwargs
        )
        self.heldout = [self._wrap(p) for p in self.inner.heldout]

    @staticmethod
    def _wrap(p: Problem) -> Problem:
        meta = {**p.meta, "env": "calculator", "seed": int(p.meta.get("source_index", 0))}
        return Problem(question=p.question, answer=p.answer, meta=meta, messages=p.messages)

    @property
    def position(self) -> int:  # type: ignore[override]
        return self.inner.position

    @position.setter
    def position(self, value: int) -> None:
        self.inner.position = value

    def next(self, b: int) -> list[Problem]:
        return [self._wrap(p) for p in self.inner.next(b)]


@ENV_TASKS.register("calculator")
def calculator_task(
    *, seed: int, heldout_seed: int, heldout_size: int, task: str = "chain_sum", **task_kwargs: Any
) -> CalculatorTask:
    """Problems of a reasoning-gym task (``task``, its knobs such as ``min_terms``) for the calculator
    environment."""
    return CalculatorTask(
        seed=seed, heldout_seed=heldout_seed, heldout_size=heldout_size, task=task, **task_kwargs
    )
