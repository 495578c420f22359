"""Tools a model can call inside an episode: the call format, schemas, and the built-in tools.

Call format (Qwen / Hermes style): the model writes, anywhere in its turn,

    <tool_call>{"name": "calculator", "arguments": {"expression": "12+7"}}</tool_call>

and the environment answers each call of the turn with one block, in the order of the calls,

    <tool_response>19</tool_response>              (success: the tool's output as text)
    <tool_response>error: unknown tool 'calc'</tool_response>   (failure: "error: " + why)

A call fails (counts as a tool error) when its JSON is malformed, the tool is unknown, a required
argument is missing, an argument is unknown or of the wrong JSON type, or the tool itself fails (a
calculator expression that is not arithmetic, a Python program that raises). Failures are answered as
text, never raised, so that the policy sees its mistake and can retry.

User tools are plain Python functions: :func:`tool_from_function` derives a JSON schema from the
signature (``int`` -> integer, ``float`` -> number, ``str`` -> string, ``bool`` -> boolean, ``list[X]``
-> array of X, ``X | None`` -> X or null; a parameter with a default is not required) and takes the
description from the first line of the docstring.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import operator
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUILTIN_TOOLS",
    "CALCULATOR",
    "PYTHON",
    "Tool",
    "ToolCallError",
    "ToolError",
    "ToolResult",
    "calculate",
    "call_tool",
    "describe_tools",
    "format_tool_call",
    "format_tool_response",
    "parse_tool_call",
    "parse_tool_calls",
    "run_python_tool",
    "tool_from_function",
]

_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


class ToolCallError(ValueError):
    """A ``<tool_call>`` block whose content is not a valid call (bad JSON, no name, ...)."""


class ToolError(RuntimeError):
    """Raised by a tool function for a failure that the model should see as ``error: ...``."""


@dataclass(frozen=True)
class Tool:
    """A callable tool: ``fn(**arguments)`` returns its output (turned into text with ``str``).

    ``parameters`` is a JSON schema of type "object" (``properties``, ``required``).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any] = field(compare=False)

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function description: {name, description, parameters}."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolResult:
    """Outcome of one call: the text the model sees, and whether the call succeeded."""

    text: str
    ok: bool


# ------------------------------------------------------------------------------------ call format


def parse_tool_calls(text: str) -> list[tuple[str, dict[str, Any]] | ToolCallError]:
    """Every ``<tool_call>...</tool_call>`` block of ``text`` in order: ``(name, arguments)`` or, for a
    malformed block, the :class:`ToolCallError` that says why (returned, not raised)."""
    out: list[tuple[str, dict[str, Any]] | ToolCallError] = []
    for body in _CALL.findall(text):
        try:
            out.append(_parse_body(body))
        except ToolCallError as e:
            out.append(e)
    return out


def parse_tool_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The first tool call of ``text`` as ``(name, arguments)``, or None when there is none.

    Raises :class:`ToolCallError` when the first ``<tool_call>`` block is malformed: invalid JSON, not
    a JSON object, no string ``name``, or ``arguments`` that is not an object.
    """
    m = _CALL.search(text)
    return None if m is None else _parse_body(m.group(1))


def _parse_body(body: str) -> tuple[str, dict[str, Any]]:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"malformed tool call JSON: {e.msg} at char {e.pos}") from None
    if not isinstance(obj, dict):
        raise ToolCallError(f"tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ToolCallError('tool call needs a string "name"')
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise ToolCallError(f"malformed tool call arguments: {e.msg} at char {e.pos}") from None
    if not isinstance(args, dict):
        raise ToolCallError(f'tool call "arguments" must be an object, got {type(args).__name__}')
    return name, args


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """The text of a call, as the model should write it."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': dict(arguments)})}</tool_call>"


def format_tool_response(text: str) -> str:
    """The observation block of one tool result."""
    return f"<tool_response>{text}</tool_response>"


# ------------------------------------------------------------------------------------ schemas

_JSON_TYPES: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    """JSON schema of one type hint; raises ValueError naming ``where`` for an unsupported hint."""
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    origin = typing.get_origin(hint)
    if hint is list or origin is list:
        args = typing.get_args(hint)
        return {"type": "array", "items": _schema_of(args[0], where)} if args else {"type": "array"}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and len(typing.get_args(hint)) == 2:  # X | None
            sub = _schema_of(inner[0], where)
            return {**sub, "type": [sub["type"], "null"]}
    raise ValueError(
        f"{where}: unsupported type {hint!r}; use int, float, str, bool, list[...] or X | None"
    )


def tool_from_function(
    fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
) -> Tool:
    """A :class:`Tool` from a plain function: schema from its type hints, description from the first
    line of its docstring (``name``/``description`` override). Every parameter needs a type hint;
    ``*args``/``**kwargs`` are refused."""
    tool_name = name or fn.__name__
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as e:
        raise ValueError(f"tool {tool_name!r}: cannot resolve type hints: {e}") from None
    props: dict[str, Any] = {}
    required: list[str] = []
    for p in inspect.signature(fn).parameters.values():
        where = f"tool {tool_name!r} parameter {p.name!r}"
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ValueError(f"{where}: *args/**kwargs cannot be described by a schema")
        if p.name not in hints:
            raise ValueError(f"{where} has no type hint")
        props[p.name] = _schema_of(hints[p.name], where)
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    doc = description if description is not None else (inspect.getdoc(fn) or "").split("\n")[0]
    params = {"type": "object", "properties": props, "required": required}
    return Tool(name=tool_name, description=doc.strip(), parameters=params, fn=fn)


