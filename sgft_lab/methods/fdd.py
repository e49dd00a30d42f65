"""FDD: Feedback-Driven Distillation (Zhu et al., arXiv 2411.14698; methods.md section 4).

    0. Initialisation: the teacher pairs every training problem with a rationale -- chain-of-thought
       (Fine-tune-CoT's stage-1 prompt, answer-filtered) or program-of-thought (a program computing
       ``ans``, kept iff its executed ``ans`` equals the gold answer). Train the student on this set.
    for round r = 1..R:
    1. Feedback: the round r-1 student answers the pool's problems greedily (PoT: its program is
       executed in the sandbox); solved = easy, failed = hard.
    2. Expansion: the teacher writes a harder variant of each easy problem and a new problem of similar
       difficulty for each hard one; it then solves each new problem (3 samples at T=0.7, kept iff >= 2
       agree; or the embedded reference solver). Verified problems that are not near-duplicates of a
       test/val question nor duplicates of the pool join it.
    3. Retrain the student on the grown set (from the base student, or continued) and evaluate it.

The paper's body is unavailable (methods.md 4.1: abstract only), so every detail below is our choice
unless methods.md 4.2 fixes it; each is a ``method.fdd`` key (sgft_lab/config.py ``FddConfig``) and is
listed in experiments/fdd/README.md. Choices made here rather than in methods.md:

- Rounds: round 0 trains on the initial set, so ``rounds=R`` trains R+1 students and expands R times
  (methods.md: "3 rounds after round 0"). Per-round accuracy is the round's last epoch on test (the
  model that gives the next feedback); dev-selected and best-test-epoch numbers are recorded too.
- Pool: every original training problem (with its gold answer) plus every accepted new problem. An
  original problem whose round-0 rationale failed the filter stays in the pool (it can be hard and
  spawn a similar problem) but yields no training sample.
- A problem expanded again in a later round is asked with the next sample index (same prompt, sample
  k = times asked before, at variant_temperature), so it gets a new variant rather than the cached one.
- The cap on problems expanded per round (max_new_per_round; methods.md: |original train|, the CPU
  preset uses 300) picks problems uniformly at random (seeded by seed and round) when the pool is
  larger, and only those get feedback: the split matters only for problems that are expanded.
- New problems are labelled in steps: 2 samples, a 3rd only when they disagree -- the same decision as
  "3 samples, keep iff >= 2 agree", with up to a third fewer teacher calls (see ``label``).
- Duplicates are dropped before labelling (no teacher calls spent on them): exact (normalised) repeats
  of the pool or of this round's earlier new problems, and problems sharing >= dedupe_threshold of
  their word 8-grams with a test or val question (methods.md says test; val is added as it is used for
  selection).
- CoT labels: the majority answer of the stage-2 completions (Fine-tune-CoT's zs_cot extraction), the
  rationale of the first sample that reaches it. PoT labels: the executed answer, compared with
  tolerance 1e-4; the first agreeing program is the rationale.
- Scoring: CoT students with Fine-tune-CoT's ``ft_cot_token`` rule (``ftcot``); PoT students by running
  their program in the sandbox and comparing ``ans`` with the gold number within 1e-4 (``fdd_numeric``,
  methods.md 4.3).
- The tiny student's tokenizer and random init are made once (round 0) and reused: "from base" means
  this same init each round.

Resume: each round's artifacts live in ``rounds/round_r/``. ``summary.json`` marks a finished round
(skipped on rerun); ``feedback.jsonl`` and ``dataset.jsonl`` mark finished steps inside a round; the
round's training resumes from its own ``checkpoints/last.ckpt``; teacher calls are served by the cache.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from ..answers import score
from ..benchmarks import load_benchmark
from ..benchmarks.embedded import stable_seed
from ..benchmarks.record import Example, Splits
from ..config import Config, ConfigError
from ..data.fdd import FddDataset, FddProblem, NgramIndex, pot_prompt
from ..data.formats import student_input
from ..evaluation import EvalSpec, epoch_history, summarize
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..paths import RunPaths
from ..teachers import SamplingParams, build_teacher
from ..teachers.base import Request
from ..teachers.engine import TeacherAccounting, generate
from .common import RunContext, print_results_table, seed_everything
from .fine_tune_cot import correctness_filter, teacher_rationales

NUMERIC_TOLERANCE = 1e-4  # fdd_numeric (methods.md 4.3)
# teacher_rationales() flags each sample against a gold answer; a new problem has none yet, so it gets
# this placeholder (parses as a float, equals nothing) and agreement decides instead.
NO_GOLD = "nan"
WEIGHTS_FILE = "weights.pt"  # a round's trained (trainable) weights, under rounds/round_r/student/


# --------------------------------------------------------------------------------------------------------
# Answers: numbers for PoT, Fine-tune-CoT's rule for CoT.


def as_number(value: Any) -> float | None:
    """A float from an executed ``ans`` or an answer string ("1,000" -> 1000.0); None if not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def fdd_numeric(value: Any, gold: str) -> bool:
    """The fdd_numeric rule: both are numbers and |value - gold| <= 1e-4."""
    a, b = as_number(value), as_number(gold)
    return a is not None and b is not None and abs(a - b) <= NUMERIC_TOLERANCE


