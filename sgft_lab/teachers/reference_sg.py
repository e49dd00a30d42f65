"""SGFT prompt kinds for the reference teacher: the offline teacher's Solution Guidance writer (methods.md 3).

Next to reference_fdd.py; added through ``build_teacher(..., kinds=...)``. Our choice throughout
(experiments/sgft/README.md): embedded tasks from the solution trace (arithmetic: the operation of each step,
never a number; coin flip / last letters: the person / word to check, grouped to at most 6 steps); GSM8K-style
solutions with every result removed (operators written as words, numbers not in the question replaced by
"the earlier result"); StrategyQA from its decomposition when the data has one, else one step per fact.
CommonsenseQA has neither a trace nor a rationale: the reference teacher answers its SG prompts "I am not
sure." (every question dropped), so SGFT on it needs a real teacher (conf/experiment/sgft/commonsense_qa.yaml).

It also writes the embedded response model's pre-training targets (``guided_solution``, ``worked_solution``):
the same plan's work, step by step.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ..benchmarks.record import Example
from ..guidance import ANSWER_PREFIX, FilterRules, format_steps, split_sg_prompt
from .reference import UNSURE, PromptKind

_NUM = re.compile(r"\$?\d[\d,]*(?:\.\d+)?%?")
_OPERATOR_WORDS = (  # operators between operands, written as words
    (re.compile(r"(?<=[\w)])\s*\*\s*(?=[\w($])"), "times"),
    (re.compile(r"(?<=\d)\s*x\s*(?=\d)"), "times"),
    (re.compile(r"(?<=[\w)])\s*/\s*(?=[\w($])"), "divided by"),
    (re.compile(r"(?<=[\w)])\s*\+\s*(?=[\w($])"), "plus"),
    (re.compile(r"(?<=[\w)])\s+-\s+(?=[\w($])"), "minus"),
)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _group(items: list[tuple[str, list[int]]], limit: int, join) -> list[tuple[str, list[int]]]:
    """Merge consecutive items into at most ``limit`` groups (sizes as even as possible)."""
    if len(items) <= limit:
        return items
    out, start = [], 0
    for g in range(limit):
        size = len(items) // limit + (1 if g < len(items) % limit else 0)
        chunk = items[start:start + size]
        start += size
        out.append((join([t for t, _ in chunk]), [i for _, idx in chunk for i in idx]))
    return out


# Arithmetic SG names the operation of each step, never a number, name or object (our choice: the
# tiny CPU guide learns this mapping from a few hundred examples; copying names is what it learns slowest).
_ARITH_STEPS = {
    "start": "Note the starting amount.",
    "start_groups": "Multiply the number of groups by the amount in each.",
    "add": "Add the amount gained.",
    "sub": "Subtract the amount lost.",
    "groups": "Multiply the number of groups by the amount in each, then add it.",
    "share": "Divide the total into equal shares.",
}


def _arith_plan(trace: list[dict]) -> list[tuple[str, str]]:
    """(SG step, worked step) per plan item; the worked step is its equation(s), e.g. ``13 + 17 = 30.``"""
    values = [s["result"] for s in trace]  # integers: the generator keeps every value whole
    plan: list[tuple[str, str]] = []
    for s in trace:
        if s["op"] is None:
            work = f"{s['value']}."
        else:
            a, b = (values[r] if r is not None else x for x, r in zip(s["args"], s["refs"]))
            work = f"{a} {s['op']} {b} = {s['result']}."
        if s["kind"] == "add_groups":  # the add that completes a "groups" step belongs to it
            plan[-1] = (plan[-1][0], f"{plan[-1][1]} {work}")
        elif s["kind"] in _ARITH_STEPS:
            plan.append((_ARITH_STEPS[s["kind"]], work))
        else:
            raise ValueError(f"unknown arithmetic step kind {s['kind']!r}")
    return plan


def embedded_guidance_plan(example: Example, max_steps: int = 6) -> list[tuple[str, str]]:
    """(SG step, worked step) pairs of an embedded example. Arithmetic: the operation to do / its equation.
    Coin flip and last letters: what to check per person / word (at most ``max_steps`` steps, people or
    words grouped when there are more) / the phrasing-0 rationale sentences of
    ``embedded.rationale_sentences`` that do it (its closing sentence joins the last step)."""
    from ..benchmarks.embedded import rationale_sentences, trace_generator

    trace = list(example.trace or [])
    gen = trace_generator(trace)
    if gen == "arithmetic":
        return _arith_plan(trace)
    sentences, _ = rationale_sentences(example, 0)
    items: list[tuple[str, list[int]]]
    if gen == "coin_flip":
        people = [(f"Check whether {s['name']} flips the coin.", [i + 1]) for i, s in enumerate(trace)]
        people = _group(people, max(1, max_steps - 2),
                        lambda ts: "Check whether " + _and([t[len("Check whether "):-len(" flips the coin.")]
                                                            for t in ts]) + " flip the coin.")
        items = [("Note that the coin starts heads up.", [0]), *people,
                 ("Count the flips: after an even number the coin is still heads up.", [])]
    else:  # last_letters
        words = [(f'Find the last letter of "{s["word"]}".', [i]) for i, s in enumerate(trace)]
        words = _group(words, max(1, max_steps - 1),
                       lambda ts: "Find the last letters of " + _and([t[len("Find the last letter of "):-1]
                                                                      for t in ts]) + ".")
        items = [*words, ("Join the letters in order.", [])]
    items[-1] = (items[-1][0], [*items[-1][1], len(sentences) - 1])
    return [(t, " ".join(sentences[i] for i in idx)) for t, idx in items]


def guided_solution(example: Example) -> str:
    """What the embedded response model learns to write after ``Answer:`` (its pre-training target): one
    ``Step k:`` line per reference SG step doing that step's work, then ``The answer is {answer}.``"""
    lines = [f"Step {k}: {work}" for k, (_, work) in enumerate(embedded_guidance_plan(example), 1)]
    return " " + "\n".join(lines) + f"\n{ANSWER_PREFIX} {example.answer.strip()}."


