"""Generate examples/data/arithmetic.jsonl: 200 short arithmetic problems for the ``math`` reward.

Every answer fits in a few tokens, so the tiny model could conceivably produce it. Seven kinds of
problem, drawn without repetition by a seeded ``random.Random`` (the output is the same on every run):

=====================================  ==============================  =====
prompt                                 answer                          rows
=====================================  ==============================  =====
``3 + 4 =`` (one-digit sum)            ``7``                           40
``2 - 9 =`` (one-digit difference)     ``-7``                          25
``6 * 7 =`` (one-digit product)        ``42``                          25
``What is 3/8 + 1/8?``                 ``\\frac{1}{2}`` (or ``1``)     30
``Simplify 6/8``                       ``\\frac{3}{4}``                30
``What is 0.5 + 0.25?``                ``0.75``                        30
``Write 3/8 as a decimal.``            ``0.375``                       20
=====================================  ==============================  =====

Fractions are in lowest terms, written ``\\frac{a}{b}``; decimals have no trailing zeros. Rows are
``{"prompt": ..., "answer": ..., "id": "arith-0001"}`` in a seeded shuffled order.

Usage: ``python examples/make_arithmetic.py [--out PATH] [--check]`` (``--check`` exits 1 when the
file differs from what this script makes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

OUT = Path(__file__).parent / "data" / "arithmetic.jsonl"
COUNTS = {"sum": 40, "difference": 25, "product": 25, "fraction_sum": 30, "simplify": 30,
          "decimal_sum": 30, "to_decimal": 20}  # fmt: skip


def latex_fraction(x: Fraction) -> str:
    """``7``, ``-2`` or ``\\frac{3}{4}`` / ``-\\frac{1}{2}`` for a rational number."""
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


def plain_decimal(x: Decimal) -> str:
    """A decimal without exponent or trailing zeros: ``0.75``, ``1``, ``12.5``."""
    text = format(x, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def candidates() -> dict[str, list[tuple[str, str]]]:
    """Every possible (prompt, answer) of each kind, in a fixed order."""
    digits = range(10)
    proper = [
        Fraction(p, q) for q in range(2, 10) for p in range(1, q) if Fraction(p, q).denominator == q
    ]
    decimals = [Decimal(s) for s in ("0.1", "0.2", "0.25", "0.3", "0.4", "0.5", "0.6", "0.7", "0.75",
                                     "0.8", "0.9", "1.5", "2.5", "0.05")]  # fmt: skip
    terminating = [Fraction(p, q) for q in (2, 4, 5, 8, 10, 20, 25) for p in range(1, q)
                   if Fraction(p, q).denominator == q]  # fmt: skip
    return {
        "sum": [(f"{a} + {b} =", str(a + b)) for a in digits for b in digits],
        "difference": [(f"{a} - {b} =", str(a - b)) for a in digits for b in digits],
        "product": [(f"{a} * {b} =", str(a * b)) for a in range(2, 10) for b in range(2, 10)],
        "fraction_sum": [
            (f"What is {a}/{q} + {b}/{q}?", latex_fraction(Fraction(a + b, q)))
            for q in range(2, 10)
            for a in range(1, q)
            for b in range(1, q)
            if a <= b
        ],
        "simplify": [
            (f"Simplify {k * x.numerator}/{k * x.denominator}", latex_fraction(x))
            for x in proper
            for k in (2, 3, 4)
        ],
        "decimal_sum": [
            (f"What is {a} + {b}?", plain_decimal(a + b))
            for i, a in enumerate(decimals)
            for b in decimals[i + 1 :]
        ],
        "to_decimal": [
            (
                f"Write {x.numerator}/{x.denominator} as a decimal.",
                plain_decimal(Decimal(x.numerator) / Decimal(x.denominator)),
            )
            for x in terminating
        ],
    }


def make_rows(seed: int = 0) -> list[dict[str, str]]:
    """The data set: ``COUNTS[kind]`` distinct problems of each kind, shuffled, with ids."""
    rng = random.Random(seed)
    pool = candidates()
    picked: list[tuple[str, str]] = []
    for kind, n in COUNTS.items():
        if len(pool[kind]) < n:
            raise ValueError(f"kind {kind!r}: {len(pool[kind])} candidates, {n} wanted")
        picked += rng.sample(pool[kind], n)
    rng.shuffle(picked)
    return [{"prompt": p, "answer": a, "id": f"arith-{i:04d}"} for i, (p, a) in enumerate(picked, 1)]


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = ap.parse_args(argv)
    text = render(make_rows())
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {text.count(chr(10))} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