def format_number(x: float) -> str:
    """An executed answer as a label string: ``12`` for 12.0, else up to 6 decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def same_answer(task: str, a: str, b: str) -> bool:
    """Two extracted CoT answers agree under the task's comparison rule (answers.score)."""
    return score(task, "zs", a, b).correct


def majority(values: Sequence[Any], same) -> tuple[Any, list[int]] | None:
    """The value most samples agree with (ties: the earliest) and the indices agreeing with it."""
    best: tuple[Any, list[int]] | None = None
    for v in values:
        if v is None:
            continue
        agree = [i for i, w in enumerate(values) if w is not None and same(v, w)]
        if best is None or len(agree) > len(best[1]):
            best = (v, agree)
    return best


class Programs:
    """Sandboxed execution of PoT programs (sgft_lab.pot), each distinct program run once per process."""

    def __init__(self, timeout_s: float, memory_mb: int, workers: int):
        self.timeout_s, self.memory_mb, self.workers = timeout_s, memory_mb, workers
        self.results: dict[str, Any] = {}

    def run(self, completions: Sequence[str]) -> list[tuple[str, Any]]:
        """(program, PotResult) per completion: the program is pulled out of the text, then executed."""
        from ..pot import extract_program, run_many

        programs = [extract_program(c.strip()) for c in completions]
        todo = list(dict.fromkeys(p for p in programs if p not in self.results))
        for p, res in zip(todo, run_many(todo, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                                         max_workers=self.workers)):
            self.results[p] = res
        return [(p, self.results[p]) for p in programs]


# --------------------------------------------------------------------------------------------------------
# The run's fixed parts.


@dataclass
class Setup:
    cfg: Config
    ctx: RunContext
    splits: Splits
    teacher: Any
    cache: Any
    family: str
    programs: Programs
    eval_sets: dict[str, list[Example]]
    test_index: NgramIndex
    accounting: TeacherAccounting = field(default_factory=TeacherAccounting)

    @property
    def f(self):
        return self.cfg.method.fdd

    @property
    def pot(self) -> bool:
        return self.cfg.method.fdd.rationale == "pot"

    @property
    def metric(self) -> str:
        return "fdd_numeric" if self.pot else "ftcot"

    def round_paths(self, r: int) -> RunPaths:
        return RunPaths(self.ctx.paths.run_dir / "rounds" / f"round_{r}")

    def student_prompt(self, question: str) -> str:
        if self.pot:
            return pot_prompt(question)
        return student_input(self.cfg.method.template, question, self.family)


def check_config(cfg: Config, splits: Splits) -> None:
    f = cfg.method.fdd
    choices = {"rationale": (f.rationale, ("cot", "pot")), "retrain": (f.retrain, ("base", "continue")),
               "verify": (f.verify, ("agreement", "reference"))}
    for key, (val, allowed) in choices.items():
        if val not in allowed:
            raise ConfigError(f"invalid config at `method.fdd.{key}`: {val!r} is not one of {allowed}")
    for key in ("rounds", "dedupe_ngram", "label_samples", "label_min_agree", "pot_workers"):
        if getattr(f, key) < (0 if key == "rounds" else 1):
            raise ConfigError(f"invalid config at `method.fdd.{key}`: {getattr(f, key)} is too small")
    if f.label_min_agree > f.label_samples:
        raise ConfigError("invalid config at `method.fdd.label_min_agree`: "
                          "more than method.fdd.label_samples")
    if f.epochs_per_round is not None and f.epochs_per_round < 1:
        raise ConfigError("invalid config at `method.fdd.epochs_per_round`: must be >= 1")
    for key in ("easy_prompt", "hard_prompt"):
        if getattr(f, key).count("{question}") != 1:
            raise ConfigError(f"invalid config at `method.fdd.{key}`: needs exactly one {{question}}")
    if f.verify == "reference" and cfg.teacher.name != "reference":
        raise ConfigError("invalid config at `method.fdd.verify`: 'reference' needs teacher=reference")
    if f.rationale == "pot":
        bad = next((ex for ex in splits.train if ex.answer_type != "number"), None)
        if bad is not None:
            raise ConfigError(f"invalid config at `method.fdd.rationale`: pot needs numeric answers; "
                              f"{bad.id} of {cfg.benchmark.name} has answer type {bad.answer_type!r}")
    want = "pot" if f.rationale == "pot" else "ft_cot_token"
    if cfg.method.template != want:
        raise ConfigError(f"invalid config at `method.template`: FDD's {f.rationale} students use {want!r}, "
                          f"got {cfg.method.template!r}")


