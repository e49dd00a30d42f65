"""SGFT: Solution-Guidance Fine-Tuning (Bi et al., COLING 2025, arXiv 2412.09906; methods.md section 3).

    0. (embedded tier only) The response model: a tiny random-init student knows nothing, so it is first
       pre-trained, once, on a DIFFERENT pool of embedded problems to follow guidance and to answer plainly
       (the analogue of an instruction-tuned LLM), then frozen. Cached under paths.cache_dir by its config.
    1. SG generation: the teacher writes a Solution Guidance for N training questions (Prompt IV default).
    2. Filter (3.4): 2-6 steps, no calculation, no numeric result, no final answer; one retry with the
       extra instruction, then drop. Counts by reason go to results.json.
    3. Guide fine-tuning on  {SG prompt}\\n\\n{question}  ->  Step 1: ...  (LISA by default; LoRA/QLoRA via
       student.adapter with method.extra.lisa.enabled=false, a documented deviation).
    4. Collaborative inference: the trained guide writes the SG of each test question; the response model
       answers from  Question: {q}\\nSolution Guidance:\\n{sg}\\nAnswer:  scored with prefix 'The answer is'.
    5. Baselines in the same run: the response model alone (zero-shot, zero-shot-CoT), the response model
       with the teacher's own SG for the test questions (reference teacher only: an upper bound on the
       guide), and CoT fine-tuning on the same number of training questions (and on cot_ft_scales x as
       many teacher CoT samples: more questions, then several rationales per question).
    6. results.json: guided / unguided / CoT-FT accuracy, filter counts, guide SG quality, teacher accounting.

Every choice the paper leaves open is a key of :class:`SGFTSettings` (``method.extra``) and is listed in
experiments/sgft/README.md.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..benchmarks import load_benchmark
from ..benchmarks.record import Example, Splits
from ..config import Config, ConfigError, StudentConfig
from ..data.datamodules import Pair
from ..data.formats import student_input, student_label, zs_cot_stage1, zs_cot_stage2
from ..evaluation import EvalSpec, accuracy, epoch_history, score_rows, summarize
from ..guidance import (
    ANSWER_PREFIX,
    PROMPTS,
    RESPONSE_PROMPT,
    SG_KIND_NAME,
    FilterReport,
    FilterRules,
    check_sg,
    format_steps,
    guided_solution,
    reference_guidance,
    reference_guidance_kind,
    response_prompt,
    sg_prompt,
    worked_solution,
)
from ..io import write_json, write_jsonl
from ..paths import RunPaths
from ..teachers import SamplingParams, build_teacher
from ..teachers.engine import TeacherAccounting, generate
from .common import RunContext, seed_everything
from .fine_tune_cot import correctness_filter, teacher_rationales

RESPONSE_FORMAT_VERSION = "v1"  # bump when the response model's pre-training samples change (keys its cache)


# --------------------------------------------------------------------------------------------------------
# Settings (method.extra), validated like the rest of the config
# --------------------------------------------------------------------------------------------------------
@dataclass
class LISASettings:
    enabled: bool = True  # the paper's guide training (3.2); false = student.adapter (LoRA/QLoRA/none)
    layers: int = 2  # gamma: blocks trainable at a time (methods.md 3.8)
    interval: int = 20  # K: optimizer steps between draws


@dataclass
class ResponsePretrain:
    """Embedded tier only: how the tiny response model learns to follow guidance (our choice, a departure)."""

    mode: str = "auto"  # auto: pre-train a tiny (random-init) response model, use checkpoints as they are
    #                     | on | off (the tiny model stays random: it knows nothing)
    n_questions: int = 1500  # pool size, disjoint from the benchmark's train/val/test questions
    difficulties: list[int] = field(default_factory=list)  # [] = benchmark difficulty - 1 .. + 1 (>= 1)
    formats: dict[str, float] = field(default_factory=lambda: {"guided": 0.4, "zero_shot": 0.2,
                                                                "zero_shot_cot": 0.4})
    max_epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-3
    pool_seed: int = 10_000  # generator seed offset of the pool (the benchmark uses data_seed)


@dataclass
class SGFTSettings:
    prompt: str = "IV"  # teacher's SG prompt variant I..V (methods.md 3.3)
    guide_prompt: str = "IV"  # the guide's instruction (zero-shot variants I, II, IV)
    n_prompt_examples: int = 3  # examples in the few-shot variants III and V
    prompt_examples: list[dict[str, str]] = field(default_factory=list)  # [{question, guidance}]; [] = ref.
    n_sg: int | None = None  # SG training questions (None: every training question)
    sample_seed: int = 0  # which questions: the first n of a seeded shuffle of train
    sg_max_tokens: int = 256  # teacher max_tokens for an SG
    retry: bool = True  # one retry with the extra instruction, then drop (3.4)
    filter: FilterRules = field(default_factory=FilterRules)
    guide_max_new_tokens: int = 256  # 3.5
    answer_max_new_tokens: int = 512  # 3.5
    response_prompt: str = RESPONSE_PROMPT  # needs {question} and {sg}
    answer_prefix: str = ANSWER_PREFIX  # scoring: first candidate after it, else the last (fs_cot rule)
    lisa: LISASettings = field(default_factory=LISASettings)
    response_pretrain: ResponsePretrain = field(default_factory=ResponsePretrain)
    baselines: list[str] = field(default_factory=lambda: ["zero_shot", "zero_shot_cot"])
    teacher_sg_on_test: bool | None = None  # None: only with the reference teacher (free) | true | false
    cot_ft: bool = True  # the CoT fine-tuning baseline
    cot_ft_scales: list[int] = field(default_factory=lambda: [1])  # CoT samples = scale x n_sg (e.g. [1, 10])
    cot_ft_init: str = "response"  # response (fine-tune the response model) | guide (student config, fresh)


BASELINES = ("zero_shot", "zero_shot_cot")


def settings(cfg: Config) -> SGFTSettings:
    """``method.extra`` merged into :class:`SGFTSettings`; a wrong key or value names
    ``method.extra.<key>``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        s: SGFTSettings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SGFTSettings),
                                                              cfg.method.extra))  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"invalid config at `method.extra.{key}`: {str(e).splitlines()[0]}") from None

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"invalid config at `method.extra.{key}`: {msg}")

    if s.prompt not in PROMPTS:
        raise bad("prompt", f"{s.prompt!r} is not one of {tuple(PROMPTS)}")
    if s.guide_prompt not in ("I", "II", "IV"):
        raise bad("guide_prompt", f"{s.guide_prompt!r}: the guide's instruction is zero-shot (I, II or IV)")
    if s.n_sg is not None and s.n_sg < 1:
        raise bad("n_sg", "must be >= 1 (or null for every training question)")
    if not 0 <= s.filter.min_steps <= s.filter.max_steps:
        raise bad("filter", "needs 0 <= min_steps <= max_steps")
    if "{question}" not in s.response_prompt or "{sg}" not in s.response_prompt:
        raise bad("response_prompt", "must contain {question} and {sg}")
    if unknown := sorted(set(s.baselines) - set(BASELINES)):
        raise bad("baselines", f"unknown {unknown}; known: {BASELINES}")
    if s.cot_ft_init not in ("response", "guide"):
        raise bad("cot_ft_init", f"{s.cot_ft_init!r} is not one of response, guide")
    if any(k < 1 for k in s.cot_ft_scales):
        raise bad("cot_ft_scales", "every scale must be >= 1")
    rp = s.response_pretrain
    if rp.mode not in ("auto", "on", "off"):
        raise bad("response_pretrain.mode", f"{rp.mode!r} is not one of auto, on, off")
    if unknown := sorted(set(rp.formats) - {"guided", "zero_shot", "zero_shot_cot"}):
        raise bad("response_pretrain.formats", f"unknown {unknown}")
    if s.lisa.enabled and cfg.student.adapter != "none":
        raise ConfigError("invalid config at `method.extra.lisa.enabled`: LISA is full-parameter "
                          f"fine-tuning, but student.adapter={cfg.student.adapter!r}; set "
                          "student.adapter=none, or method.extra.lisa.enabled=false to train the guide "
                          "with the adapter instead")
    if cfg.method.response is None:
        raise ConfigError("invalid config at `method.response`: SGFT needs a response model (conf/method/"
                          "sgft.yaml sets one; choose another with student@method.response=PRESET)")
    for who, sc in (("student", cfg.student), ("method.response", cfg.method.response)):
        if sc.use_chat_template:
            raise ConfigError(f"invalid config at `{who}.use_chat_template`: SGFT does not render chat "
                              "templates yet")
    return s


