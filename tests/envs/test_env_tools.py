"""Tool calls: parsing, schemas from signatures, argument checks, the calculator and the Python tool."""

from __future__ import annotations

import json

import pytest

from rlvr.envs.tools import (
    BUILTIN_TOOLS,
    CALCULATOR,
    ToolCallError,
    ToolError,
    calculate,
    call_tool,
    describe_tools,
    format_tool_call,
    format_tool_response,
    parse_tool_call,
    parse_tool_calls,
    tool_from_function,
)

# --------------------------------------------------------------------------------------------------
# parsing


def test_parse_a_valid_call_and_round_trip():
    text = (
        'Let me add. <tool_call>{"name": "calculator", "arguments": {"expression": "12+7"}}</tool_call>'
    )
    assert parse_tool_call(text) == ("calculator", {"expression": "12+7"})
    call = format_tool_call("calculator", {"expression": "3 * 4"})
    assert call == '<tool_call>{"name": "calculator", "arguments": {"expression": "3 * 4"}}</tool_call>'
    assert parse_tool_call(call) == ("calculator", {"expression": "3 * 4"})
    # arguments given as a JSON string, and no arguments at all
    inner = json.dumps({"name": "f", "arguments": json.dumps({"x": 1})})
    assert parse_tool_call(f"<tool_call>{inner}</tool_call>") == ("f", {"x": 1})
    assert parse_tool_call('<tool_call>{"name": "f"}</tool_call>') == ("f", {})
    assert format_tool_response("19") == "<tool_response>19</tool_response>"


def test_no_call_is_none_and_the_first_call_wins():
    assert parse_tool_call("just <answer>5</answer>") is None
    assert parse_tool_call("<tool_call>unclosed") is None
    two = format_tool_call("a", {}) + " then " + format_tool_call("b", {"x": 2})
    assert parse_tool_call(two) == ("a", {})
    assert parse_tool_calls(two) == [("a", {}), ("b", {"x": 2})]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"name": "calculator", "arguments": {"expression": "1+1"}', "malformed tool call JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('{"arguments": {}}', 'needs a string "name"'),
        ('{"name": "f", "arguments": [1]}', '"arguments" must be an object'),
        ('{"name": "f", "arguments": "{bad"}', "malformed tool call arguments"),
    ],
)
def test_malformed_calls_raise_a_clear_error(body, why):
    with pytest.raises(ToolCallError, match=why):
        parse_tool_call(f"<tool_call>{body}</tool_call>")
    (err,) = parse_tool_calls(f"<tool_call>{body}</tool_call>")  # returned, not raised
    assert isinstance(err, ToolCallError) and why.split()[0] in str(err)


# --------------------------------------------------------------------------------------------------
# schemas and argument checks


def _user_tool(
    city: str,
    days: int,
    metric: bool = True,
    scale: float = 1.0,
    tags: list[str] | None = None,
    note: str | None = None,
) -> str:
    """Weather forecast for a city.

    Longer text that is not part of the description.
    """
    return f"{city}:{days}:{metric}:{scale}:{tags}:{note}"


def test_schema_derivation_from_a_signature():
    tool = tool_from_function(_user_tool)
    assert tool.name == "_user_tool" and tool.description == "Weather forecast for a city."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "scale": {"type": "number"},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
            "note": {"type": ["string", "null"]},
        },
        "required": ["city", "days"],
    }
    spec = json.loads(describe_tools([tool]).splitlines()[1])
    assert spec == {"name": "_user_tool", "description": tool.description, "parameters": tool.parameters}
    assert "<tool_call>" in describe_tools([tool])


def test_schema_refuses_what_json_cannot_describe():
    def untyped(x):
        return x

    def star(*xs: int) -> int:
        return 0

    def weird(x: dict) -> int:
        return 0

    with pytest.raises(ValueError, match="parameter 'x' has no type hint"):
        tool_from_function(untyped)
    with pytest.raises(ValueError, match=r"\*args"):
        tool_from_function(star)
    with pytest.raises(ValueError, match="unsupported type"):
        tool_from_function(weird)