def make_teacher(cfg: Config, examples: Sequence[Example]):
    """The configured teacher; the reference teacher gets FDD's prompt kinds (variants, PoT programs)."""
    if cfg.teacher.name == "reference":
        from ..teachers.reference_fdd import build_reference_teacher

        t = cfg.teacher
        return build_reference_teacher(examples, t.error_rate, t.diversity, t.seed,
                                       cfg.method.fdd.easy_prompt, cfg.method.fdd.hard_prompt)
    return build_teacher(cfg.teacher, examples)


# --------------------------------------------------------------------------------------------------------
# Step 0: the initial distillation set.


def initial_dataset(s: Setup) -> tuple[FddDataset, dict, list[dict]]:
    """Round 0: one greedy teacher rationale per training problem, kept iff its answer is the gold."""
    m, train = s.cfg.method, s.splits.train
    if s.pot:
        outs = generate(s.teacher, s.cache, [pot_prompt(ex.question) for ex in train],
                        SamplingParams(temperature=0.0, max_tokens=s.f.program_max_tokens),
                        accounting=s.accounting, stage="program", batch_size=m.teacher_batch_size,
                        progress=s.cfg.trainer.enable_progress_bar)
        executed = s.programs.run([cs[0].text for cs in outs])
        rows = [{"example_id": ex.id, "question": ex.question, "answer": ex.answer, "completion": cs[0].text,
                 "program": prog, "ok": res.ok, "executed": res.answer, "error": res.error,
                 "correct": res.ok and fdd_numeric(res.answer, ex.answer)}
                for ex, cs, (prog, res) in zip(train, outs, executed)]
        rationale = {r["example_id"]: r["program"] for r in rows if r["correct"]}
        report = {"total": len(rows), "kept": len(rationale),
                  "rejected_wrong_answer": len(rows) - len(rationale),
                  "rejected_not_executed": sum(not r["ok"] for r in rows)}
    else:
        samples = teacher_rationales(
            s.teacher, s.cache, train, s.splits.task, n_samples=1, temperature=0.0,
            rationale_max_tokens=m.rationale_max_tokens, answer_max_tokens=m.answer_max_tokens,
            accounting=s.accounting, batch_size=m.teacher_batch_size,
            progress=s.cfg.trainer.enable_progress_bar)
        kept, report = correctness_filter(samples)
        rationale = {x.example_id: x.reasoning_completion for x in kept}
        rows = [asdict(x) for x in samples]
    dataset = FddDataset(FddProblem(ex.id, ex.question, ex.answer, "train", 0, rationale=rationale.get(ex.id))
                         for ex in train)
    return dataset, {"round": 0, "filter": report}, rows


# --------------------------------------------------------------------------------------------------------
# Step 1: feedback -- which pool problems does the student solve?


def select_for_expansion(s: Setup, r: int, dataset: FddDataset) -> list[FddProblem]:
    """The pool problems round r expands: all of them, or a seeded uniform sample of max_new_per_round
    (default |original train|) when the pool is larger. Our choice: only these get feedback, since the
    split matters only for the problems that are expanded (with no cap this is the whole pool)."""
    problems = list(dataset)
    cap = s.f.max_new_per_round if s.f.max_new_per_round is not None else len(s.splits.train)
    if len(problems) <= cap:
        return problems
    chosen = sorted(random.Random(stable_seed("fdd-expand", s.cfg.seed, r)).sample(range(len(problems)), cap))
    return [problems[i] for i in chosen]


def student_feedback(s: Setup, student, problems: Sequence[FddProblem]) -> list[dict]:
    """One greedy answer per problem; ``correct`` = easy (PoT: the executed program is right)."""
    from ..students.generation import generate as student_generate

    completions = student_generate(
        student.model, student.tokenizer, student.family, [s.student_prompt(p.question) for p in problems],
        max_new_tokens=s.cfg.student.max_new_tokens, batch_size=s.cfg.trainer.eval_batch_size,
        progress=s.cfg.trainer.enable_progress_bar, max_input_tokens=s.cfg.student.max_input_tokens)
    return score_completions(s, problems, completions)


