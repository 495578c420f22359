"""Worked solutions of reasoning-gym problems: procedural solvers that write the steps, not only the
answer, for supervised warm starts (``rlvr sft``).

A solver is registered in :data:`SOLVERS` under the reasoning-gym task it solves::

    fn(problem: Problem) -> str | None

It reads the task's own metadata (``problem.meta``: the expression of ``chain_sum``, the numbers and
target of ``countdown``, ...) and returns the assistant's text: one step per line, then the answer in
the project's format, ``<answer>...</answer>`` (:func:`rlvr.rewards.verifiers.extract_answer`), or
None when it finds no solution (a ``countdown`` search that runs out of budget).

Every line that states arithmetic is an equation ``lhs = rhs`` whose two sides are plain arithmetic
(numbers, ``+ - * / ×`` and parentheses), so the ``arith_steps`` process reward (one step per line,
``rlvr.rewards.steps``) can check each of them; words on a line never touch an ``=``.

Registered: ``chain_sum`` (running partial results, left to right), ``basic_arithmetic`` (one
reduction per line in the order of operations), ``countdown`` (a depth-first search trace: the
branches tried, their dead ends, the expression found), ``gcd`` and ``lcm`` (Euclid's divisions),
``prime_factorization`` (trial division) and ``simple_equations`` (collect, subtract, divide).
:func:`solve` dispatches on ``meta["source_dataset"]``, so mixtures work too.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from rlvr.data.tasks import Problem
from rlvr.registry import Registry

__all__ = ["SOLVERS", "solve"]

SOLVERS = Registry("solver")
"""reasoning-gym task name -> ``fn(problem) -> str | None`` (worked steps, then the answer)."""

Solver = Callable[[Problem], "str | None"]


def _finish(steps: list[str], answer: str) -> str:
    return "\n".join([*steps, f"<answer>{answer}</answer>"])


def _num(x: Fraction | int) -> str:
    """A number as arithmetic text: an integer as digits, any other fraction as ``(p/q)``."""
    x = Fraction(x)
    return str(x.numerator) if x.denominator == 1 else f"({x.numerator}/{x.denominator})"


def solve(problem: Problem) -> str | None:
    """The worked solution of ``problem`` by the solver of its task (``meta["source_dataset"]``);
    None when no solver is registered for the task or the solver finds no solution."""
    name = problem.meta.get("source_dataset")
    return SOLVERS[name](problem) if name in SOLVERS else None


# --------------------------------------------------------------------- expressions, order of operations


@dataclass(frozen=True)
class _Expr:
    """An arithmetic expression tree: a number (``op`` = ''), a negation (``op`` = 'neg', ``left``),
    or a binary operation (``op`` in + - * /, ``left``, ``right``)."""

    op: str
    value: Fraction = Fraction(0)
    left: _Expr | None = None
    right: _Expr | None = None


_FRACTION = re.compile(r"\(-?\d+/\d+\)")  # how _num writes a number that is not an integer
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _parse(text: str) -> _Expr:
    """The tree of an arithmetic expression (Python syntax; ``×`` and ``÷`` allowed)."""

    def build(node: ast.AST) -> _Expr:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return _Expr("", Fraction(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = build(node.operand)
            if isinstance(node.op, ast.UAdd):
                return inner
            return _Expr("", -inner.value) if inner.op == "" else _Expr("neg", left=inner)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            return _Expr(_AST_OPS[type(node.op)], left=build(node.left), right=build(node.right))
        raise ValueError(f"not arithmetic: {ast.dump(node)}")

    return build(ast.parse(text.replace("×", "*").replace("÷", "/"), mode="eval").body)


def _show(e: _Expr) -> str:
    """Text of a tree with the parentheses the order of operations needs (a negation is ``-(...)``)."""
    if e.op == "":
        return _num(e.value)
    if e.op == "neg":
        return f"-({_show(e.left)})"  # type: ignore[arg-type]
    left, right = e.left, e.right
    assert left is not None and right is not None
    lt, rt = _show(left), _show(right)
    if left.op in _PREC and _PREC[left.op] < _PREC[e.op]:
        lt = f"({lt})"
    if right.op in _PREC and _PREC[right.op] <= _PREC[e.op]:
        rt = f"({rt})"
    return f"{lt} {e.op} {rt}"


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b if op == "*" else a / b


def _reduce_once(e: _Expr) -> _Expr:
    """``e`` with its first ready operation done: the leftmost node whose operands are numbers
    (post-order, so inner parentheses and * / before + - come first)."""
    if e.op == "neg":
        assert e.left is not None
        inner = e.left
        return _Expr("", -inner.value) if inner.op == "" else _Expr("neg", left=_reduce_once(inner))
    assert e.left is not None and e.right is not None
    if e.left.op == "" and e.right.op == "":
        if e.op == "/" and e.right.value == 0:
            raise ZeroDivisionError(_show(e))
        return _Expr("", _apply(e.op, e.left.value, e.right.value))
    if e.left.op != "":
        return _Expr(e.op, left=_reduce_once(e.left), right=e.right)
    return _Expr(e.op, left=e.left, right=_reduce_once(e.right))


def _reduction_steps(expr: str) -> tuple[list[str], Fraction]:
    """Lines ``before = after``, one operation each, and the value of ``expr``."""
    e = _parse(expr)
    steps = []
    while e.op != "":
        nxt = _reduce_once(e)
        steps.append(f"{_show(e)} = {_show(nxt)}")
        e = nxt
    return steps, e.value


@SOLVERS.register("chain_sum")
def chain_sum(problem: Problem) -> str | None:
    """Running partial results, left to right: ``4 - 1 - 7`` gives ``4 - 1 = 3``, ``3 - 7 = -4``."""
    expr = problem.meta.get("expression")
    if not expr:
        return None
    e = _parse(expr)
    chain: list[tuple[str, _Expr]] = []  # the terms after the first, with their operator
    while e.op in ("+", "-"):
        assert e.left is not None and e.right is not None
        chain.append((e.op, e.right))
        e = e.left
    if e.op != "" or any(t.op != "" for _, t in chain):
        return None  # not a flat chain of numbers
    total, steps = e.value, []
    for op, term in reversed(chain):
        new = _apply(op, total, term.value)
        steps.append(f"{_num(total)} {op} {_num(term.value)} = {_num(new)}")
        total = new
    return _finish(steps, _num(total))


@SOLVERS.register("basic_arithmetic")
def basic_arithmetic(problem: Problem) -> str | None:
    """One operation per line in the order of operations, each line ``whole before = whole after``:
    ``5 - 3 * 2 = 5 - 6``, ``5 - 6 = -1``. None when a division is not exact: the task's answer is
    computed with floor division (``//``), which an ``arith_steps`` line (true division) cannot state."""
    expr = problem.meta.get("expression")
    if not expr:
        return None
    try:
        steps, value = _reduction_steps(expr)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return None
    if value.denominator != 1 or any(_FRACTION.search(line) for line in steps):
        return None  # a fraction on the way: floor division would give another answer
    return _finish(steps, str(value.numerator))


# --------------------------------------------------------------------- countdown: a search trace


def _combine(a: tuple[int, str, int], b: tuple[int, str, int]) -> list[tuple[int, str, int, str]]:
    """Every integer, positive result of one operation on two (value, text, precedence) items:
    (value, text, precedence, the step written ``x op y = z``)."""
    (va, ta, pa), (vb, tb, pb) = (a, b) if a[0] >= b[0] else (b, a)
    out = []

    def text(op: str) -> str:
        prec = _PREC[op]
        left = ta if pa >= prec else f"({ta})"
        right = tb if pb > prec or (pb == prec and op in "+*") else f"({tb})"
        return (
            f"{left} {op} {right}"
            if prec == 1
            else f"{left}*{right}"
            if op == "*"
            else f"{left}/{right}"
        )

    out.append((va + vb, text("+"), 1, f"{va} + {vb} = {va + vb}"))
    if va * vb != va + vb or va == 1 or vb == 1:
        out.append((va * vb, text("*"), 2, f"{va} * {vb} = {va * vb}"))
    if va > vb:
        out.append((va - vb, text("-"), 1, f"{va} - {vb} = {va - vb}"))
    if vb > 1 and va % vb == 0:
        out.append((va // vb, text("/"), 2, f"{va} / {vb} = {va // vb}"))
    return out


@SOLVERS.register("countdown")
def countdown(problem: Problem, *, budget: int = 200_000, shown: int = 4) -> str | None:
    """A depth-first search for an expression of all the numbers that makes the target.

    Each step combines two of the remaining numbers (+, -, * and exact /, results kept positive),
    the pairs that land nearest the target first. The trace shows the first ``shown`` branches that
    used every number and missed (``..., 309 - 6 = 303, not 309: dead end``), a count of the other
    dead ends, then the branch that hits, its operations one per line, and the expression as the
    answer. None when ``budget`` combinations find nothing (intermediate fractions are not tried).
    """
    numbers, target = problem.meta.get("numbers"), problem.meta.get("target")
    if not numbers or target is None:
        return None
    target = int(target)
    dead: list[str] = []
    misses = 0
    nodes = 0

    def search(items: list[tuple[int, str, int]], path: list[str]) -> list[str] | None:
        nonlocal misses, nodes
        if len(items) == 1:
            if items[0][0] == target:
                return path
            misses += 1
            if len(dead) < shown:
                dead.append(", ".join(path) + f", not {target}: dead end")
            return None
        moves = []
        for i, j in itertools.combinations(range(len(items)), 2):
            rest = [it for k, it in enumerate(items) if k not in (i, j)]
            for value, txt, prec, step in _combine(items[i], items[j]):
                moves.append((abs(value - target), value, txt, prec, step, rest))
        moves.sort(key=lambda m: m[0])
        for _, value, txt, prec, step, rest in moves:
            nodes += 1
            if nodes > budget:
                return None
            found = search([*rest, (value, txt, prec)], [*path, step])
            if found is not None:
                found_items.append((value, txt))
                return found
        return None

    found_items: list[tuple[int, str]] = []
    start = [(int(n), str(int(n)), 3) for n in numbers]
    path = search(start, [])
    if path is None:
        return None
    expression = found_items[0][1]
    head = [f"Search for {target} with {', '.join(str(n) for n in numbers)}, nearest first."]
    tries = [f"Try: {line}" for line in dead]
    if misses > len(dead):
        tries.append(f"... {misses - len(dead)} more dead ends ...")
    return _finish([*head, *tries, "Found:", *path, f"{expression} = {target}"], expression)


# --------------------------------------------------------------------- number theory


def _euclid(a: int, b: int) -> tuple[list[str], int]:
    """Euclid's divisions ``a = q × b + r`` down to remainder 0, and gcd(a, b)."""
    a, b = max(abs(a), abs(b)), min(abs(a), abs(b))
    steps = []
    while b:
        q, r = divmod(a, b)
        steps.append(f"{a} = {q} × {b} + {r}")
        a, b = b, r
    return steps, a


@SOLVERS.register("gcd")
def gcd(problem: Problem) -> str | None:
    """Euclid's algorithm, one division per line (``780 = 1 × 461 + 319``), folded over the numbers;
    the last nonzero remainder is the GCD."""
    numbers = [int(n) for n in problem.meta.get("numbers") or []]
    if not numbers:
        return None
    g, steps = numbers[0], []
    for n in numbers[1:]:
        div, g2 = _euclid(g, n)
        steps += [f"GCD of {g} and {n}:", *div, f"The last nonzero remainder is {g2}."]
        g = g2
    return _finish(steps, str(abs(g)))


@SOLVERS.register("lcm")
def lcm(problem: Problem) -> str | None:
    """LCM(a, b) as a × b / GCD(a, b), the GCD by Euclid's divisions, folded over the numbers."""
    numbers = [int(n) for n in problem.meta.get("numbers") or []]
    if not numbers:
        return None
    m, steps = numbers[0], []
    for n in numbers[1:]:
        div, g = _euclid(m, n)
        new = m * n // g
        steps += [f"GCD of {m} and {n}:", *div, f"LCM of {m} and {n} is their product over {g}:"]
        steps.append(f"{m} × {n} / {g} = {new}")
        m = new
    return _finish(steps, str(m))


@SOLVERS.register("prime_factorization")
def prime_factorization(problem: Problem) -> str | None:
    """Trial division by the smallest prime that divides: ``980 = 2 × 490``, ..., ``49 = 7 × 7``."""
    n = problem.meta.get("number")
    if n is None or int(n) < 2:
        return None
    n, factors, steps, p = int(n), [], [], 2
    while p * p <= n:
        if n % p == 0:
            steps.append(f"{n} = {p} × {n // p}")
            factors.append(p)
            n //= p
        else:
            p += 1
    factors.append(n)
    steps.append(f"{n} is prime.")
    return _finish(steps, " × ".join(str(f) for f in factors))


@SOLVERS.register("simple_equations")
def simple_equations(problem: Problem) -> str | None:
    """A linear equation a·v + b = c·v + d solved in three moves, each number computed on a line of
    its own: the v terms to the left and the numbers to the right, then a division."""
    import sympy

    eq, var = problem.meta.get("equation"), problem.meta.get("variable")
    if not eq or not var or eq.count("=") != 1:
        return None
    v = sympy.Symbol(var)
    try:
        lhs, rhs = (sympy.sympify(side, locals={var: v}) for side in eq.split("="))
        left, right = sympy.Poly(sympy.expand(lhs), v), sympy.Poly(sympy.expand(rhs), v)
    except (sympy.SympifyError, sympy.PolynomialError, TypeError):
        return None
    if left.degree() > 1 or right.degree() > 1:
        return None
    a1, b1 = (Fraction(str(left.coeff_monomial(t))) for t in (v, 1))
    a2, b2 = (Fraction(str(right.coeff_monomial(t))) for t in (v, 1))
    a, d = a1 - a2, b2 - b1
    if a == 0:
        return None
    # the equation in words: "196*p - 2352 = 1372" would read as the false "-2352 = 1372" to arith_steps
    steps = [f"Solve: {eq.split('=')[0].strip()} equals {eq.split('=')[1].strip()}"]
    coef = _num(a1)
    if a2:
        steps += [f"Collect the {var} terms on the left:", f"{_num(a1)} - {_num(a2)} = {_num(a)}"]
        coef = _num(a)
    if b1:
        steps += [
            f"Move the number {_num(b1)} to the right side: {coef}*{var} is {_num(b2)} - {_num(b1)}"
        ]
        steps.append(f"{_num(b2)} - {_num(b1)} = {_num(d)}")
    steps += [f"Divide both sides by {_num(a)}:", f"{_num(d)} / {_num(a)} = {_num(d / a)}"]
    x = d / a
    return _finish(steps, _num(x) if x.denominator == 1 else str(float(x)))
