"""Prompting baselines (methods.md section 5): an untrained student is prompted and scored once.

    zero_shot      zs:      ``Q: {question}\\n\\nA:`` (encoder-decoder ``question: {question}``), no prefix.
    zero_shot_cot  zs_cot:  the teacher's two stages, the stage-2 completion scored with the zs_cot rule.
    few_shot_cot   fs_cot:  ``{few_shot_prompt}\\nQ: {question}\\nA:`` with Fine-tune-CoT's exemplars, read
                            from <data dir>/fine_tune_cot_splits/few_shot_cot_prompts.json; input cut at 768
                            tokens; scored with the prefix 'The answer is'.

Greedy, on val and test (capped by trainer.max_eval_examples); sgft_lab/prompting.py asks the student.
Predictions go to predictions/epoch_000.jsonl, so results.json is computed the way every method's is.

Our choices: embedded benchmarks, which have no few-shot file, get exemplars built from their own training
questions and reference rationales (method.n_exemplars, 4 by default; Wei et al. use 8); prompts longer than
the input limit are cut from the right as Fine-tune-CoT does, and results.json counts them.
"""

from __future__ import annotations

from .. import prompting
from ..errors import DataError
from ..io import atomic_write_text, write_jsonl
from ..run import RunContext, model_info, rows_entry
from ..students.build import build_student


def check(cfg, splits) -> None:
    """Before anything is written: few_shot_cot needs its exemplars, and something must be evaluated."""
    if not splits.val and not splits.test:
        raise DataError(f"benchmark {cfg.benchmark.name}: val and test are empty, nothing to evaluate")
    if cfg.method.template == "fs_cot":
        few_shot_exemplars(cfg, splits)


def few_shot_exemplars(cfg, splits) -> tuple[str, str]:
    """The exemplar block of few_shot_cot and where it came from."""
    from ..benchmarks.loaders import get_spec, resolve_data_dir

    m = cfg.method
    if cfg.benchmark.source == "embedded":
        return (prompting.embedded_few_shot_prompt(splits.train, m.n_exemplars),
                f"embedded: first {m.n_exemplars} training examples")
    key = m.few_shot_key or get_spec(cfg.benchmark).key
    data_dir = resolve_data_dir(cfg.paths.data_dir, cfg.benchmark)
    return prompting.load_few_shot_prompt(data_dir, key), f"{data_dir / prompting.FEW_SHOT_FILE}[{key}]"


def run(ctx: RunContext) -> None:
    cfg, m = ctx.cfg, ctx.cfg.method
    eval_sets = ctx.eval_sets()
    questions = [ex.question for exs in eval_sets.values() for ex in exs]
    common = {"task": ctx.task, "batch_size": cfg.trainer.eval_batch_size, "progress": ctx.progress}

    if m.template == "fs_cot":
        few_shot, source = few_shot_exemplars(cfg, ctx.splits)
        atomic_write_text(ctx.paths.few_shot_prompt, few_shot)
        ctx.details["few_shot_source"] = source
        prompts, max_input = [prompting.few_shot_cot_prompt(few_shot, q) for q in questions], m.max_input_length
    elif m.template == "zs_cot":
        prompts, max_input = [prompting.zero_shot_cot_prompt(q) for q in questions], cfg.student.max_input_tokens
    else:
        prompts = [prompting.zero_shot_prompt(q, cfg.student.family.value, cfg.student.chat_template) for q in questions]
        max_input = cfg.student.max_input_tokens

    # The tiny student (random init) trains its tokenizer on the text it will read: the prompts.
    corpus = prompts + ([prompting.zero_shot_cot_prompt("", "")] if m.template == "zs_cot" else [])
    student = build_student(cfg.student, corpus=corpus, work_dir=ctx.paths.student_dir)
    truncated = prompting.count_truncated(student, prompts, max_input)
    if truncated:
        print(f"{m.name}: {truncated} of {len(prompts)} prompts exceed {max_input} tokens; "
              "they are cut from the right")

    if m.template == "fs_cot":
        rows = prompting.few_shot_cot(student, eval_sets, few_shot, max_input_tokens=max_input, **common)
    elif m.template == "zs_cot":
        rows = prompting.zero_shot_cot(student, eval_sets, rationale_max_tokens=m.rationale_max_tokens,
                                       answer_max_tokens=m.answer_max_tokens, **common)
    else:
        rows = prompting.zero_shot(student, eval_sets, **common)
    write_jsonl(ctx.paths.predictions(0), rows)

    for split in eval_sets:
        split_rows = [r for r in rows if r["split"] == split]
        if split_rows:
            ctx.add([rows_entry(split_rows, split=split, protocol=cfg.protocol)])
    test = [r for r in rows if r["split"] == "test"]
    ctx.metrics = {"accuracy": sum(r["correct"] for r in test) / len(test)} if test else {}
    ctx.models["student"] = model_info(student)
    ctx.data.update(n_val=len(eval_sets["val"]), n_test=len(eval_sets["test"]))
    ctx.details.update(template=m.template, n_truncated_prompts=truncated, max_input_length=max_input)