def score_completions(s: Setup, problems: Sequence, completions: Sequence[str]) -> list[dict]:
    """Rows {id, question, answer, completion, extracted, correct, ...} under the run's metric."""
    rows = []
    if s.pot:
        for p, c, (prog, res) in zip(problems, completions, s.programs.run(completions)):
            ok = res.ok and fdd_numeric(res.answer, p.answer)
            rows.append({"id": p.id, "question": p.question, "completion": c, "answer": p.answer,
                         "extracted": None if res.answer is None else str(res.answer), "correct": ok,
                         "contains_answer": ok, "correct_format": res.ok, "error": res.error})
    else:
        for p, c in zip(problems, completions):
            sc = score(s.splits.task, s.cfg.method.template, c, p.answer)
            rows.append({"id": p.id, "question": p.question, "completion": c, "answer": p.answer,
                         "extracted": sc.extracted, "correct": sc.correct,
                         "contains_answer": sc.contains_answer, "correct_format": sc.correct_format})
    return rows


# --------------------------------------------------------------------------------------------------------
# Step 2: expansion -- variants from the teacher, labelled and verified.


@dataclass
class Candidate:
    """One expansion request and what became of it (a row of rounds/round_r/generated.jsonl)."""

    id: str
    parent_id: str
    kind: str  # harder (parent was easy) | similar (parent was hard)
    prompt: str
    sample_index: int
    question: str = ""
    status: str = "pending"  # kept | unusable | duplicate_pool | duplicate_eval | unverified
    answer: str | None = None
    rationale: str | None = None
    votes: list[Any] = field(default_factory=list)


def remember_pool(s: Setup, dataset: FddDataset) -> None:
    """Let a reference teacher re-learn the problems it wrote in earlier rounds (a resumed run)."""
    from ..teachers.reference_fdd import remember

    remember(s.teacher, [_variant_request(s, p.meta["request"]["prompt"], p.meta["request"]["sample_index"])
                         for p in dataset if p.origin != "train" and "request" in p.meta])


def _variant_request(s: Setup, prompt: str, k: int) -> Request:
    params = SamplingParams(temperature=s.f.variant_temperature, max_tokens=s.f.variant_max_tokens)
    return Request(prompt, params, k)


def expand(s: Setup, r: int, dataset: FddDataset,
           feedback: list[dict]) -> tuple[FddDataset, dict, list[Candidate]]:
    """Round r's new problems, one per problem of ``feedback``: a harder variant of an easy (solved) one,
    a similar problem for a hard one. Returns the grown pool (a new version), the counts, every candidate."""
    from ..teachers.reference_fdd import fill, remember

    f = s.f
    grown = dataset.copy()
    by_id = {p.id: p for p in grown}
    cands = []
    for j, row in enumerate(feedback):
        parent = by_id[row["id"]]
        kind = "harder" if row["correct"] else "similar"
        asked = parent.meta.setdefault("asked", {})
        k = asked.get(kind, 0)  # a new sample of the same prompt when this problem was expanded before
        asked[kind] = k + 1
        prompt = fill(f.easy_prompt if kind == "harder" else f.hard_prompt, parent.question)
        cands.append(Candidate(f"fdd:r{r}:{j}", parent.id, kind, prompt, k))

    # The teacher writes the new problems (sample k of each prompt; samples < k are cached from before).
    remember_pool(s, dataset)
    for k in sorted({c.sample_index for c in cands}):
        group = [c for c in cands if c.sample_index == k]
        params = SamplingParams(temperature=f.variant_temperature, max_tokens=f.variant_max_tokens, n=k + 1)
        outs = generate(s.teacher, s.cache, [c.prompt for c in group], params, accounting=s.accounting,
                        stage="variant", batch_size=s.cfg.method.teacher_batch_size,
                        progress=s.cfg.trainer.enable_progress_bar)
        for c, cs in zip(group, outs):
            c.question = cs[k].text.strip()
    remember(s.teacher, [_variant_request(s, c.prompt, c.sample_index) for c in cands])

    # De-duplicate before labelling, so no teacher call is spent on a dropped problem.
    seen: set[str] = set()
    from ..data.fdd import normalize_question
    from ..teachers.reference import UNSURE

    for c in cands:
        key = normalize_question(c.question)
        if not c.question or c.question == UNSURE.strip():
            c.status = "unusable"
        elif grown.contains_question(c.question) or key in seen:
            c.status = "duplicate_pool"
        elif s.test_index.overlap(c.question) >= f.dedupe_threshold:
            c.status = "duplicate_eval"
        seen.add(key)
    label(s, [c for c in cands if c.status == "pending"])

    grown.add(FddProblem(c.id, c.question, c.answer, c.kind, r, c.parent_id, c.rationale,
                         meta={"request": {"prompt": c.prompt, "sample_index": c.sample_index},
                               "votes": c.votes})
              for c in cands if c.status == "kept")
    status = Counter(c.status for c in cands)
    rejected = {k: status.get(k, 0) for k in ("duplicate_pool", "duplicate_eval", "unverified")}
    easy = sum(bool(row["correct"]) for row in feedback)
    counts = {"round": r, "pool_before": len(dataset), "easy": easy, "hard": len(feedback) - easy,
              "requested": len(cands), "requested_harder": sum(c.kind == "harder" for c in cands),
              "requested_similar": sum(c.kind == "similar" for c in cands),
              "unusable": status.get("unusable", 0), "generated": len(cands) - status.get("unusable", 0),
              "kept": status.get("kept", 0), "rejected": sum(rejected.values()), "rejected_by": rejected,
              "kept_harder": sum(c.status == "kept" and c.kind == "harder" for c in cands),
              "kept_similar": sum(c.status == "kept" and c.kind == "similar" for c in cands)}
    return grown, counts, cands