def test_call_tool_checks_name_and_arguments():
    tools = [tool_from_function(_user_tool, name="weather"), CALCULATOR]
    ok = call_tool(tools, "weather", {"city": "Oslo", "days": 2, "tags": ["a"]})
    assert ok.ok and ok.text == "Oslo:2:True:1.0:['a']:None"
    assert call_tool(tools, "weather", {"city": "Oslo", "days": 2, "scale": 3}).ok  # int is a number
    bad = [
        ("nope", {}, "unknown tool 'nope'; tools: calculator, weather"),
        ("weather", {"city": "Oslo"}, "missing argument 'days'"),
        ("weather", {"city": "Oslo", "days": 1, "x": 0}, "unknown argument 'x'"),
        ("weather", {"city": "Oslo", "days": "2"}, "argument 'days' must be integer"),
        ("weather", {"city": "Oslo", "days": True}, "argument 'days' must be integer"),
        ("weather", {"city": "Oslo", "days": 1, "tags": [1]}, "argument 'tags'"),
    ]
    for name, args, why in bad:
        res = call_tool(tools, name, args)
        assert not res.ok and res.text.startswith("error: ") and why in res.text, res.text


def test_a_failing_tool_is_an_error_result_not_an_exception():
    def boom(x: int) -> int:
        """Fails."""
        raise ZeroDivisionError("nope")

    def refuse(x: int) -> int:
        """Refuses."""
        raise ToolError("x too big")

    tools = [tool_from_function(boom), tool_from_function(refuse)]
    assert call_tool(tools, "boom", {"x": 1}).text == "error: ZeroDivisionError: nope"
    assert call_tool(tools, "refuse", {"x": 1}).text == "error: x too big"


# --------------------------------------------------------------------------------------------------
# the calculator


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("12+7", "19"),
        ("22 + 57 - 58", "21"),
        ("-(3 - 10) * 2", "14"),
        ("7 // 2 + 7 % 2", "4"),
        ("2 ** 10", "1024"),
        ("10 / 4 * 2", "5"),
        ("7 / 3", "2.33333333333"),
        ("1.5 + 1", "2.5"),
        ("2 ** -1", "0.5"),
    ],
)
def test_calculator_values(expr, value):
    assert calculate(expr) == value
    assert call_tool([CALCULATOR], "calculator", {"expression": expr}).text == value


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("__import__('os').system('echo hi')", "function call"),
        ("x + 1", "name 'x'"),
        ("(1).__class__", "Attribute"),
        ("'a' * 3", "constant 'a'"),
        ("True + 1", "constant True"),
        ("[1, 2]", "List"),
        ("2 ** 1000", "exponent 1000 too large"),
        ("10 ** 99 * 10 ** 99", "result too large"),
        ("99 ** 99", "result too large"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "cannot parse"),
        ("1" * 201, "longer than 200"),
        ("1e308 * 10", "result too large"),
    ],
)
def test_calculator_refuses_unsafe_or_huge_expressions(expr, why):
    out = calculate(expr)
    assert out.startswith("error: ") and why in out, out
    res = call_tool([CALCULATOR], "calculator", {"expression": expr})
    assert not res.ok and res.text == out


def test_calculator_nesting_is_bounded():
    assert calculate("(" * 5000 + "1" + ")" * 5000).startswith("error: ")


# --------------------------------------------------------------------------------------------------
# the Python tool (through the sandbox)


def test_python_tool_runs_in_the_sandbox():
    py = BUILTIN_TOOLS["python"]
    assert py.parameters["required"] == ["code"]
    res = call_tool([py], "python", {"code": "print(sum(range(10)))\nraise SystemExit(3)"})
    assert not res.ok and res.text.startswith("error: ")  # non-zero exit is a failed call
    res = call_tool([py], "python", {"code": "print(6 * 7)"})
    assert res.ok and res.text == "42\n"
