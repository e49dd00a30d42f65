"""Prompting an untrained student (methods.md 5): zero-shot, zero-shot-CoT and few-shot-CoT.

One implementation for the prompting baselines (methods/baselines.py) and SGFT's "response model alone"
rows (methods/sgft.py). Greedy; every function takes the evaluation sets ``{split: examples}``, asks the
student in one batched pass and returns prediction rows (evaluation.score_rows) for every split.

    zs      decoder ``Q: {question}\\n\\nA:``, encoder-decoder ``question: {question}``; scored with no
            prefix (first candidate).
    zs_cot  stage 1 ``Q: {question}\\nA: Let's think step by step.``, stage 2 ``{stage 1 prompt}{completion}
            \\nTherefore, the answer is``; the stage-2 completion is scored with the zs_cot rule. Decoders only.
    fs_cot  ``{few_shot_prompt}\\nQ: {question}\\nA:`` with Fine-tune-CoT's exemplars; scored with the prefix
            'The answer is'.

Prompts longer than the input limit are cut from the right, as Fine-tune-CoT does; :func:`count_truncated`
says how many.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .benchmarks.record import Example
from .data.formats import student_input, zs_cot_stage1, zs_cot_stage2
from .errors import DataError
from .evaluation import EvalSpec, score_rows

FEW_SHOT_FILE = Path("fine_tune_cot_splits") / "few_shot_cot_prompts.json"


# --- prompts (exact strings, methods.md 2.4 and 5) ----------------------------------------------------------


def zero_shot_prompt(question: str, family: str, chat: bool = False) -> str:
    """Fine-tune-CoT's zs input (decoder and encoder-decoder forms); for a chat student the bare question,
    which its chat template then wraps (methods.md 5, our choice for SGFT's chat models)."""
    return question.strip() if chat else student_input("zs", question, family)


def zero_shot_cot_prompt(question: str, rationale: str | None = None) -> str:
    """Stage 1, or with the stage-1 completion ``rationale`` stage 2 (not stripped, as the teacher's)."""
    stage1 = zs_cot_stage1(question.strip())
    return stage1 if rationale is None else zs_cot_stage2(stage1, rationale)


def few_shot_cot_prompt(few_shot_prompt: str, question: str) -> str:
    """Fine-tune-CoT's fs_cot input, the same for decoder and encoder-decoder students."""
    return f"{few_shot_prompt}\nQ: {question.strip()}\nA:"


def load_few_shot_prompt(data_dir: str | Path, key: str) -> str:
    """The exemplar block for ``key`` from ``<data_dir>/fine_tune_cot_splits/few_shot_cot_prompts.json``."""
    path = Path(data_dir) / FEW_SHOT_FILE
    if not path.is_file():
        raise DataError(f"few-shot CoT prompts not found: {path} (copy data/few_shot_cot_prompts.json of "
                        "itsnamgyu/reasoning-teacher there; ../shared/data has it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by dataset")
    if key not in data:
        hint = " (Fine-tune-CoT has no few-shot prompt for it: its cells are '-')" \
            if key == "tracking_shuffled_objects" else ""
        raise DataError(f"{path}: no few-shot CoT prompt for {key!r}{hint}; known: {', '.join(sorted(data))}. "
                        "Set method.few_shot_key=KEY to borrow another task's exemplars.")
    entry = data[key]
    prompt = entry.get("prompt") if isinstance(entry, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{path}: entry {key!r}, field 'prompt': expected a non-empty string")
    return prompt


def embedded_few_shot_prompt(train: Sequence[Example], n: int = 4) -> str:
    """Exemplars for an embedded benchmark, which has no few-shot file (our choice): the first ``n`` training
    questions, each answered with its reference rationale (phrasing 0 of embedded.rationale_sentences) and
    Wei et al.'s closing ``The answer is {answer}.``, joined as in few_shot_cot_prompts.json."""
    from .benchmarks.embedded import rationale_sentences

    exemplars = [ex for ex in train if ex.trace][:n]
    if len(exemplars) < n:
        raise DataError(f"few_shot_cot on an embedded benchmark needs {n} training examples with a trace "
                        f"for its exemplars, got {len(exemplars)} (raise benchmark.n_train)")
    blocks = []
    for ex in exemplars:
        sentences, _ = rationale_sentences(ex, 0)
        answer = f"The answer is {ex.answer.strip()}."  # Wei et al.'s closing sentence
        blocks.append(f"Q: {ex.question.strip()}\nA: {' '.join(sentences)} {answer}")
    return "\n".join(blocks)


# --- asking a student ---------------------------------------------------------------------------------------


def _flat(eval_sets: dict[str, Sequence[Example]]) -> list[tuple[str, Example]]:
    return [(split, ex) for split, exs in eval_sets.items() for ex in exs]


def _rows(items: list[tuple[str, Example]], completions: list[str], spec: EvalSpec) -> list[dict]:
    rows: list[dict] = []
    for split in dict.fromkeys(s for s, _ in items):
        idx = [i for i, (s, _) in enumerate(items) if s == split]
        rows += score_rows([items[i][1] for i in idx], [completions[i] for i in idx], spec, split)
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(rows, key=lambda r: order[id(r)])


def zero_shot(student, eval_sets: dict[str, Sequence[Example]], *, task: str, batch_size: int,
              progress: bool = False) -> list[dict]:
    """The zs prompt, ``student.cfg.max_new_tokens`` new tokens, input cut at ``student.cfg.max_input_tokens``."""
    items = _flat(eval_sets)
    c = student.cfg
    completions = student.generate([zero_shot_prompt(ex.question, student.family, student.chat) for _, ex in items],
                                   max_new_tokens=c.max_new_tokens, batch_size=batch_size, progress=progress,
                                   max_input_tokens=c.max_input_tokens)
    return _rows(items, completions, EvalSpec(task, "zs", c.max_new_tokens, batch_size))


def zero_shot_cot(student, eval_sets: dict[str, Sequence[Example]], *, task: str, batch_size: int,
                  rationale_max_tokens: int, answer_max_tokens: int, progress: bool = False) -> list[dict]:
    """The two zs-CoT stages; rows carry the stage-1 text as ``rationale`` beside the scored stage 2."""
    items = _flat(eval_sets)
    stage1 = [zero_shot_cot_prompt(ex.question) for _, ex in items]
    rationales = student.generate(stage1, max_new_tokens=rationale_max_tokens, batch_size=batch_size,
                                  progress=progress, max_input_tokens=student.cfg.max_input_tokens)
    # Stage 2 is not cut: it is the stage-1 prompt plus at most rationale_max_tokens new tokens.
    stage2 = [zero_shot_cot_prompt(ex.question, r) for (_, ex), r in zip(items, rationales)]
    completions = student.generate(stage2, max_new_tokens=answer_max_tokens, batch_size=batch_size,
                                   progress=progress)
    rows = _rows(items, completions, EvalSpec(task, "zs_cot", answer_max_tokens, batch_size))
    return [{**row, "rationale": r} for row, r in zip(rows, rationales)]


def few_shot_cot(student, eval_sets: dict[str, Sequence[Example]], few_shot: str, *, task: str,
                 batch_size: int, max_input_tokens: int, progress: bool = False) -> list[dict]:
    """The fs_cot prompt with ``few_shot`` exemplars, ``student.cfg.max_new_tokens`` new tokens."""
    items = _flat(eval_sets)
    c = student.cfg
    completions = student.generate([few_shot_cot_prompt(few_shot, ex.question) for _, ex in items],
                                   max_new_tokens=c.max_new_tokens, batch_size=batch_size, progress=progress,
                                   max_input_tokens=max_input_tokens)
    return _rows(items, completions, EvalSpec(task, "fs_cot", c.max_new_tokens, batch_size))


def count_truncated(student, prompts: Sequence[str], max_input_tokens: int) -> int:
    """How many prompts exceed ``max_input_tokens`` (Fine-tune-CoT cuts them from the right)."""
    from .students.encode import prompt_ids

    return sum(len(prompt_ids(student.tokenizer, student.family, p, chat=student.cfg.chat_template))
               > max_input_tokens for p in prompts)