def label(s: Setup, cands: list[Candidate]) -> None:
    """The teacher solves each new problem; verified ones are kept (status, answer, rationale set).

    agreement: samples at label_temperature are drawn in steps -- label_min_agree at first, then one more
    at a time for the undecided, up to label_samples -- and the first answer to reach label_min_agree
    votes is the label (with 3 samples and 2 votes this is exactly "keep iff >= 2 of 3 agree", and a
    problem whose first two samples agree costs 2 teacher calls, not 3). reference: samples are drawn one
    at a time until one reaches the embedded solver's answer.
    """
    from ..teachers.reference_fdd import reference_answer

    f = s.f
    reference = f.verify == "reference"
    gold = {c.id: reference_answer(s.teacher, c.question) for c in cands} if reference else {}
    pending = [c for c in cands if not reference or gold[c.id] is not None]  # None: the solver never saw it
    drawn = 0
    while pending and drawn < f.label_samples:
        n = min(f.label_samples, drawn + 1 if drawn or reference else f.label_min_agree)
        for c, samples in zip(pending, _solve(s, pending, n, gold)):
            c.votes = [a for a, _ in samples]
            if reference:
                hit = next((x for x in samples if x[0] is not None and _matches(s, x[0], gold[c.id])), None)
                if hit is not None:
                    c.status, c.answer, c.rationale = "kept", gold[c.id], hit[1]
            else:
                best = majority(c.votes, _same(s))
                if best is not None and len(best[1]) >= f.label_min_agree:
                    answer = format_number(float(best[0])) if s.pot else best[0]
                    c.status, c.answer, c.rationale = "kept", answer, samples[best[1][0]][1]
        drawn = n
        left = f.label_samples - drawn
        pending = [c for c in pending if c.status == "pending" and (reference or _can_agree(s, c, left))]
    for c in cands:
        if c.status == "pending":
            c.status = "unverified"


def _matches(s: Setup, answer: Any, gold: str) -> bool:
    return fdd_numeric(answer, gold) if s.pot else same_answer(s.splits.task, answer, gold)


def _same(s: Setup):
    if s.pot:
        return lambda a, b: abs(float(a) - float(b)) <= NUMERIC_TOLERANCE
    return lambda a, b: same_answer(s.splits.task, a, b)


def _can_agree(s: Setup, c: Candidate, left: int) -> bool:
    best = majority(c.votes, _same(s))
    return (len(best[1]) if best else 0) + left >= s.f.label_min_agree


def _solve(s: Setup, cands: Sequence[Candidate], n: int, gold: dict) -> list[list[tuple[Any, str]]]:
    """Samples 0..n-1 of the teacher's solution of each problem: [(answer or None, rationale)].
    Samples drawn in an earlier step come from the cache."""
    f, m = s.f, s.cfg.method
    if s.pot:
        outs = generate(s.teacher, s.cache, [pot_prompt(c.question) for c in cands],
                        SamplingParams(temperature=f.label_temperature, max_tokens=f.program_max_tokens, n=n),
                        accounting=s.accounting, stage="label_program", batch_size=m.teacher_batch_size,
                        progress=s.cfg.trainer.enable_progress_bar)
        executed = s.programs.run([x.text for cs in outs for x in cs])
        return [[(res.answer if res.ok else None, prog) for prog, res in executed[j * n:(j + 1) * n]]
                for j in range(len(cands))]
    exs = [Example(c.id, c.question, gold.get(c.id) or NO_GOLD, "text") for c in cands]
    samples = teacher_rationales(
        s.teacher, s.cache, exs, s.splits.task, n_samples=n, temperature=f.label_temperature,
        rationale_max_tokens=m.rationale_max_tokens, answer_max_tokens=m.answer_max_tokens,
        accounting=s.accounting, batch_size=m.teacher_batch_size, progress=s.cfg.trainer.enable_progress_bar)
    return [[(x.extracted, x.reasoning_completion) for x in samples[j * n:(j + 1) * n]]
            for j in range(len(cands))]


