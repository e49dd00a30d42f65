"""FDD prompt kinds for the reference teacher, so the whole feedback loop runs offline (issue 7, item 5).

Added through ``build_teacher(..., kinds=fdd_kinds(...))``; nothing in reference.py changes.

- ``fdd_variant_v1``: the easy / hard prompts of ``method`` (methods.md 4.2 wording, any template
  with one ``{question}``). Easy -> ``embedded.variant(parent, harder=True)`` (one more reasoning step);
  hard -> ``variant(parent, harder=False)`` (same steps, new entities and numbers). The completion is
  the new question only; the teacher remembers the new example (question -> trace) so it can solve it
  when asked next (zero-shot-CoT stages or PoT).
- ``fdd_pot_v1``: ``{question}`` + the PoT suffix -> a fenced Python program computing ``ans`` from the
  trace. Phrasing 0 at T=0, else one of ``diversity`` styles (running total, numbered steps, one
  expression, commented steps). With probability ``error_rate`` the program is wrong: an operand off by
  1..3, a swapped operator, or a crash (``ans`` read from an undefined name), so execution-based
  verification has work. Arithmetic traces only; other tasks get ``I am not sure.``.

Output is a pure function of (prompt, temperature, sample index, teacher identity), like the built-in
kinds. Because of that, a variant the engine serves from the cache can be *replayed* on the teacher to
re-learn its trace (:func:`remember`): a resumed run needs this, since cached prompts never reach the
backend.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from ..benchmarks.embedded import stable_seed, trace_generator, variant
from ..data.formats import POT_SUFFIX
from .base import Request
from .reference import UNSURE, Fields, PromptKind, ReferenceTeacher

N_PROGRAM_STYLES = 4
ERROR_MODES = ("number", "number", "operator", "crash")  # an operand slip is the commonest mistake


def split_template(template: str, key: str = "method") -> tuple[str, str]:
    """(prefix, suffix) around the single ``{question}`` of a prompt template."""
    if template.count("{question}") != 1:
        raise ValueError(f"{key}: a prompt template needs exactly one '{{question}}', got {template!r}")
    head, _, tail = template.partition("{question}")
    return head, tail


def fill(template: str, question: str) -> str:
    """The prompt for ``question`` (plain substitution: templates may contain other braces)."""
    head, tail = split_template(template)
    return f"{head}{question}{tail}"


def variant_kind(easy_prompt: str, hard_prompt: str) -> PromptKind:
    """The kind answering FDD's easy (-> harder variant) and hard (-> similar problem) prompts."""
    templates = [(split_template(easy_prompt), True), (split_template(hard_prompt), False)]
    if templates[0][0] == templates[1][0]:
        raise ValueError("method.easy_prompt and hard_prompt must differ")

    def match(prompt: str) -> Fields | None:
        for (head, tail), harder in templates:
            if prompt.startswith(head) and prompt.endswith(tail) and len(prompt) >= len(head) + len(tail):
                return {"question": prompt[len(head): len(prompt) - len(tail)], "harder": harder}
        return None

    def respond(teacher: ReferenceTeacher, f: Fields, req: Request, rng: random.Random) -> str:
        parent = teacher.lookup(f["question"])
        if parent is None or not parent.meta.get("generator"):
            return UNSURE
        new = variant(parent, harder=f["harder"], seed=rng.randrange(2**31))
        teacher.examples.setdefault(new.question, new)  # so the teacher can solve it when asked
        return new.question

    return PromptKind("fdd_variant_v1", match, respond)


def match_pot(prompt: str) -> Fields | None:
    if prompt.endswith(POT_SUFFIX):
        return {"question": prompt[: -len(POT_SUFFIX)]}
    return None


def respond_pot(teacher: ReferenceTeacher, f: Fields, req: Request, rng: random.Random) -> str:
    ex = teacher.lookup(f["question"])
    if ex is None or not ex.trace or trace_generator(ex.trace) != "arithmetic":
        return UNSURE
    style = rng.randrange(min(teacher.diversity, N_PROGRAM_STYLES)) if req.params.temperature > 0 else 0
    error = rng.choice(ERROR_MODES) if rng.random() < teacher.error_rate else None
    return "```python\n" + arithmetic_program(ex.trace, style, error, rng) + "\n```"


