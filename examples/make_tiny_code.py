"""Write examples/data/tiny_code.jsonl: short HumanEval-style problems for the code reward.

Each row asks for a one-line Python function body; the `code` reward prepends `code_prompt` (the
function header) when the completion does not define the function itself, and runs `tests` (assert
statements) in the sandbox. The prompts are short enough for the embedded tiny model's context, so
a run is an end-to-end check of the code path, not a benchmark.

    python examples/make_tiny_code.py          # rewrite the file
    python examples/make_tiny_code.py --check  # exit 1 if the file differs from what this writes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "tiny_code.jsonl"


def rows() -> list[dict]:
    out: list[dict] = []

    def add(name: str, args: str, doc: str, body: str, cases: list[tuple[str, str]]) -> None:
        header = f"def {name}({args}):\n    return"
        out.append(
            {
                "id": f"tiny-code-{len(out) + 1:03d}",
                "prompt": f"{doc}\n{header}",
                "answer": body,  # a reference body (not used by the reward)
                "entry_point": name,
                "code_prompt": header,
                "tests": [f"assert {name}({a}) == {b}" for a, b in cases],
            }
        )

    for k in range(1, 10):
        add(
            f"add{k}",
            "x",
            f"Return x plus {k}.",
            f" x + {k}",
            [(str(x), str(x + k)) for x in (0, 2, -5)],
        )
        add(
            f"sub{k}",
            "x",
            f"Return x minus {k}.",
            f" x - {k}",
            [(str(x), str(x - k)) for x in (0, 7, -1)],
        )
        add(
            f"mul{k}",
            "x",
            f"Return x times {k}.",
            f" x * {k}",
            [(str(x), str(x * k)) for x in (0, 3, -2)],
        )
    add("double", "x", "Return twice x.", " 2 * x", [("0", "0"), ("4", "8"), ("-3", "-6")])
    add("square", "x", "Return x squared.", " x * x", [("0", "0"), ("3", "9"), ("-4", "16")])
    add("negate", "x", "Return minus x.", " -x", [("0", "0"), ("5", "-5"), ("-2", "2")])
    add("biggest", "a, b", "Return the larger of a and b.", " max(a, b)", [("1, 2", "2"), ("5, 3", "5")])
    add(
        "smallest",
        "a, b",
        "Return the smaller of a and b.",
        " min(a, b)",
        [("1, 2", "1"), ("5, 3", "3")],
    )
    add("total", "a, b", "Return a plus b.", " a + b", [("1, 2", "3"), ("-5, 3", "-2")])
    add("is_even", "x", "Return True if x is even.", " x % 2 == 0", [("2", "True"), ("3", "False")])
    add("absolute", "x", "Return the absolute value of x.", " abs(x)", [("-3", "3"), ("4", "4")])
    return out


def main() -> int:
    text = "".join(json.dumps(r) + "\n" for r in rows())
    if "--check" in sys.argv:
        return 0 if OUT.read_text() == text else 1
    OUT.write_text(text)
    print(f"wrote {len(rows())} rows to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