# --------------------------------------------------------------------------------------------------------
# Step 3: train and evaluate a round's student.


def base_student(s: Setup, corpus: list[str]):
    """The base student: the tiny student's tokenizer + init are made once (round 0) and reused."""
    from ..students.build import TOKENIZER_DIR, build_student

    work = s.ctx.paths.student_dir
    have_tokenizer = (work / TOKENIZER_DIR / "tokenizer.json").is_file()
    return build_student(s.cfg.student, corpus=None if have_tokenizer else corpus, work_dir=work)


def save_weights(student, path: Path) -> None:
    import torch

    keep = {n for n, p in student.model.named_parameters() if p.requires_grad}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v for k, v in student.model.state_dict().items() if k in keep}, tmp)
    tmp.replace(path)


def load_weights(student, path: Path) -> None:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{path}: the round's trained weights are missing; delete the round's folder "
                                "to retrain it")
    result = student.model.load_state_dict(torch.load(path, map_location="cpu"), strict=False)
    missing = [k for k in result.missing_keys if k in {n for n, p in student.model.named_parameters()
                                                       if p.requires_grad}]
    if result.unexpected_keys or missing:
        raise ValueError(f"{path}: weights do not fit the student (unexpected {result.unexpected_keys[:3]}, "
                         f"missing {missing[:3]})")