def worked_solution(example: Example) -> str:
    """The same work without guidance: the embedded response model's zero-shot-CoT stage-1 target."""
    return " " + " ".join(work for _, work in embedded_guidance_plan(example))


def _solution_steps(example: Example) -> list[str]:
    """GSM8K-style solution lines with every computed value removed (our choice, see the module docstring)."""
    question_numbers = {n.strip("$%").replace(",", "") for n in _NUM.findall(example.question)}
    steps = []
    for line in (example.rationale or "").splitlines():
        line = re.sub(r"<<[^>]*>>", "", line)
        line = re.sub(r"\s*=\s*" + _NUM.pattern, "", line)  # "= 36": a result

        def swap(m: re.Match) -> str:
            given = m.group(0).strip("$%").replace(",", "") in question_numbers
            return m.group(0) if given else "the earlier result"

        line = _NUM.sub(swap, line)
        for pattern, word in _OPERATOR_WORDS:
            line = pattern.sub(f" {word} ", line)
        line = re.sub(r"\s+", " ", line).strip()
        if re.search(r"[A-Za-z]", line):
            steps.append(line)
    return steps


def _strategy_steps(example: Example) -> list[str]:
    decomposition = example.meta.get("decomposition")
    if decomposition:
        return [str(q).strip() for q in decomposition if str(q).strip()]
    facts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", example.rationale or "") if s.strip()]
    steps = [f"Recall that {f[0].lower()}{f[1:]}" for f in facts]
    return steps + ["Decide whether these facts mean yes or no."]


def reference_guidance(example: Example, max_steps: int = 6) -> list[str] | None:
    """The reference SG steps of an example (None when it has neither a trace nor a rationale)."""
    if example.trace:
        return [t for t, _ in embedded_guidance_plan(example, max_steps)]
    if not example.rationale and not example.meta.get("decomposition"):
        return None
    if example.answer_type == "yes_no":
        return _strategy_steps(example)
    return _solution_steps(example)


def _strict(steps: list[str], rules: FilterRules) -> list[str]:
    """The reference teacher's answer to the retry prompt: no digits at all, 2..6 steps (our choice)."""
    steps = [re.sub(r"\s+", " ", re.sub(r"[-$]?\d[\d,.]*%?", "some", s)).strip() for s in steps]
    steps = [re.sub(r"[=×÷∑∫√^]", " ", s) for s in steps]
    if len(steps) > rules.max_steps:
        items = _group([(s, []) for s in steps], rules.max_steps, lambda ts: " Then ".join(ts))
        steps = [t for t, _ in items]
    while len(steps) < rules.min_steps:
        steps.append("Check that the result answers the question.")
    return steps


def _sloppy(steps: list[str], example: Example, rng: random.Random) -> list[str]:
    """A first draft that breaks one filter rule (the reference teacher's ``error_rate``; our choice)."""
    kind = rng.choice(("arithmetic", "final_answer", "one_step"))
    if kind == "arithmetic":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        return steps[:-1] + [f"{steps[-1]} For example, {a} + {b} = {a + b}."]
    if kind == "final_answer":
        return steps + [f"So the answer is {example.answer.strip()}."]
    return [" ".join(steps)]


SG_KIND_NAME = "sgft_guidance_v1"  # bump when the reference SG text changes (it keys the teacher cache)


def reference_guidance_kind(examples: Sequence[Example], rules: FilterRules | None = None):
    """A :class:`~sgft_lab.teachers.reference.PromptKind` answering :func:`sg_prompt` requests about
    ``examples`` (any with a trace, a rationale or a decomposition). With probability ``error_rate`` a draft
    breaks one filter rule; a retry prompt is answered by :func:`_strict`, also drafted sloppily at
    ``error_rate``, so some questions are dropped. Unknown questions get the teacher's "I am not sure."."""
    rules = rules or FilterRules()
    known = {ex.question.strip(): ex for ex in examples}

    def match(prompt: str):
        return split_sg_prompt(prompt, known)

    def respond(teacher, fields, req, rng: random.Random) -> str:
        ex = known.get(fields["question"].strip())
        steps = reference_guidance(ex, rules.max_steps) if ex is not None else None
        if not steps:
            return UNSURE
        if fields["retry"]:
            steps = _strict(steps, rules)
        if rng.random() < teacher.error_rate:
            steps = _sloppy(steps, ex, rng)
        return format_steps(steps)

    return PromptKind(SG_KIND_NAME, match, respond)
