"""Generation-based evaluation: greedy completions, scoring, saved predictions, the per-epoch callback.

How a student is asked and scored is an :class:`EvalSpec`: a prompt per question (the template's input by
default) and a scorer (Fine-tune-CoT's evaluator by default; FDD's PoT students plug in ``pot.Programs.score``,
which executes the programs). Every evaluation writes predictions/epoch_NNN.jsonl (one row per question, with
its split), so the summary metrics are always recomputed from files on disk: a resumed run keeps its earlier
epochs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .answers import score, score_strict
from .benchmarks.record import Example
from .data.formats import student_input
from .io import read_jsonl, write_jsonl
from .paths import RunPaths

Scorer = Callable[[Sequence[Example], Sequence[str], str], list[dict]]


@dataclass
class EvalSpec:
    """How a student is asked and scored on a benchmark."""

    task: str  # scoring key
    template: str  # ft_cot_token, ft_token, zs, pot ...
    max_new_tokens: int
    batch_size: int
    prefix: str | None = None  # overrides the template's answer prefix (e.g. SGFT's 'The answer is')
    max_input_tokens: int | None = None  # prompts are cut exactly as in training
    scorer: Scorer | None = None  # (examples, completions, split) -> rows; None: Fine-tune-CoT's evaluator
    metric: str = "ftcot"  # the scorer's name in results (ftcot, fdd_numeric)
    max_length: int | None = None  # Fine-tune-CoT's generate(max_length): replaces max_new_tokens when set
    truncate_early: bool = False  # ... and 256 in epochs 0 and 1 (the official code's time saver)

    def length(self, epoch: int | None) -> int | None:
        """The max_length of an evaluation after ``epoch`` (None: bounded by max_new_tokens)."""
        if self.max_length is not None and self.truncate_early and epoch is not None and epoch < 2:
            return min(256, self.max_length)
        return self.max_length

    def prompts(self, examples: Sequence[Example], family: str) -> list[str]:
        return [student_input(self.template, ex.question, family) for ex in examples]

    def score(self, examples: Sequence[Example], completions: Sequence[str], split: str) -> list[dict]:
        if self.scorer is not None:
            return self.scorer(examples, completions, split)
        return score_rows(examples, completions, self, split)


def student_spec(ctx, template: str, student_cfg=None, **kw) -> EvalSpec:
    """How a trained student is evaluated in this run: its template, its decoding length (max_new_tokens,
    or Fine-tune-CoT's max_length with truncate_early), the trainer's evaluation batch."""
    s = student_cfg or ctx.cfg.student
    return EvalSpec(ctx.task, template, s.max_new_tokens, ctx.cfg.trainer.eval_batch_size,
                    max_input_tokens=s.max_input_tokens, max_length=s.max_length,
                    truncate_early=bool(s.truncate_early), **kw)


def predict(student, examples: Sequence[Example], spec: EvalSpec, *, prompts: Sequence[str] | None = None,
            split: str = "test", progress: bool = True, epoch: int | None = None) -> list[dict]:
    """Greedy completions for ``examples`` (after ``epoch``, for truncate_early), scored; one row each."""
    if prompts is None:
        prompts = spec.prompts(examples, student.family)
    completions = student.generate(list(prompts), max_new_tokens=spec.max_new_tokens,
                                   batch_size=spec.batch_size, progress=progress,
                                   max_input_tokens=spec.max_input_tokens, label=f"eval {split}",
                                   max_length=spec.length(epoch))
    rows = spec.score(examples, completions, split)
    return [dict(r, epoch=epoch) for r in rows] if epoch is not None else rows


def score_rows(examples: Sequence[Example], completions: Sequence[str], spec: EvalSpec, split: str) -> list[dict]:
    """One row per question: Fine-tune-CoT's official verdict (``correct``, ``extracted``, its flags) and the
    strict rule's beside it (``strict_correct``, ``strict_extracted``; answers.score_strict)."""
    rows = []
    kw = {} if spec.prefix is None else {"prefix": spec.prefix}
    for ex, c in zip(examples, completions):
        s = score(spec.task, spec.template, c, ex.answer, **kw)
        st = score_strict(spec.task, spec.template, c, ex.answer, **kw)
        rows.append({"id": ex.id, "split": split, "question": ex.question, "completion": c,
                     "extracted": s.extracted, "answer": ex.answer, "correct": s.correct,
                     "contains_answer": s.contains_answer, "correct_format": s.correct_format,
                     "strict_extracted": st.extracted, "strict_correct": st.correct})
    return rows


def accuracy(rows: Sequence[dict], key: str = "correct") -> float:
    return sum(bool(r[key]) for r in rows) / len(rows) if rows else 0.0


def strict_accuracy(rows: Sequence[dict]) -> float | None:
    """The strict rule's accuracy, or None when the rows carry no strict verdict (e.g. executed PoT)."""
    if not rows or any("strict_correct" not in r for r in rows):
        return None
    return accuracy(rows, "strict_correct")


_EPOCH_FILE = re.compile(r"epoch_(\d{3,})\.jsonl")


def epoch_history(paths: RunPaths) -> list[dict]:
    """[{epoch, val_accuracy, n_val, test_accuracy, n_test}] from the saved prediction files, in epoch order.
    Only the run's own files (``epoch_NNN.jsonl``) are read; anything else in the folder is ignored."""
    hist = []
    for f in sorted(paths.predictions_dir.glob("epoch_*.jsonl")):
        m = _EPOCH_FILE.fullmatch(f.name)
        if not m:
            continue
        rows = read_jsonl(f)
        entry = {"epoch": int(m.group(1))}
        for split in ("val", "test"):
            sub = [r for r in rows if r.get("split") == split]
            if sub:
                entry[f"{split}_accuracy"] = accuracy(sub)
                entry[f"n_{split}"] = len(sub)
                strict = strict_accuracy(sub)
                if strict is not None:
                    entry[f"{split}_strict_accuracy"] = strict
        hist.append(entry)
    return hist


def summarize(history: list[dict]) -> dict:
    """The three reporting protocols of methods.md 1.4, never mixed in one field.

    accuracy / last_epoch: test accuracy at the final epoch.
    dev_selected: test accuracy at the epoch with the best validation accuracy (first such epoch).
    best_test_epoch: the maximum test accuracy over epochs -- Fine-tune-CoT's protocol for its open
      students (selects on test, so optimistic; labelled paper-compatible).
    """
    with_test = [h for h in history if "test_accuracy" in h]
    if not with_test:
        return {}
    last = with_test[-1]
    out = {"accuracy": last["test_accuracy"],
           "last_epoch": {"epoch": last["epoch"], "accuracy": last["test_accuracy"]}}
    with_val = [h for h in with_test if "val_accuracy" in h]
    if with_val:
        best_val = max(with_val, key=lambda h: (h["val_accuracy"], -h["epoch"]))
        out["dev_selected"] = {"epoch": best_val["epoch"], "val_accuracy": best_val["val_accuracy"],
                               "accuracy": best_val["test_accuracy"]}
    best_test = max(with_test, key=lambda h: (h["test_accuracy"], -h["epoch"]))
    out["best_test_epoch"] = {"epoch": best_test["epoch"], "accuracy": best_test["test_accuracy"],
                              "protocol": "paper-compatible (Fine-tune-CoT selects the best test epoch)"}
    return out


def make_callback(eval_sets: dict[str, Sequence[Example]], spec: EvalSpec, paths: RunPaths,
                  every_n_epochs: int = 1, progress: bool = True, keep_best: bool = False):
    """The per-epoch evaluator, one for every method: after every n-th epoch (and the last) rank 0 asks and
    scores the student as ``spec`` says on each split and saves the prediction rows. ``keep_best``: when the
    ``val`` accuracy beats every earlier epoch's (read back from the saved predictions, so a resumed run
    remembers), the student's weights are saved to ``paths.best_weights`` -- the model the clean protocol
    tests once at the end (ties keep the earliest epoch).

    Side effects and resume: the epoch's checkpoint is written after its evaluation (training.
    checkpoint_callback), so a run killed during an evaluation re-trains from the checkpoint before it and
    evaluates that epoch again, rewriting the same predictions (and best weights) -- equal on CPU, where a
    resumed run trains exactly as an uninterrupted one.

    Test hook: with ``SGFT_LAB_TEST_STOP_IN_EVAL=<epoch>`` the process stops itself (SIGSTOP) in the middle of
    that epoch's evaluation -- the best weights saved, the predictions not yet written -- so a test can kill it
    there (tests/test_resume.py)."""
    import os
    import signal

    import lightning.pytorch as pl

    stop_in = os.environ.get("SGFT_LAB_TEST_STOP_IN_EVAL")

    class GenerationEvaluator(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch
            last = epoch + 1 >= trainer.max_epochs
            if not last and (epoch + 1) % every_n_epochs:
                return
            if trainer.global_rank != 0:
                return
            best = max((h["val_accuracy"] for h in epoch_history(paths)
                        if h["epoch"] < epoch and "val_accuracy" in h), default=None)
            rows, scores = [], {}
            for split, examples in eval_sets.items():
                split_rows = predict(pl_module.student, examples, spec, split=split, progress=progress,
                                     epoch=epoch)
                rows += split_rows
                scores[split] = accuracy(split_rows)
                pl_module.log(f"{split}_accuracy", scores[split], on_epoch=True, rank_zero_only=True,
                              prog_bar=True)  # the epoch bar shows the last val / test accuracy
            if keep_best and "val" in scores and (best is None or scores["val"] > best):
                pl_module.student.save_trainable(paths.best_weights)  # before the predictions: a kill
            if stop_in is not None and int(stop_in) == epoch:
                os.kill(os.getpid(), signal.SIGSTOP)
            write_jsonl(paths.predictions(epoch), rows)  # in between re-evaluates this epoch on resume
            log_prediction_table(trainer, rows, epoch)
            pl_module.student.model.train()

    return GenerationEvaluator()


TABLE_COLUMNS = ("epoch", "split", "id", "question", "completion", "extracted", "answer", "correct")


def log_prediction_table(trainer, rows: Sequence[dict], epoch: int, key: str = "predictions") -> bool:
    """Log this evaluation's prediction rows as a ``wandb.Table`` when a WandbLogger is attached (and
    ``logger.log_predictions`` is on); one table per evaluation, under ``key``. Returns whether it logged."""
    if not rows:
        return False
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in getattr(trainer, "loggers", []) if isinstance(lg, WandbLogger)]
    data = [[epoch, *(r.get(c) for c in TABLE_COLUMNS[1:])] for r in rows]
    logged = False
    for lg in loggers:
        # The run's config (run.start_wandb hands it to W&B) carries the switch.
        if not (lg.experiment.config.get("logger") or {}).get("log_predictions", True):
            continue
        lg.log_table(key=key, columns=list(TABLE_COLUMNS), data=data, step=trainer.global_step)
        logged = True
    return logged