def pot_callback(s: Setup, paths: RunPaths, every_n_epochs: int):
    """Per-epoch evaluation of a PoT student: generate programs, execute them, score fdd_numeric."""
    import lightning.pytorch as pl

    from ..evaluation import accuracy
    from ..students.generation import generate as student_generate

    class PotEvaluator(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch
            if (epoch + 1 < trainer.max_epochs and (epoch + 1) % every_n_epochs) or trainer.global_rank != 0:
                return
            student, rows = pl_module.student, []
            for split, examples in s.eval_sets.items():
                completions = student_generate(
                    student.model, student.tokenizer, student.family,
                    [pot_prompt(ex.question) for ex in examples], max_new_tokens=s.cfg.student.max_new_tokens,
                    batch_size=s.cfg.trainer.eval_batch_size, progress=s.cfg.trainer.enable_progress_bar,
                    max_input_tokens=s.cfg.student.max_input_tokens)
                split_rows = [dict(row, split=split) for row in score_completions(s, examples, completions)]
                pl_module.log(f"{split}_accuracy", accuracy(split_rows), on_epoch=True, rank_zero_only=True)
                rows += split_rows
            write_jsonl(paths.predictions(epoch), rows)
            student.model.train()

    return PotEvaluator()


def train_round(s: Setup, r: int, dataset: FddDataset, previous: Path | None):
    """Fit round r's student on the round's dataset version; ``previous``: weights to continue from."""
    from ..data.fdd import FddDataModule
    from ..training import fit

    cfg, paths = s.cfg, s.round_paths(r)
    pairs = dataset.pairs(s.f.rationale, s.family, cfg.method.template)
    write_jsonl(paths.run_dir / "train.jsonl", (p.to_dict() for p in pairs))
    seed_everything(cfg.seed + r)
    student = base_student(s, [p.input + p.label for p in pairs])
    if previous is not None:
        load_weights(student, previous)
    epochs = s.f.epochs_per_round or cfg.trainer.max_epochs
    every = s.f.eval_every_n_epochs or cfg.trainer.eval_every_n_epochs
    round_cfg = replace(cfg, trainer=replace(cfg.trainer, max_epochs=epochs, eval_every_n_epochs=every))
    tc = round_cfg.trainer
    dm = FddDataModule(student, dataset, s.f.rationale, s.eval_sets.get("val", []),
                       s.eval_sets.get("test", []), batch_size=tc.batch_size, num_workers=tc.num_workers,
                       seed=cfg.seed + r,
                       template=cfg.method.template)
    spec = EvalSpec(task=s.splits.task, template=cfg.method.template,
                    max_new_tokens=cfg.student.max_new_tokens, batch_size=tc.eval_batch_size,
                    max_input_tokens=cfg.student.max_input_tokens)
    callback = pot_callback(s, paths, tc.eval_every_n_epochs) if s.pot else None
    outcome = fit(round_cfg, student, pairs, s.eval_sets, spec, paths, job_type=f"fdd_round_{r}",
                  datamodule=dm, eval_callback=callback)
    finish_wandb()  # each round is its own W&B run
    save_weights(student, paths.student_dir / WEIGHTS_FILE)
    return student, outcome, len(pairs)


def round_data(s: Setup, r: int, dataset: FddDataset | None, student) -> tuple[FddDataset, dict]:
    """Round r's dataset version: the initial set (r = 0) or the previous version grown by feedback.
    ``dataset`` / ``student``: round r-1's, when this process has them (else read from round r-1's files)."""
    import time

    paths = s.round_paths(r)
    dataset_file = paths.run_dir / "dataset.jsonl"
    if dataset_file.is_file():  # the data step finished before a kill
        return FddDataset.load(dataset_file), read_json(paths.run_dir / "counts.json")
    t0, before = time.time(), s.accounting.total().teacher_calls
    seconds: dict[str, float] = {}
    if r == 0:
        dataset, counts, rows = initial_dataset(s)
        write_jsonl(paths.teacher_dir / "samples.jsonl", rows)
    else:
        prev = s.round_paths(r - 1)
        if dataset is None:
            dataset = FddDataset.load(prev.run_dir / "dataset.jsonl")
        feedback_file = paths.run_dir / "feedback.jsonl"
        if feedback_file.is_file():
            feedback = read_jsonl(feedback_file)
        else:
            if student is None:  # resumed: rebuild the previous round's student
                student = base_student(s, [])
                load_weights(student, prev.student_dir / WEIGHTS_FILE)
            feedback = student_feedback(s, student, select_for_expansion(s, r, dataset))
            write_jsonl(feedback_file, feedback)
            seconds["feedback"] = round(time.time() - t0, 2)
        t1 = time.time()
        dataset, counts, cands = expand(s, r, dataset, feedback)
        seconds["expansion"] = round(time.time() - t1, 2)
        write_jsonl(paths.run_dir / "generated.jsonl", (asdict(c) for c in cands))
    counts.update(dataset=dataset.counts(), teacher_calls=s.accounting.total().teacher_calls - before,
                  seconds=dict(seconds, data_step=round(time.time() - t0, 2)))
    write_json(paths.run_dir / "counts.json", counts)
    dataset.save(dataset_file)  # last: its presence marks the data step as done
    return dataset, counts


def round_training(s: Setup, r: int, dataset: FddDataset, counts: dict) -> tuple[Any, dict]:
    """Train round r's student on its dataset version, evaluate it, and summarise the round."""
    previous = None
    if s.f.retrain == "continue" and r > 0:
        previous = s.round_paths(r - 1).student_dir / WEIGHTS_FILE
    student, outcome, n_pairs = train_round(s, r, dataset, previous)
    history = epoch_history(s.round_paths(r))
    metrics = summarize(history)
    return student, {
        "round": r, "metric": s.metric, "test_accuracy": metrics.get("accuracy"),
        "val_accuracy": (history[-1] if history else {}).get("val_accuracy"),
        "dataset_problems": len(dataset), "train_samples": n_pairs, "counts": counts, "metrics": metrics,
        "history": history, "train_time_s": round(outcome.train_time_s, 2),
        "resumed_from_checkpoint": outcome.resumed_from_checkpoint}


# --------------------------------------------------------------------------------------------------------
# The loop.


def run(cfg: Config, run_dir: str | Path) -> dict:
    ctx = RunContext(cfg, run_dir)
    splits = load_benchmark(cfg.benchmark, cfg.paths.data_dir)  # nothing is written before the data loads
    check_config(cfg, splits)
    ctx.save_config()
    seed_everything(cfg.seed)
    f = cfg.method.fdd
    eval_sets = {"val": _cap(splits.val, cfg.trainer.max_eval_examples),
                 "test": _cap(splits.test, cfg.trainer.max_eval_examples)}
    s = Setup(cfg=cfg, ctx=ctx, splits=splits, teacher=make_teacher(cfg, splits.train),
              cache=ctx.teacher_cache(),
              family="encoder_decoder" if cfg.student.family == "encoder_decoder" else "decoder",
              programs=Programs(f.pot_timeout_s, f.pot_memory_mb, f.pot_workers), eval_sets=eval_sets,
              test_index=NgramIndex([ex.question for ex in splits.test + splits.val], f.dedupe_ngram))
    loggers = RoundLogger(s)
    summaries: list[dict] = []
    student, dataset = None, None
    try:
        for r in range(f.rounds + 1):
            summary_file = s.round_paths(r).run_dir / "summary.json"
            if summary_file.is_file():  # a finished round: skipped by its saved artifacts
                summary = read_json(summary_file)
                summaries.append(dict(summary, resumed=True))
                loggers.log(summary)
                student, dataset = None, None
                continue
            dataset, counts = round_data(s, r, dataset, student)  # step 0, or steps 1-2 (feedback, expansion)
            student, summary = round_training(s, r, dataset, counts)  # step 3 (train, evaluate)
            write_json(summary_file, summary)  # marks the round finished
            summaries.append(summary)
            loggers.log(summary)
    finally:
        s.cache.close()
        loggers.close()

    totals = s.accounting.to_dict()
    last = summaries[-1]
    results = ctx.write_results(
        metric=s.metric, rationale=f.rationale, rounds=f.rounds, retrain=f.retrain, verify=f.verify,
        metrics=last["metrics"], per_round=[_brief(x) for x in summaries], round_details=summaries,
        n_train_questions=len(splits.train), n_train_samples=last["train_samples"],
        n_val=len(eval_sets["val"]), n_test=len(eval_sets["test"]),
        teacher_calls=totals["total"]["teacher_calls"], cache_hits=totals["total"]["cache_hits"],
        teacher_accounting=totals)
    if cfg.print_table:
        print_results_table(results)
        _print_rounds(results)
    return results


def _brief(summary: dict) -> dict:
    c = summary["counts"]
    keys = ("easy", "hard", "requested", "generated", "kept", "rejected")
    return {"round": summary["round"], "dataset_problems": summary["dataset_problems"],
            "train_samples": summary["train_samples"], "test_accuracy": summary["test_accuracy"],
            "val_accuracy": summary["val_accuracy"], "metric": summary["metric"],
            **{k: c.get(k) for k in keys}, "teacher_calls": c.get("teacher_calls"),
            "resumed": summary.get("resumed", False)}


class RoundLogger:
    """Per-round metrics to the run's loggers, step = round: ``run_dir/metrics.csv`` as each round ends
    (a round an earlier process logged is not repeated), W&B (when enabled) at the end of the run with
    every round, resumed ones included -- one W&B run may be active at a time, and the rounds' fits
    have theirs."""

    def __init__(self, s: Setup):
        self.s = s
        self.csv = None
        self.rounds: list[dict] = []
        self.csv_rounds = self._rounds_in_csv()

    def _rounds_in_csv(self) -> set[int]:
        import csv

        path = self.s.ctx.paths.metrics_csv
        if not path.is_file():
            return set()
        with open(path, newline="", encoding="utf-8") as fh:
            return {int(float(row["round"])) for row in csv.DictReader(fh) if row.get("round")}

    @staticmethod
    def metrics(summary: dict) -> dict:
        b = _brief(summary)
        m = {"round": b["round"], "dataset_problems": b["dataset_problems"],
             "train_samples": b["train_samples"],
             f"round_test_accuracy_{b['metric']}": b["test_accuracy"],
             f"round_val_accuracy_{b['metric']}": b["val_accuracy"],
             **{k: b[k] for k in ("easy", "hard", "requested", "generated", "kept", "rejected")}}
        return {k: v for k, v in m.items() if v is not None}

    def log(self, summary: dict) -> None:
        from lightning.pytorch.loggers import CSVLogger

        self.rounds.append(summary)
        if summary["round"] in self.csv_rounds:
            return
        if self.csv is None:
            self.csv = CSVLogger(save_dir=str(self.s.ctx.paths.run_dir), name="", version="")
        self.csv.log_metrics(self.metrics(summary), step=summary["round"])
        self.csv.save()
        self.csv_rounds.add(summary["round"])

    def close(self) -> None:
        if self.csv is not None:
            self.csv.finalize("success")
        if not (self.s.cfg.logger.wandb and self.rounds):
            return
        from lightning.pytorch.loggers import CSVLogger

        from ..training import build_loggers

        others = [lg for lg in build_loggers(self.s.cfg, self.s.ctx.paths, job_type="fdd")
                  if not isinstance(lg, CSVLogger)]
        for summary in self.rounds:
            for lg in others:
                lg.log_metrics(self.metrics(summary), step=summary["round"])
        for lg in others:
            lg.finalize("success")
        finish_wandb()


def finish_wandb() -> None:
    """End the active W&B run (training.fit leaves it open), so the next fit or logger starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _print_rounds(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"FDD rounds ({results['rationale']}, test accuracy: {results['metric']})")
    for col in ("round", "problems", "samples", "easy", "hard", "requested", "kept", "rejected", "test acc"):
        t.add_column(col, justify="right")
    for b in results["per_round"]:
        acc = "-" if b["test_accuracy"] is None else f"{100 * b['test_accuracy']:.2f}%"
        t.add_row(*[str(x if x is not None else "-") for x in (
            b["round"], b["dataset_problems"], b["train_samples"], b["easy"], b["hard"], b["requested"],
            b["kept"], b["rejected"])], acc)
    Console().print(t)


def _cap(xs: list, n: int | None) -> list:
    return xs if n is None else xs[:n]
