"""Prompting baselines (methods.md section 5): an untrained student is prompted and scored once.

    zero_shot      zs:      decoder ``Q: {question}\\n\\nA:``, encoder-decoder ``question: {question}``;
                            scored with no prefix (first candidate).
    zero_shot_cot  zs_cot:  stage 1 ``Q: {question}\\nA: Let's think step by step.``, then stage 2
                            ``{stage 1 prompt}{completion}\\nTherefore, the answer is``; the stage-2
                            completion is scored with the zs_cot rule (first candidate). Decoder-only.
    few_shot_cot   fs_cot:  ``{few_shot_prompt}\\nQ: {question}\\nA:`` with Fine-tune-CoT's exemplars, read
                            from <data dir>/fine_tune_cot_splits/few_shot_cot_prompts.json; input cut at 768
                            tokens; scored with the prefix 'The answer is'.

Greedy, on val and test (capped by trainer.max_eval_examples). Predictions go to predictions/epoch_000.jsonl
(the rows of evaluation.score_rows), so results.json is computed the way every trained method's is.

Our choices: zero_shot_cot stage lengths are method.rationale_max_tokens / answer_max_tokens (the teacher's
128 each); embedded benchmarks, which have no few-shot file, get exemplars built from their own training
questions and reference rationales (4 by default; Wei et al. use 8); prompts longer than the input limit
are cut from the right as Fine-tune-CoT does, and results.json counts them (n_truncated_prompts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..benchmarks.record import Example, Splits
from ..config import Config
from ..data.formats import ENC_DEC, student_input, zs_cot_stage1, zs_cot_stage2
from ..evaluation import EvalSpec, epoch_history, score_rows, summarize
from ..io import atomic_write_text, write_jsonl
from .common import RunContext, print_results_table, seed_everything

TEMPLATES = {"zero_shot": "zs", "zero_shot_cot": "zs_cot", "few_shot_cot": "fs_cot"}
FEW_SHOT_FILE = Path("fine_tune_cot_splits") / "few_shot_cot_prompts.json"
FS_COT_MAX_INPUT_TOKENS = 768  # Fine-tune-CoT's input limit for fs_cot (512 for every other template)
EMBEDDED_EXEMPLARS = 4  # exemplars built for an embedded benchmark (our choice; see embedded_few_shot_prompt)


# --- prompts (exact strings, methods.md 2.4 and 5) ----------------------------------------------------------


def zero_shot_prompt(question: str, family: str) -> str:
    """Fine-tune-CoT's zs input (decoder and encoder-decoder forms)."""
    return student_input("zs", question, family)


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
        raise FileNotFoundError(f"few-shot CoT prompts not found: {path} (copy "
                                "data/few_shot_cot_prompts.json of itsnamgyu/reasoning-teacher there; "
                                "../shared/data has it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by dataset")
    if key not in data:
        hint = " (Fine-tune-CoT has no few-shot prompt for it: its cells are '-')" \
            if key == "tracking_shuffled_objects" else ""
        raise ValueError(f"{path}: no few-shot CoT prompt for {key!r}{hint}; known: "
                         f"{', '.join(sorted(data))}. Set method.extra.few_shot_key=KEY to borrow another "
                         "task's exemplars.")
    entry = data[key]
    prompt = entry.get("prompt") if isinstance(entry, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{path}: entry {key!r}, field 'prompt': expected a non-empty string")
    return prompt


def embedded_few_shot_prompt(train: Sequence[Example], n: int = EMBEDDED_EXEMPLARS) -> str:
    """Exemplars for an embedded benchmark, which has no few-shot file (our choice): the first ``n`` training
    questions, each answered with its reference rationale (phrasing 0 of embedded.rationale_sentences) and
    Wei et al.'s closing ``The answer is {answer}.``, joined as in few_shot_cot_prompts.json."""
    from ..benchmarks.embedded import rationale_sentences

    exemplars = [ex for ex in train if ex.trace][:n]
    if len(exemplars) < n:
        raise ValueError(f"few_shot_cot on an embedded benchmark needs {n} training examples with a trace "
                         f"for its exemplars, got {len(exemplars)} (raise benchmark.n_train)")
    blocks = []
    for ex in exemplars:
        sentences, _ = rationale_sentences(ex, 0)
        answer = f"The answer is {ex.answer.strip()}."  # Wei et al.'s closing sentence
        blocks.append(f"Q: {ex.question.strip()}\nA: {' '.join(sentences)} {answer}")
    return "\n".join(blocks)


# --- the method ---------------------------------------------------------------------------------------------


def _load(cfg: Config, template: str) -> tuple[Splits, str | None, str]:
    """Splits and, for fs_cot, the exemplar block and where it came from. Reads data only, writes nothing."""
    from ..benchmarks import load_benchmark
    from ..benchmarks.loaders import get_spec, load_real, resolve_data_dir

    b = cfg.benchmark
    if b.source == "embedded":
        splits = load_benchmark(b, cfg.paths.data_dir)
    else:  # no training: a test-only benchmark (AQuA without its 97k train file) is fine
        splits = load_real(b, cfg.paths.data_dir, require_train=False)
    if template != "fs_cot":
        return splits, None, ""
    extra = cfg.method.extra
    if b.source == "embedded":
        n = int(extra.get("n_exemplars", EMBEDDED_EXEMPLARS))
        return splits, embedded_few_shot_prompt(splits.train, n), f"embedded: first {n} training examples"
    key = extra.get("few_shot_key") or get_spec(b).key
    data_dir = resolve_data_dir(cfg.paths.data_dir, b)
    return splits, load_few_shot_prompt(data_dir, key), f"{data_dir / FEW_SHOT_FILE}[{key}]"


def run(cfg: Config, run_dir: str | Path) -> dict:
    name, m, s = cfg.method.name, cfg.method, cfg.student
    if name not in TEMPLATES:
        raise ValueError(f"baselines.run: unknown baseline {name!r}; known: {', '.join(TEMPLATES)}")
    template = TEMPLATES[name]
    if m.template != template:
        raise ValueError(f"method {name} prompts with template {template!r}, "
                         f"not method.template={m.template!r}")
    if template == "zs_cot" and s.family == ENC_DEC:
        raise ValueError("zero_shot_cot runs on decoder-only students (Fine-tune-CoT supports zs_cot for "
                         "decoders only; methods.md 5); student.family=encoder_decoder")
    if s.use_chat_template:
        raise ValueError("the prompting baselines do not render chat templates yet: "
                         "set student.use_chat_template=false")

    ctx = RunContext(cfg, run_dir)
    paths = ctx.paths
    splits, few_shot, few_shot_source = _load(cfg, template)  # nothing is written before the data loads
    ctx.save_config()
    seed_everything(cfg.seed)

    cap = cfg.trainer.max_eval_examples
    eval_sets = {k: v if cap is None else v[:cap] for k, v in (("val", splits.val), ("test", splits.test))}
    examples = [ex for split in eval_sets.values() for ex in split]
    if not examples:
        raise ValueError(f"benchmark {cfg.benchmark.name}: val and test are empty, nothing to evaluate")
    if template == "zs":
        prompts = [zero_shot_prompt(ex.question, s.family) for ex in examples]
        max_input = s.max_input_tokens
    elif template == "zs_cot":
        prompts = [zero_shot_cot_prompt(ex.question) for ex in examples]
        max_input = s.max_input_tokens
    else:
        assert few_shot is not None
        atomic_write_text(paths.data_dir / "few_shot_prompt.txt", few_shot)
        prompts = [few_shot_cot_prompt(few_shot, ex.question) for ex in examples]
        max_input = int(m.extra.get("max_input_length", FS_COT_MAX_INPUT_TOKENS))

    from ..students.build import build_student, count_parameters
    from ..students.encode import prompt_ids
    from ..students.generation import generate

    if cfg.trainer.threads:
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    # The tiny student (random init) trains its tokenizer on the text it will read: the eval prompts.
    corpus = prompts + ([zs_cot_stage2("", "")] if template == "zs_cot" else [])
    student = build_student(s, corpus=corpus, work_dir=paths.student_dir)
    _, total = count_parameters(student.model)
    # Fine-tune-CoT cuts inputs from the right (an over-long few-shot prompt loses its question); count them.
    truncated = sum(len(prompt_ids(student.tokenizer, student.family, p)) > max_input for p in prompts)
    if truncated:
        print(f"{name}: {truncated} of {len(prompts)} prompts exceed {max_input} tokens; "
              "they are cut from the right")

    def complete(texts: list[str], max_new_tokens: int, max_input_length: int | None) -> list[str]:
        return generate(student.model, student.tokenizer, student.family, texts,
                        max_new_tokens=max_new_tokens, batch_size=cfg.trainer.eval_batch_size,
                        progress=cfg.trainer.enable_progress_bar, max_input_tokens=max_input_length)

    if template == "zs_cot":
        rationales = complete(prompts, m.rationale_max_tokens, max_input)
        stage2 = [zero_shot_cot_prompt(ex.question, r) for ex, r in zip(examples, rationales)]
        # Stage 2 is not cut: it is the stage-1 prompt plus at most rationale_max_tokens new tokens.
        completions = complete(stage2, m.answer_max_tokens, None)
        max_new = m.answer_max_tokens
    else:
        rationales = None
        completions = complete(prompts, s.max_new_tokens, max_input)
        max_new = s.max_new_tokens

    spec = EvalSpec(task=splits.task, template=template, max_new_tokens=max_new,
                    batch_size=cfg.trainer.eval_batch_size)
    rows, start = [], 0
    for split, exs in eval_sets.items():  # examples are val then test, in order
        rows += score_rows(exs, completions[start:start + len(exs)], spec, split)
        start += len(exs)
    if rationales is not None:  # keep the stage-1 text beside the scored stage-2 completion
        rows = [{**row, "rationale": r} for row, r in zip(rows, rationales)]
    write_jsonl(paths.predictions(0), rows)

    history = epoch_history(paths)
    results = ctx.write_results(
        metrics=summarize(history), history=history, template=template,
        n_val=len(eval_sets["val"]), n_test=len(eval_sets["test"]), n_truncated_prompts=truncated,
        max_input_length=max_input, teacher_calls=0, cache_hits=0, student_parameters={"total": total},
        **({"few_shot_source": few_shot_source} if few_shot is not None else {}),
    )
    if cfg.print_table:
        print_results_table(results)
    return results