# --------------------------------------------------------------------------------------------------------
# Steps 1-2: SG generation and the filter
# --------------------------------------------------------------------------------------------------------
def sg_teacher(cfg: Config, examples: Sequence[Example], rules: FilterRules):
    """The configured teacher; the reference teacher also answers SG prompts (guidance.reference_guidance)."""
    if cfg.teacher.name != "reference":
        return build_teacher(cfg.teacher, examples)
    from ..teachers.reference import ReferenceTeacher

    t = cfg.teacher
    return ReferenceTeacher(examples, error_rate=t.error_rate, diversity=t.diversity, seed=t.seed,
                            extra_kinds=[reference_guidance_kind(examples, rules)])


def sample_questions(train: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded shuffle of train: its first ``n`` are the SG questions, a first k*n the CoT-FT ones."""
    order = list(train)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]


def prompt_examples(s: SGFTSettings, pool: Sequence[Example]) -> list[tuple[str, str]]:
    """(question, SG) examples for the few-shot variants: from config, else reference SG of ``pool``."""
    if s.prompt not in ("III", "V"):
        return []
    if s.prompt_examples:
        return [(e["question"], e["guidance"]) for e in s.prompt_examples]
    shots = []
    for ex in pool:
        steps = reference_guidance(ex, s.filter.max_steps)
        if steps and not check_sg(format_steps(steps), s.filter)[1]:
            shots.append((ex.question, format_steps(steps)))
        if len(shots) == s.n_prompt_examples:
            return shots
    raise ConfigError(f"SG prompt {s.prompt} needs {s.n_prompt_examples} examples: set "
                      "method.extra.prompt_examples=[{question: ..., guidance: ...}] (the benchmark's unused "
                      f"training questions gave {len(shots)} reference SGs)")


def generate_guidance(teacher, cache, questions: Sequence[Example], s: SGFTSettings, *,
                      shots: Sequence[tuple[str, str]] = (), accounting: TeacherAccounting,
                      batch_size: int = 64, progress: bool = True,
                      stage: str = "guidance") -> tuple[list[dict], FilterReport]:
    """Steps 1-2: one SG per question (greedy), filtered; a rejected SG is asked for once more with the
    retry instruction, and dropped if that fails too. Returns one record per question and the counts.
    Teacher traffic is accounted under ``stage`` and ``{stage}_retry``."""
    params = SamplingParams(temperature=0.0, max_tokens=s.sg_max_tokens)
    first = generate(teacher, cache, [sg_prompt(q.question, s.prompt, shots) for q in questions], params,
                     accounting=accounting, stage=stage, batch_size=batch_size, progress=progress)
    report = FilterReport(questions=len(questions))
    records = []
    for q, outs in zip(questions, first):
        text = outs[0].text
        steps, reasons = check_sg(text, s.filter)
        report.rejections_first.update(reasons)
        records.append({"example_id": q.id, "question": q.question, "answer": q.answer, "first": text,
                        "first_reasons": reasons, "retry": None, "retry_reasons": None,
                        "guidance": None if reasons else format_steps(steps)})
        report.passed_first += not reasons
    todo = [r for r in records if r["first_reasons"]]
    if s.retry and todo:
        retry_prompts = [sg_prompt(r["question"], s.prompt, shots, retry=True) for r in todo]
        second = generate(teacher, cache, retry_prompts, params, accounting=accounting,
                          stage=f"{stage}_retry", batch_size=batch_size, progress=progress)
        report.retried = len(todo)
        for r, outs in zip(todo, second):
            steps, reasons = check_sg(outs[0].text, s.filter)
            report.rejections_retry.update(reasons)
            r.update(retry=outs[0].text, retry_reasons=reasons,
                     guidance=None if reasons else format_steps(steps))
            report.passed_retry += not reasons
    report.dropped = report.questions - report.kept
    return records, report


def guidance_pairs(records: Sequence[dict], family: str, prompt: str = "IV") -> list[Pair]:
    """The SG dataset (question -> guidance) the guide is fine-tuned on; served by data.CoTDataModule, so
    the loss covers the SG tokens only (the instruction and question are masked, methods.md 3.8)."""
    sp = " " if family == "decoder" else ""  # decoder labels start with one space (Fine-tune-CoT convention)
    return [Pair(sg_prompt(r["question"], prompt), sp + r["guidance"], r["example_id"], "teacher_sg")
            for r in records if r.get("guidance")]


def sg_datamodule(guide, pairs: Sequence[Pair], batch_size: int, seed: int = 0, num_workers: int = 0):
    """The SG DataModule: :func:`guidance_pairs` tokenised for the guide (data.CoTDataModule: prompt masked,
    SG + EOS as the label, shuffled batches); no eval sets, the guide is judged by its SG at step 4."""
    from ..data.datamodules import CoTDataModule

    return CoTDataModule(guide, pairs, [], [], batch_size=batch_size, num_workers=num_workers, seed=seed)


# --------------------------------------------------------------------------------------------------------
# Step 0 (embedded tier): the response model
# --------------------------------------------------------------------------------------------------------
def response_pool(cfg: Config, splits: Splits, rp: ResponsePretrain) -> list[Example]:
    """Embedded problems for the response model, none of them a benchmark question (train, val or test)."""
    from ..benchmarks.embedded import generate_examples

    b = cfg.benchmark
    if b.source != "embedded" or b.generator is None:
        raise ConfigError("method.extra.response_pretrain: a tiny response model is pre-trained on embedded "
                          f"problems, but benchmark {b.name} is not embedded; use a pretrained response "
                          "model "
                          "(student@method.response=hf method.response.name_or_path=...) or "
                          "method.extra.response_pretrain.mode=off")
    difficulties = rp.difficulties or sorted({max(1, b.difficulty - 1), b.difficulty, b.difficulty + 1})
    taken = {ex.question for ex in (*splits.train, *splits.val, *splits.test)}
    pool: list[Example] = []
    for j, d in enumerate(difficulties):
        want = rp.n_questions // len(difficulties) + (j < rp.n_questions % len(difficulties))
        drawn = generate_examples(b.generator, want + len(taken) // 4 + 20, d, rp.pool_seed + b.data_seed,
                                  id_prefix=f"sgft_response_pool:d{d}:")
        pool += [ex for ex in drawn if ex.question not in taken][:want]
    return pool


def response_pretraining_pairs(pool: Sequence[Example], rp: ResponsePretrain, template: str, family: str,
                               seed: int) -> list[Pair]:
    """Each pool question in one format, drawn with ``rp.formats`` weights: guided (reference SG -> one
    worked line per SG step + 'The answer is X.'), zero_shot (-> the answer) or zero_shot_cot (stage 1 -> the
    same work without the step labels, stage 2 -> the answer). Every baseline prompt is thus in the model's
    repertoire, and guided and unguided answers do the same work (guidance.guided_solution,
    guidance.worked_solution)."""
    names, weights = zip(*[(k, v) for k, v in rp.formats.items() if v > 0])
    rng = random.Random(f"sgft-response-formats:{seed}")
    pairs = []
    for ex in pool:
        fmt = rng.choices(names, weights)[0]
        if fmt == "guided":
            sg = format_steps(reference_guidance(ex) or [])
            prompt = response_prompt(ex.question, sg, template)
            pairs.append(Pair(prompt, guided_solution(ex), ex.id, "guided"))
        elif fmt == "zero_shot":
            pairs.append(Pair(student_input("zs", ex.question, family), f" {ex.answer}", ex.id, "zero_shot"))
        else:
            rationale = worked_solution(ex)
            stage1 = zs_cot_stage1(ex.question.strip())
            pairs.append(Pair(stage1, rationale, ex.id, "zero_shot_cot:1"))
            pairs.append(Pair(zs_cot_stage2(stage1, rationale), f" {ex.answer}.", ex.id, "zero_shot_cot:2"))
    return pairs


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_response(cfg: Config, s: SGFTSettings, splits: Splits) -> tuple[Path, dict]:
    """Pre-train the tiny response model once per (its config, pool, formats, seed); return its dir (holding
    ``tokenizer/`` and ``init_model/``, which build_student loads as the model's starting point) and info."""
    import lightning.pytorch as pl

    from ..students.build import build_student, count_parameters
    from ..training import fit

    rc = replace(cfg.method.response, adapter="none")  # pre-training is full fine-tuning
    rp, b = s.response_pretrain, cfg.benchmark
    identity = {"response": asdict(rc), "pretrain": asdict(rp), "seed": cfg.seed,
                "template": s.response_prompt,
                "benchmark": [b.name, b.generator, b.difficulty, b.data_seed, b.n_train, b.n_val, b.n_test],
                "sg": SG_KIND_NAME, "version": RESPONSE_FORMAT_VERSION}
    work = Path(cfg.paths.cache_dir) / "sgft_response" / _key(identity)
    done = work / "done.json"
    if done.is_file():
        return work, {**json.loads(done.read_text()), "reused": True}
    t0 = time.time()
    pool = response_pool(cfg, splits, rp)
    pairs = response_pretraining_pairs(pool, rp, s.response_prompt, rc.family, cfg.seed)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "identity.json", identity)
    write_jsonl(work / "train.jsonl", (p.to_dict() for p in pairs))
    seed_everything(cfg.seed)
    student = build_student(rc, corpus=[p.input + p.label for p in pairs], work_dir=work)
    tcfg = replace(cfg.trainer, max_epochs=rp.max_epochs, batch_size=rp.batch_size, lr=rp.lr)
    fit(replace(cfg, trainer=tcfg, student=rc), student, pairs, {}, _spec(splits.task, "zs", 1, 1),
        RunPaths(work / "train"), job_type="sgft_response_pretrain", eval_callback=pl.Callback())
    student.model.save_pretrained(work / "init_model")  # build_student loads it as this model's start
    _, total = count_parameters(student.model)
    info = {"dir": str(work), "pool_questions": len(pool), "samples": len(pairs), "parameters": total,
            "difficulties": sorted({ex.meta["difficulty"] for ex in pool}),
            "format_questions": {f: len({p.example_id for p in pairs if p.source.split(":")[0] == f})
                                 for f in rp.formats},
            "epochs": rp.max_epochs, "seconds": round(time.time() - t0, 2)}
    write_json(done, info)
    return work, {**info, "reused": False}


def load_response(cfg: Config, s: SGFTSettings, splits: Splits,
                  paths: RunPaths) -> tuple[Any, dict, Path | None]:
    """The response model for inference (frozen), its info and its pre-trained dir (None: not pre-trained)."""
    from ..students.build import build_student, count_parameters

    rc = cfg.method.response
    assert rc is not None
    tiny = rc.name_or_path is None
    mode = s.response_pretrain.mode
    if not tiny and mode == "on":
        raise ConfigError("method.extra.response_pretrain.mode=on pre-trains only tiny response models "
                          f"(method.response.name_or_path={rc.name_or_path!r})")
    infer_cfg = replace(rc, adapter="none" if rc.adapter == "lora" else rc.adapter)  # no fresh adapter to run
    work: Path | None = None
    if tiny and mode != "off":
        work, info = pretrain_response(cfg, s, splits)
        seed_everything(cfg.seed)
        student = build_student(infer_cfg, corpus=None, work_dir=work)
    else:
        seed_everything(cfg.seed)
        corpus = [ex.question for ex in (*splits.train, *splits.test)] + [s.response_prompt] if tiny else None
        student = build_student(infer_cfg, corpus=corpus, work_dir=paths.run_dir / "response" / "student")
        info = {"pretrained": False, **({"note": "random init: knows nothing"} if tiny else {})}
    _, total = count_parameters(student.model)
    return student, {"name": rc.name, "model": rc.name_or_path or rc.name, "parameters": total, **info}, work


# --------------------------------------------------------------------------------------------------------
# Steps 3-5: guide training, collaborative inference, baselines
# --------------------------------------------------------------------------------------------------------
def _spec(task: str, template: str, max_new_tokens: int, batch_size: int,
          prefix: str | None = None) -> EvalSpec:
    return EvalSpec(task=task, template=template, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    prefix=prefix)


def _complete(student, prompts: list[str], max_new_tokens: int, cfg: Config) -> list[str]:
    from ..students.generation import generate as student_generate

    return student_generate(student.model, student.tokenizer, student.family, prompts,
                            max_new_tokens=max_new_tokens, batch_size=cfg.trainer.eval_batch_size,
                            progress=cfg.trainer.enable_progress_bar,
                            max_input_tokens=student.cfg.max_input_tokens)


def train_guide(cfg: Config, s: SGFTSettings, pairs: list[Pair], task: str, paths: RunPaths):
    """Step 3: fine-tune the guide (cfg.student) on the SG pairs, with LISA unless disabled."""
    import lightning.pytorch as pl

    from ..students.build import build_student, count_parameters
    from ..training import fit

    seed_everything(cfg.seed)
    guide = build_student(cfg.student, corpus=[p.input + p.label for p in pairs], work_dir=paths.student_dir)
    trainable, total = count_parameters(guide.model)
    callbacks = []
    if s.lisa.enabled:
        from ..students.lisa import LISACallback

        callbacks.append(LISACallback(s.lisa.layers, s.lisa.interval, seed=cfg.seed))
    dm = sg_datamodule(guide, pairs, cfg.trainer.batch_size, cfg.seed, cfg.trainer.num_workers)
    outcome = fit(cfg, guide, pairs, {}, _spec(task, "zs", 1, 1), paths, job_type="sgft_guide", datamodule=dm,
                  eval_callback=pl.Callback(), callbacks=callbacks)
    info = {"parameters": {"trainable": trainable, "total": total},
            "train_time_s": round(outcome.train_time_s, 2),
            "resumed_from_checkpoint": outcome.resumed_from_checkpoint, "n_train_pairs": len(pairs),
            "training": f"LISA (gamma={s.lisa.layers}, K={s.lisa.interval})" if s.lisa.enabled
            else f"adapter={cfg.student.adapter}"}
    if callbacks:
        info["lisa_draws"] = len(callbacks[0].history)
    return guide, info


def guide_writes_sg(guide, questions: Sequence[Example], s: SGFTSettings,
                    cfg: Config) -> tuple[list[str], dict]:
    """Step 4a: the guide's SG of each question (as Step lines) and how often it passes the filter."""
    prompts = [sg_prompt(q.question, s.guide_prompt) for q in questions]
    raw = _complete(guide, prompts, s.guide_max_new_tokens, cfg)
    sgs, report = [], FilterReport(questions=len(questions))
    for text in raw:
        steps, reasons = check_sg(text, s.filter)
        report.rejections_first.update(reasons)
        report.passed_first += not reasons
        sgs.append(format_steps(steps) if steps else text.strip())
    d = report.to_dict()
    quality = {"filter_pass_rate": d["pass_rate"], "rejections": d["rejections_first_attempt"],
               "mean_steps": round(sum(s_.count("Step ") for s_ in sgs) / max(1, len(sgs)), 2)}
    return sgs, quality


def answer_with_guidance(response, examples: Sequence[Example], sgs: Sequence[str], s: SGFTSettings,
                         task: str, cfg: Config, split: str = "test") -> list[dict]:
    """Step 4b: the response model answers from question + SG; fs_cot scoring ('The answer is')."""
    prompts = [response_prompt(ex.question, sg, s.response_prompt) for ex, sg in zip(examples, sgs)]
    completions = _complete(response, prompts, s.answer_max_new_tokens, cfg)
    spec = _spec(task, "fs_cot", s.answer_max_new_tokens, cfg.trainer.eval_batch_size, prefix=s.answer_prefix)
    return [{**row, "guidance": sg} for row, sg in zip(score_rows(examples, completions, spec, split), sgs)]


def response_alone(response, examples: Sequence[Example], kind: str, task: str, cfg: Config) -> list[dict]:
    """Step 5: the response model without guidance, prompted and scored as methods/baselines.py does
    (methods.md 5: zs scored with no prefix; zs-CoT's stage-2 completion with the zs_cot rule)."""
    m, bs = cfg.method, cfg.trainer.eval_batch_size
    if kind == "zero_shot":
        prompts = [student_input("zs", ex.question, response.family) for ex in examples]
        return score_rows(examples, _complete(response, prompts, response.cfg.max_new_tokens, cfg),
                          _spec(task, "zs", response.cfg.max_new_tokens, bs), "test")
    if response.family != "decoder":
        raise ConfigError("zero_shot_cot runs on decoder-only response models (methods.md 5); drop it from "
                          "method.extra.baselines")
    stage1 = [zs_cot_stage1(ex.question.strip()) for ex in examples]
    rationales = _complete(response, stage1, m.rationale_max_tokens, cfg)
    stage2 = [zs_cot_stage2(p, r) for p, r in zip(stage1, rationales)]
    rows = score_rows(examples, _complete(response, stage2, m.answer_max_tokens, cfg),
                      _spec(task, "zs_cot", m.answer_max_tokens, bs), "test")
    return [{**row, "rationale": r} for row, r in zip(rows, rationales)]


def cot_plan(n_samples: int, n_train: int) -> tuple[int, int]:
    """(questions, rationales per question) for ``n_samples`` teacher CoT samples: one per question while
    questions last, then D = ceil(n / |train|) per question at T > 0 (methods.md 3.8: the ~30k CoT baseline
    is 4 samples per GSM8K train question)."""
    questions = min(n_samples, n_train)
    return questions, -(-n_samples // questions)


def cot_fine_tune(cfg: Config, s: SGFTSettings, teacher, cache, questions: Sequence[Example],
                  test: Sequence[Example], task: str, response_dir: Path | None, paths: RunPaths,
                  accounting: TeacherAccounting, per_question: int = 1) -> dict:
    """Step 5: Fine-tune-CoT on ``questions`` (``per_question`` teacher rationales each, T=diverse_temperature
    when > 1; correctness filter; ft_cot_token), starting from the response model (default; the paper's
    CoT-FT row fine-tunes the same base model) or from a fresh student of the guide's config. Evaluated once,
    after the last epoch, on the same test questions."""
    from ..students.build import build_student
    from ..training import fit

    m = cfg.method
    temperature = 0.0 if per_question == 1 else m.diverse_temperature
    samples = teacher_rationales(teacher, cache, questions, task, n_samples=per_question,
                                 temperature=temperature, rationale_max_tokens=m.rationale_max_tokens,
                                 answer_max_tokens=m.answer_max_tokens,
                                 accounting=accounting, batch_size=m.teacher_batch_size,
                                 progress=cfg.trainer.enable_progress_bar)
    kept, report = correctness_filter(samples)
    out: dict[str, Any] = {"n_train_questions": len(questions), "rationales_per_question": per_question,
                           "n_train_samples": len(kept), "filter": report}
    if not kept:
        return {**out, "skipped": "the teacher's rationales were all filtered out (no CoT samples)"}
    init = s.cot_ft_init
    scfg: StudentConfig = cfg.method.response if init == "response" else cfg.student  # type: ignore[assignment]
    family = scfg.family
    pairs = [Pair(student_input("ft_cot_token", x.question, family),
                  student_label("ft_cot_token", x.answer, family, rationale=x.reasoning_completion),
                  x.example_id, f"teacher:{x.sample_index}") for x in kept]
    write_jsonl(paths.data_dir / "train.jsonl", (p.to_dict() for p in pairs))
    seed_everything(cfg.seed)
    if init == "response" and response_dir is not None:
        student = build_student(scfg, corpus=None, work_dir=response_dir)  # the pre-trained response model
    else:  # a checkpoint (adapter as configured), or a tiny model from scratch (Fine-tune-CoT's setting)
        corpus = [p.input + p.label for p in pairs] if scfg.name_or_path is None else None
        student = build_student(scfg, corpus=corpus, work_dir=paths.student_dir)
    tc = cfg.trainer
    ccfg = replace(cfg, student=scfg, trainer=replace(tc, eval_every_n_epochs=max(1, tc.max_epochs)))
    spec = _spec(task, "ft_cot_token", s.answer_max_new_tokens, tc.eval_batch_size)
    outcome = fit(ccfg, student, pairs, {"test": list(test)}, spec, paths, job_type="sgft_cot_ft")
    metrics = summarize(epoch_history(paths))
    return {**out, "init": init, "accuracy": metrics.get("accuracy"), "metrics": metrics,
            "train_time_s": round(outcome.train_time_s, 2)}


# --------------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------------
def run(cfg: Config, run_dir: str | Path) -> dict:
    s = settings(cfg)  # method.extra checked before anything is read or written
    ctx = RunContext(cfg, run_dir)
    paths = ctx.paths
    splits = load_benchmark(cfg.benchmark, cfg.paths.data_dir)  # nothing is written before the data loads
    ctx.save_config()
    seed_everything(cfg.seed)
    if cfg.trainer.threads:
        import torch

        torch.set_num_threads(cfg.trainer.threads)
    task, progress = splits.task, cfg.trainer.enable_progress_bar
    cap = cfg.trainer.max_eval_examples
    test = splits.test if cap is None else splits.test[:cap]
    timings: dict[str, float] = {}
    clock = time.time()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.time() - clock, 2)
        clock = time.time()

    # Step 0: the response model (pre-trained once on a disjoint embedded pool in the embedded tier).
    response, response_info, response_dir = load_response(cfg, s, splits, paths)
    lap("response_model")

    # Steps 1-2: SG generation by the teacher, filtered (one retry, then drop).
    ordered = sample_questions(splits.train, None, s.sample_seed)
    n_sg = len(ordered) if s.n_sg is None else s.n_sg
    if n_sg > len(ordered):
        raise ConfigError(f"method.extra.n_sg={n_sg} > {len(ordered)} training questions")
    questions = ordered[:n_sg]
    accounting = TeacherAccounting()
    teacher = sg_teacher(cfg, [*splits.train, *splits.val, *splits.test], s.filter)
    cache = ctx.teacher_cache()
    shots = prompt_examples(s, ordered[n_sg:] or ordered)
    records, report = generate_guidance(teacher, cache, questions, s, shots=shots, accounting=accounting,
                                        batch_size=cfg.method.teacher_batch_size, progress=progress)
    write_jsonl(paths.teacher_dir / "guidance.jsonl", records)
    write_json(paths.teacher_dir / "filter_report.json", report.to_dict())
    lap("sg_generation")

    # Step 3: guide-model fine-tuning on (question -> SG).
    guide_paths = RunPaths(paths.run_dir / "guide")
    pairs = guidance_pairs(records, cfg.student.family, s.guide_prompt)
    if not pairs:
        raise RuntimeError(f"the SG filter kept nothing (see {paths.teacher_dir / 'filter_report.json'})")
    write_jsonl(guide_paths.data_dir / "train.jsonl", (p.to_dict() for p in pairs))
    guide, guide_info = train_guide(cfg, s, pairs, task, guide_paths)
    lap("guide_training")

    # Step 4: collaborative inference.
    guide_sgs, guide_info["test_sg"] = guide_writes_sg(guide, test, s, cfg)
    guided = answer_with_guidance(response, test, guide_sgs, s, task, cfg)
    out_dir = paths.run_dir / "response"
    write_jsonl(out_dir / "guided.jsonl", guided)
    metrics: dict[str, Any] = {"accuracy": accuracy(guided), "guided": accuracy(guided), "response_alone": {}}
    extra: dict[str, Any] = {}
    lap("collaborative_inference")

    # Step 5: baselines.
    for kind in s.baselines:
        rows = response_alone(response, test, kind, task, cfg)
        write_jsonl(out_dir / f"{kind}.jsonl", rows)
        metrics["response_alone"][kind] = accuracy(rows)
    if s.teacher_sg_on_test or (s.teacher_sg_on_test is None and cfg.teacher.name == "reference"):
        # The same filter and retry as the training SG (a draft may state the answer); a dropped
        # question gets an empty guidance.
        test_records, test_report = generate_guidance(
            teacher, cache, test, s, shots=shots, accounting=accounting,
            batch_size=cfg.method.teacher_batch_size, progress=progress, stage="guidance_test")
        teacher_sgs = [r["guidance"] or "" for r in test_records]
        rows = answer_with_guidance(response, test, teacher_sgs, s, task, cfg)
        write_jsonl(out_dir / "guided_teacher_sg.jsonl", rows)
        metrics["guided_teacher_sg"] = accuracy(rows)
        extra["teacher_sg_on_test"] = {k: test_report.to_dict()[k] for k in ("questions", "kept", "dropped")}
        guide_info["test_sg"]["same_as_teacher_sg"] = round(
            sum(g == t for g, t in zip(guide_sgs, teacher_sgs)) / max(1, len(test)), 4)
    lap("response_baselines")
    cot: dict[str, Any] = {}
    if s.cot_ft:
        for scale in s.cot_ft_scales:
            n_q, per_q = cot_plan(n_sg * scale, len(ordered))
            cot[f"x{scale}"] = cot_fine_tune(cfg, s, teacher, cache, ordered[:n_q], test, task, response_dir,
                                             RunPaths(paths.run_dir / f"cot_ft_x{scale}"), accounting, per_q)
        metrics["cot_ft"] = {k: v.get("accuracy") for k, v in cot.items()}
    cache.close()
    lap("cot_ft")

    # Step 6: results.
    totals = accounting.to_dict()
    results = ctx.write_results(
        metrics=metrics, filter=report.to_dict(), n_sg_questions=n_sg, n_sg_examples=len(pairs),
        n_test=len(test),
        sg_prompt=s.prompt, guide=guide_info, response=response_info, cot_ft=cot,
        teacher_calls=totals["total"]["teacher_calls"], cache_hits=totals["total"]["cache_hits"],
        teacher_accounting=totals, timings_s=timings, settings=asdict(s), **extra,
    )
    if cfg.print_table:
        print_sgft_table(results)
    return results


def print_sgft_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    m, f = results["metrics"], results["filter"]
    t = Table(title=f"SGFT on {results['benchmark']}: guide {results['student']} -> response "
                    f"{results['response']['name']} (seed {results['seed']}, n_test {results['n_test']})")
    t.add_column("")
    t.add_column("test accuracy", justify="right")

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    t.add_row("response + guide's SG (SGFT)", pct(m["guided"]))
    for k, v in m.get("response_alone", {}).items():
        t.add_row(f"response alone, {k}", pct(v))
    if "guided_teacher_sg" in m:
        t.add_row("response + teacher's SG (upper bound)", pct(m["guided_teacher_sg"]))
    for k, v in m.get("cot_ft", {}).items():
        t.add_row(f"CoT fine-tuning ({k} questions)", pct(v))
    t.add_row("SG kept / questions",
              f"{f['kept']}/{f['questions']} (retried {f['retried']}, dropped {f['dropped']})")
    t.add_row("guide SG passing the filter", pct(results["guide"]["test_sg"]["filter_pass_rate"]))
    t.add_row("wall time", f"{results['wall_time_s']:.1f} s")
    Console().print(t)