def describe_tools(tools: Iterable[Tool]) -> str:
    """A system-prompt text that lists the tools (one JSON spec per line) and the call format."""
    specs = "\n".join(json.dumps(t.spec()) for t in tools)
    return (
        "You may call these tools:\n"
        f"{specs}\n"
        'Call one as <tool_call>{"name": ..., "arguments": {...}}</tool_call>; '
        "its result comes back as <tool_response>...</tool_response>."
    )


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    kinds = schema.get("type")
    if kinds is None:
        return True
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "null" and value is None:
            return True
        if kind == "boolean" and isinstance(value, bool):
            return True
        if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if kind == "string" and isinstance(value, str):
            return True
        if kind == "array" and isinstance(value, list):
            items = schema.get("items")
            return items is None or all(_type_ok(v, items) for v in value)
    return False


def call_tool(
    tools: Mapping[str, Tool] | Iterable[Tool], name: str, arguments: Mapping[str, Any]
) -> ToolResult:
    """Check ``arguments`` against the tool's schema and call it. Never raises for a bad call or a
    failing tool: the failure comes back as ``ToolResult("error: ...", ok=False)``."""
    table = tools if isinstance(tools, Mapping) else {t.name: t for t in tools}
    tool = table.get(name)
    if tool is None:
        return ToolResult(f"error: unknown tool {name!r}; tools: {', '.join(sorted(table))}", False)
    props = tool.parameters.get("properties", {})
    missing = [k for k in tool.parameters.get("required", []) if k not in arguments]
    if missing:
        return ToolResult(f"error: {name}: missing argument {missing[0]!r}", False)
    for k, v in arguments.items():
        if k not in props:
            return ToolResult(f"error: {name}: unknown argument {k!r}", False)
        if not _type_ok(v, props[k]):
            return ToolResult(f"error: {name}: argument {k!r} must be {props[k]['type']}", False)
    try:
        out = tool.fn(**arguments)
    except ToolError as e:
        return ToolResult(f"error: {e}", False)
    except Exception as e:  # a user tool's bug is the model's failed call, not the run's
        return ToolResult(f"error: {type(e).__name__}: {e}", False)
    return ToolResult(str(out), True)


# ------------------------------------------------------------------------------------ calculator

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPR_CHARS = 200
_MAX_EXPONENT = 100  # |b| of a ** b
_MAX_ABS = 10**100  # every intermediate result


def _number(x: Any) -> int | float:
    if isinstance(x, float) and not math.isfinite(x):
        raise ToolError("result is not a finite number")
    if abs(x) > _MAX_ABS:
        raise ToolError("result too large")
    return x


def _eval_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _number(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _number(_UNARY[type(node.op)](_eval_node(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(b) > _MAX_EXPONENT:
                raise ToolError(f"exponent {b} too large (limit {_MAX_EXPONENT})")
            if a != 0 and abs(b) * math.log10(abs(a)) > 100:
                raise ToolError("result too large")
        try:
            out = _BIN[type(node.op)](a, b)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
        if isinstance(out, complex):
            raise ToolError("result is not a real number")
        return _number(out)
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "function call"
    elif isinstance(node, ast.Constant):
        what = f"constant {node.value!r}"
    raise ToolError(f"not allowed in an arithmetic expression: {what}")


def _fmt(x: int | float) -> str:
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.12g}"
    return str(x)


def _calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses."""
    if len(expression) > _MAX_EXPR_CHARS:
        raise ToolError(f"expression longer than {_MAX_EXPR_CHARS} characters")
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: an error here
            warnings.simplefilter("ignore")
            tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse {expression!r} as arithmetic") from None
    return _fmt(_eval_node(tree.body))


def calculate(expression: str) -> str:
    """The calculator's answer as text: the value, or ``error: ...`` (never raises).

    Safe evaluation by walking the ``ast``: only int/float literals, unary +/-, and the binary
    operators + - * / // % **; names, calls, attributes and every other node are refused. Limits:
    200 characters, |exponent| <= 100, every intermediate |value| <= 1e100 (checked before a power is
    computed). Integral float results print as integers (``10/4*2`` -> ``5``), others with 12
    significant digits.
    """
    try:
        return _calculator(expression)
    except ToolError as e:
        return f"error: {e}"
    except RecursionError:
        return "error: expression too deeply nested"


CALCULATOR = tool_from_function(_calculator, name="calculator")


# ------------------------------------------------------------------------------------ python

_PY_TIMEOUT = 5.0
_PY_MAX_CHARS = 2000  # of the output the model sees


def run_python_tool(code: str) -> str:
    """Run a Python program in the sandbox and return what it printed."""
    from rlvr.rewards.sandbox import run_python

    res = run_python(code, timeout=_PY_TIMEOUT)
    if res.ok:
        return res.stdout[:_PY_MAX_CHARS]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    why = lines[-1] if lines else res.reason or res.status
    raise ToolError(why[:_PY_MAX_CHARS])


PYTHON = tool_from_function(run_python_tool, name="python")

BUILTIN_TOOLS: dict[str, Tool] = {"calculator": CALCULATOR, "python": PYTHON}
