"""The reference teacher: answers zero-shot-CoT prompts about embedded examples from their solution traces.

It stands in for the LLM teacher so every pipeline runs offline and deterministically. It knows examples by
their question text and recognises prompt kinds through an ordered list of :class:`PromptKind` (a matcher
and a responder); later methods add kinds (SGFT guidance, FDD variants) by passing ``extra_kinds``, which
are tried first.

Built-in kinds (Fine-tune-CoT, methods.md 2.2):
  stage 1  ``Q: {question}\\nA: Let's think step by step.``  -> a rationale written from the trace;
  stage 2  ``{stage 1 prompt}{rationale}\\nTherefore, the answer is``  -> `` {answer}.``, the answer that the
           rationale in the prompt reaches (parsed from its text, never looked up in the gold).

Output is a pure function of (prompt, temperature, sample index, identity). At temperature 0 every sample
index gets the greedy output (phrasing 0, rng keyed on sample 0), as a greedy LLM would; at T > 0 the
phrasing is drawn from ``diversity`` phrasings. With probability ``error_rate`` (at any temperature) the
rationale gets one wrong step (propagated honestly) or a wrong final statement, so the correctness filter
has work to do.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..benchmarks.embedded import (
    N_PHRASINGS,
    corruptible_steps,
    rationale_answer,
    rationale_sentences,
    stable_seed,
    trace_generator,
)
from ..benchmarks.record import Example
from .base import Completion, Request

GOLDEN_VERSION = "g1"  # bump whenever golden-rationale outputs change (joins the identity when any are known)

VERSION = "v1"  # bump whenever the text of an existing prompt kind's outputs changes (it keys the cache)
UNSURE = " I am not sure."
STAGE1_SUFFIX = "\nA: Let's think step by step."
STAGE2_SUFFIX = "\nTherefore, the answer is"

Fields = dict[str, Any]


@dataclass(frozen=True)
class PromptKind:
    """One kind of prompt: ``match(prompt)`` returns its fields or None; ``respond`` writes the completion."""

    name: str
    match: Callable[[str], Fields | None]
    respond: Callable[[ReferenceTeacher, Fields, Request, random.Random], str]


def match_stage2(prompt: str) -> Fields | None:
    if not (prompt.startswith("Q: ") and prompt.endswith(STAGE2_SUFFIX) and STAGE1_SUFFIX in prompt):
        return None
    head, _, rest = prompt.partition(STAGE1_SUFFIX)
    return {"question": head[len("Q: ") :], "rationale": rest[: -len(STAGE2_SUFFIX)]}


def match_stage1(prompt: str) -> Fields | None:
    if prompt.startswith("Q: ") and prompt.endswith(STAGE1_SUFFIX):
        return {"question": prompt[len("Q: ") : -len(STAGE1_SUFFIX)]}
    return None


def respond_stage1(teacher: ReferenceTeacher, f: Fields, req: Request, rng: random.Random) -> str:
    ex = teacher.lookup(f["question"])
    if ex is None:
        golden = teacher.golden.get(f["question"])
        return UNSURE if golden is None else " " + golden_rationale(golden)
    return teacher.rationale(ex, req, rng)


def respond_stage2(teacher: ReferenceTeacher, f: Fields, req: Request, rng: random.Random) -> str:
    ex = teacher.lookup(f["question"])
    if ex is None:
        golden = teacher.golden.get(f["question"])
        return UNSURE if golden is None else f" {golden.answer.strip()}."
    answer = rationale_answer(trace_generator(ex.trace or []), f["rationale"])
    return UNSURE if answer is None else f" {answer}."


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def golden_rationale(ex: Example) -> str:
    """The dataset's own rationale, stripped. GSM8K's calculator annotations (``<<48/2=24>>``) are deleted:
    they are tool calls for the GSM8K calculator, not reasoning text a teacher would write (our choice)."""
    text = ex.rationale or ""
    if ex.id.startswith("gsm8k:"):
        text = _CALCULATOR.sub("", text)
    return text.strip()


ZS_COT_KINDS = (
    PromptKind("zs_cot_stage2", match_stage2, respond_stage2),  # first: it also starts with "Q: "
    PromptKind("zs_cot_stage1", match_stage1, respond_stage1),
)


class ReferenceTeacher:
    """Teacher backend that writes rationales from embedded examples' traces (see the module docstring)."""

    def __init__(
        self,
        examples: Sequence[Example],
        error_rate: float = 0.0,
        diversity: int = 3,
        seed: int = 0,
        extra_kinds: Sequence[PromptKind] = (),
    ):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        if diversity < 1:
            raise ValueError(f"diversity must be >= 1, got {diversity}")
        self.error_rate = float(error_rate)
        self.diversity = int(diversity)
        self.seed = int(seed)
        self.kinds: tuple[PromptKind, ...] = tuple(extra_kinds) + ZS_COT_KINDS
        # Only examples with a trace are known; a question seen twice keeps its first example.
        self.examples: dict[str, Example] = {}
        # Examples with no trace but a dataset rationale: answered with it (golden, see the module docstring).
        self.golden: dict[str, Example] = {}
        for ex in examples:
            if ex.trace:
                self.examples.setdefault(ex.question, ex)
            elif ex.rationale and ex.rationale.strip():
                self.golden.setdefault(ex.question, ex)
        for q in self.examples:
            self.golden.pop(q, None)
        self.identity = f"reference:{VERSION}:err={self.error_rate:g}:div={self.diversity}:seed={self.seed}"
        if self.golden:  # these prompts used to get UNSURE: a new identity so no cached UNSURE is reused
            self.identity += f":golden-{GOLDEN_VERSION}"
        if extra_kinds:  # new prompt kinds may answer prompts that used to get UNSURE
            self.identity += ":+" + ",".join(k.name for k in extra_kinds)

    def lookup(self, question: str) -> Example | None:
        return self.examples.get(question)

    def request_rng(self, req: Request) -> random.Random:
        """The request's own rng: hashlib seed of (seed, prompt, sample index); greedy ignores the index."""
        sample = req.sample_index if req.params.temperature > 0 else 0
        return random.Random(stable_seed("reference", self.seed, req.prompt, sample))

    def rationale(self, ex: Example, req: Request, rng: random.Random) -> str:
        """Stage-1 text: phrasing 0 at T=0, else one of ``diversity`` phrasings; errors at ``error_rate``."""
        n = min(self.diversity, N_PHRASINGS)
        phrasing = rng.randrange(n) if req.params.temperature > 0 else 0
        corrupt, wrong_final = None, False
        if rng.random() < self.error_rate:
            steps = corruptible_steps(ex.trace or [])
            if steps and rng.random() < 0.5:
                corrupt = rng.choice(steps)
            else:
                wrong_final = True
        sentences, _ = rationale_sentences(ex, phrasing, corrupt, rng, wrong_final)
        return " " + " ".join(sentences)

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        out = []
        for req in requests:
            rng = self.request_rng(req)
            text = UNSURE
            for kind in self.kinds:
                fields = kind.match(req.prompt)
                if fields is not None:
                    text = kind.respond(self, fields, req, rng)
                    break
            words = text.split()
            finish = "stop"
            if len(words) > req.params.max_tokens:  # as an API would: cut at max_tokens (counted in words)
                text, finish = " " + " ".join(words[: req.params.max_tokens]), "length"
            out.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=len(req.prompt.split()),
                    completion_tokens=min(len(words), req.params.max_tokens),
                )
            )
        return out