POT_KIND = PromptKind("fdd_pot_v1", match_pot, respond_pot)


def fdd_kinds(easy_prompt: str, hard_prompt: str) -> tuple[PromptKind, ...]:
    return (variant_kind(easy_prompt, hard_prompt), POT_KIND)


def remember(teacher: Any, requests: Sequence[Request]) -> None:
    """Replay variant requests on a reference teacher so it knows the problems it wrote (no-op otherwise).

    Pure and uncached: the cache already holds these completions; the replay only rebuilds the teacher's
    question -> trace memory (a resumed run, or variants the engine served from the cache).
    """
    if isinstance(teacher, ReferenceTeacher) and requests:
        teacher.complete(list(requests))


def reference_answer(teacher: Any, question: str) -> str | None:
    """The embedded solver's answer to ``question`` (verify=reference), None if the teacher never saw it."""
    if not isinstance(teacher, ReferenceTeacher):
        raise ValueError("method.verify=reference needs teacher=reference (the embedded solver)")
    ex = teacher.lookup(question)
    return None if ex is None else ex.answer


# --------------------------------------------------------------------------------------------------------
# Programs from arithmetic traces.


def _identifier(text: str) -> str:
    ident = re.sub(r"\W+", "_", text.strip().lower()).strip("_")
    return ident if ident.isidentifier() else f"n_{ident}"


def _slip(rng: random.Random, value: int, keep_positive: bool) -> int:
    deltas = [d for d in (1, 2, 3, -1, -2, -3) if value + d >= (1 if keep_positive else 0)]
    return value + rng.choice(deltas)


def arithmetic_program(trace: Sequence[dict[str, Any]], style: int = 0, error: str | None = None,
                       rng: random.Random | None = None) -> str:
    """A Python program computing ``ans`` from an arithmetic trace (``error``: None, number, operator, crash).

    style 0: one running variable named after the object (``apples = apples + 3``); 1: ``step1``,
    ``step2``, ...; 2: a single expression; 3: a running ``total`` with the question's wording as comments.
    """
    if not 0 <= style < N_PROGRAM_STYLES:
        raise ValueError(f"style must be in 0..{N_PROGRAM_STYLES - 1}, got {style}")
    if error not in (None, "number", "operator", "crash"):
        raise ValueError(f"unknown program error {error!r}")
    rng = rng or random.Random(stable_seed("program", list(trace), style, error))
    steps = [dict(s) for s in trace]
    # Operands: ("lit", value) or ("ref", step index); the start step is one literal.
    operands = [[("lit", s["value"])] if s["op"] is None else
                [("lit", a) if r is None else ("ref", r) for a, r in zip(s["args"], s["refs"])]
                for s in steps]
    ops = [s["op"] for s in steps]
    if error == "number":
        spots = [(i, j) for i, ops_i in enumerate(operands) for j, o in enumerate(ops_i) if o[0] == "lit"]
        i, j = rng.choice(spots)
        operands[i][j] = ("lit", _slip(rng, operands[i][j][1], keep_positive=ops[i] == "/" and j == 1))
    elif error == "operator":
        i = rng.choice([k for k, op in enumerate(ops) if op])
        ops[i] = {"+": "-", "-": "+", "*": "+", "/": "*"}[ops[i]]

    obj = _identifier(steps[0]["object"])
    if style in (0, 3):
        running = obj if style == 0 else "total"
        names = [f"new_{obj}" if s["kind"] == "groups" else running for s in steps]
    else:
        names = [f"step{i + 1}" for i in range(len(steps))]

    def expr(i: int, nested: bool) -> str:
        if ops[i] is None:
            return str(operands[i][0][1])
        parts = [str(v) if kind == "lit" else names[v] if not nested else
                 expr(v, True) if ops[v] is None else f"({expr(v, True)})" for kind, v in operands[i]]
        return f" {ops[i]} ".join(parts)

    lines: list[str] = []
    if style == 2:
        result = expr(len(steps) - 1, nested=True)
    else:
        for i, s in enumerate(steps):
            if style == 3 and s.get("present"):
                lines.append(f"# {s['present']}")
            lines.append(f"{names[i]} = {expr(i, nested=False)}")
        result = names[-1]
    lines.append("ans = result" if error == "crash" else f"ans = {result}")  # crash: NameError
    return "\n".join(lines)
