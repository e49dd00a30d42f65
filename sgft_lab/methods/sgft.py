"""SGFT: Solution-Guidance Fine-Tuning (Bi et al., COLING 2025, arXiv 2412.09906; methods.md section 3).

    0. (embedded tier only) The response model: a tiny random-init student knows nothing, so it is first
       pre-trained, once, on a DIFFERENT pool of embedded problems to follow guidance and to answer plainly
       (the analogue of an instruction-tuned LLM), then frozen. Cached under paths.cache_dir by its config.
    1. SG generation: the teacher writes a Solution Guidance for N training questions (Prompt IV default).
    2. Filter (3.4): 2-6 steps, no calculation, no numeric result, no final answer (rules by the task's answer
       kind, guidance.py); one retry with the extra instruction, then drop. Counts by reason to results.json.
    3. Guide fine-tuning on  {SG prompt}\\n\\n{question}  ->  Step 1: ...  (LISA by default; LoRA/QLoRA via
       student.adapter with method.lisa.enabled=false, a documented deviation).
    4. Collaborative inference: the trained guide writes the SG of each test question; the response model
       answers from  Question: {q}\\nSolution Guidance:\\n{sg}\\nAnswer:  scored with prefix 'The answer is'.
    5. Baselines: the response model alone (zero-shot, zero-shot-CoT) and with the teacher's SG of the test
       questions (reference teacher: an upper bound on the guide); CoT fine-tuning on as many teacher CoT
       samples as SG (x cot_ft_scales), and on cot_ft_per_question rationales of every question (3.8).

The ablation of 3.7 (guide trained? x solver CoT-trained?): ``train_guide=false`` skips steps 1-3 (the guide
model writes SG as it is); ``solver=cot_ft`` trains a step-5 CoT fine-tuning first and lets it answer in step 4.

Result entries (systems): ``student`` (SGFT: the trained guide's SG, the plain response model; the ablation's
other cells ``untrained_guide``, ``sg_guide_cot_solver``, ``untrained_guide_cot_solver``),
``response_zero_shot``, ``response_zero_shot_cot``, ``teacher_sg``, ``cot_ft_x{k}``, ``cot_ft``; with
``method.transfer_response`` the same guide's SG on a second response model: ``transfer_student``,
``transfer_response_zero_shot``, ``transfer_response_zero_shot_cot``, ``transfer_teacher_sg``. With
``method.eval_split=val`` (tuning) steps 4-5 read the val split and CoT fine-tuning is refused. Every choice
the paper leaves open is a field of config.SGFTConfig and is listed in experiments/sgft/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from .. import prompting
from ..benchmarks.embedded import GENERATORS
from ..benchmarks.record import Example
from ..config import Adapter, ConfigError
from ..data.sg import cot_plan  # noqa: F401  (plan.py imports it from here)
from ..data.sg import cot_ft_runs, guidance_pairs, pretrain_response, prompt_examples, sample_questions
from ..evaluation import EvalSpec, score_rows, student_spec
from ..guidance import FilterReport, check_sg, format_steps, response_prompt, rules_for, sg_prompt
from ..io import write_json, write_jsonl
from ..rationales import correctness_filter, cot_pairs, teacher_rationales
from ..run import RunContext, model_info, rows_entry, seed_everything
from ..teachers import SamplingParams
from ..teachers.reference_sg import reference_guidance_kind


def check(cfg, splits) -> None:
    """Before anything is written: enough training questions for the SG set; a tiny response model to
    pre-train needs an embedded benchmark."""
    s = cfg.method
    if s.n_sg is not None and s.n_sg > len(splits.train):
        raise ConfigError(f"invalid config at `method.n_sg`: {s.n_sg}; allowed: <= the {len(splits.train)} "
                          "training questions (or null for all of them)")
    tiny = s.response.name_or_path is None
    if tiny and s.response_pretrain.mode != "off" and cfg.benchmark.source != "embedded":
        raise ConfigError("invalid config at `method.response_pretrain.mode`: a tiny response model is "
                          f"pre-trained on embedded problems, but benchmark {cfg.benchmark.name} is not embedded; "
                          "allowed: a pretrained response model (student@method.response=hf "
                          "method.response.name_or_path=...) or method.response_pretrain.mode=off")
    if s.solver == "cot_ft" and s.cot_ft_init != "response":
        raise ConfigError("invalid config at `method.cot_ft_init`: method.solver=cot_ft answers with the CoT "
                          "fine-tuned response model; allowed: response")
    if s.response_pool_generator is not None and (s.response_pool_generator not in GENERATORS or GENERATORS[
            s.response_pool_generator].task != cfg.benchmark.task):
        raise ConfigError(f"invalid config at `method.response_pool_generator`: {s.response_pool_generator!r}; "
                          f"allowed: null or an embedded generator scored as {cfg.benchmark.task!r}")
    if s.eval_split != "test" and cot_ft_runs(s, 1, 1):
        raise ConfigError("invalid config at `method.eval_split`: val (tuning) with a CoT fine-tuning, which "
                          "reads the test split; allowed: method.cot_ft=false and method.solver=response")
    t = s.transfer_response
    if t is not None and t.name_or_path is None and s.response_pretrain.mode != "off" \
            and cfg.benchmark.source != "embedded":
        raise ConfigError("invalid config at `method.transfer_response`: a tiny transfer response model is "
                          f"pre-trained on embedded problems, but benchmark {cfg.benchmark.name} is not embedded; "
                          "allowed: a pretrained one (method.transfer_response.name_or_path=...) or null")
    if s.response.name_or_path is not None and s.response_pretrain.mode == "on":
        raise ConfigError("invalid config at `method.response_pretrain.mode`: 'on' pre-trains only tiny "
                          f"response models (method.response.name_or_path={s.response.name_or_path!r}); "
                          "allowed: auto, off")


def run(ctx: RunContext) -> None:
    # The filter's rules for this task: method.filter.answer_kind=auto takes the benchmark's answer type.
    ctx.cfg = replace(ctx.cfg, method=replace(ctx.cfg.method, filter=rules_for(
        ctx.cfg.method.filter, next(iter(ctx.splits.test or ctx.splits.train)).answer_type)))
    s, paths = ctx.cfg.method, ctx.paths
    ctx.details.update(sg_prompt=s.prompt, filter_rules=asdict(s.filter), solver={"kind": s.solver})
    # Step 0: the response model (pre-trained once on a disjoint embedded pool in the embedded tier).
    pretrain_free_first(ctx)
    response, response_dir = load_response(ctx)
    ctx.lap("response_model")

    # Steps 1-3: SG by the teacher, filtered (one retry, then drop); the guide fine-tuned on (question -> SG).
    ordered = sample_questions(ctx.splits.train, None, s.sample_seed)
    n_sg = len(ordered) if s.n_sg is None else s.n_sg
    ctx.teacher(kinds=[reference_guidance_kind([*ctx.splits.train, *ctx.splits.val, *ctx.splits.test],
                                               s.filter)])
    shots = prompt_examples(s, ordered[n_sg:] or ordered)
    guide = sg_and_guide(ctx, ordered[:n_sg], shots) if s.train_guide else untrained_guide(ctx, ordered[:n_sg])

    # The ablation's CoT-trained solver (3.7): the first CoT fine-tuning is trained now and answers in step 4.
    cot_runs = cot_ft_runs(s, n_sg, len(ordered))
    solver = response if s.solver == "response" else cot_solver(ctx, ordered, cot_runs.pop(0), response,
                                                                response_dir)

    # Step 4: collaborative inference on the test questions.
    test = ctx.eval_sets((s.eval_split,))[s.eval_split]  # val: tuning runs (method.eval_split)
    guide_sgs, raw = guide_writes_sg(ctx, guide, test)
    guided = [{**row, "guide_output": text} for row, text in
              zip(answer_with_guidance(ctx, solver, test, guide_sgs), raw)]
    write_jsonl(paths.response_rows("guided"), guided)
    add_entry(ctx, guided, guided_system(s))
    ctx.metrics = {"accuracy": ctx.entries[-1].accuracy}
    ctx.lap("collaborative_inference")

    # Step 5: baselines.
    response_alone(ctx, response, test)
    teacher_sgs = None
    if s.teacher_sg_on_test or (s.teacher_sg_on_test is None and ctx.cfg.teacher.name == "reference"):
        teacher_sgs = with_teacher_sg(ctx, response, test, shots, guide_sgs)
    ctx.lap("response_baselines")
    if s.transfer_response is not None:
        transfer(ctx, test, guide_sgs, teacher_sgs)
        ctx.lap("transfer")
    for system, n_q, per_q in cot_runs:
        cot_fine_tune(ctx, ordered, n_q, per_q, response_dir, system)
    ctx.lap("cot_ft")
    ctx.data.update(n_test=len(test))


def add_entry(ctx: RunContext, rows: Sequence[dict], system: str) -> None:
    """One result entry for ``rows``, evaluated once on method.eval_split."""
    ctx.add([rows_entry(rows, system=system, split=ctx.cfg.method.eval_split, protocol=ctx.cfg.protocol)])


def guided_system(s) -> str:
    """The guided answers' result entry: ``student`` for SGFT itself (trained guide, plain response model);
    the ablation's other cells (3.7) name their guide and solver."""
    if s.train_guide and s.solver == "response":
        return "student"
    return ("sg_guide" if s.train_guide else "untrained_guide") + ("_cot_solver" if s.solver == "cot_ft" else "")


# --------------------------------------------------------------------------------------------------------
# Steps 1-2: SG generation and the filter; steps 1-3 together, or the ablation's untrained guide


def generate_guidance(ctx: RunContext, questions: Sequence[Example], shots: Sequence[tuple[str, str]] = (),
                      stage: str = "guidance") -> tuple[list[dict], FilterReport]:
    """Steps 1-2: one SG per question (greedy), filtered; a rejected SG is asked for once more with the
    retry instruction, and dropped if that fails too. Returns one record per question and the counts.
    Teacher traffic is accounted under ``stage`` and ``{stage}_retry``."""
    s = ctx.cfg.method
    params = SamplingParams(temperature=0.0, max_tokens=s.sg_max_tokens)
    first = ctx.generate([sg_prompt(q.question, s.prompt, shots) for q in questions], params, stage=stage)
    report = FilterReport(questions=len(questions))
    records = []
    for q, outs in zip(questions, first):
        steps, reasons = check_sg(outs[0].text, s.filter)
        report.rejections_first.update(reasons)
        records.append({"example_id": q.id, "question": q.question, "answer": q.answer, "first": outs[0].text,
                        "first_reasons": reasons, "retry": None, "retry_reasons": None,
                        "guidance": None if reasons else format_steps(steps)})
        report.passed_first += not reasons
    todo = [r for r in records if r["first_reasons"]]
    if s.retry and todo:
        second = ctx.generate([sg_prompt(r["question"], s.prompt, shots, retry=True) for r in todo], params,
                              stage=f"{stage}_retry")
        report.retried = len(todo)
        for r, outs in zip(todo, second):
            steps, reasons = check_sg(outs[0].text, s.filter)
            report.rejections_retry.update(reasons)
            r.update(retry=outs[0].text, retry_reasons=reasons, guidance=None if reasons else format_steps(steps))
            report.passed_retry += not reasons
    report.dropped = report.questions - report.kept
    return records, report


def sg_and_guide(ctx: RunContext, questions: Sequence[Example], shots: Sequence[tuple[str, str]]):
    """Steps 1-3: the teacher's SG of ``questions``, filtered, then the guide fine-tuned on them."""
    s, paths = ctx.cfg.method, ctx.paths
    records, report = generate_guidance(ctx, questions, shots)
    write_jsonl(paths.guidance, records)
    write_json(paths.filter_report, report.to_dict())
    ctx.details["filter"] = report.to_dict()
    ctx.lap("sg_generation")
    pairs = guidance_pairs(records, ctx.cfg.student.family.value, s.guide_prompt)
    ctx.require_samples(pairs, {"total": report.questions, "rejected_dropped": report.dropped}, "the SG filter")
    ctx.data.update(n_sg_questions=len(questions), n_sg_examples=len(pairs))
    guide = train_guide(ctx, pairs)
    ctx.lap("guide_training")
    return guide


def untrained_guide(ctx: RunContext, questions: Sequence[Example]):
    """The ablation's untrained guide (3.7): the guide model as it is, asked for SG with the trained guide's
    prompt. A tiny student is random-init (knows nothing); its tokenizer is trained on those prompts."""
    from ..students.build import build_student

    cfg = ctx.cfg
    corpus = [sg_prompt(q.question, cfg.method.guide_prompt) for q in questions] \
        if cfg.student.name_or_path is None else None
    seed_everything(cfg.seed)
    guide = build_student(cfg.student, corpus=corpus, work_dir=ctx.paths.student_dir)
    ctx.models["student"] = model_info(guide)
    ctx.details["guide"] = {"training": "none (untrained guide)"}
    ctx.data.update(n_sg_questions=0, n_sg_examples=0)
    return guide


# --------------------------------------------------------------------------------------------------------
# Step 0: the response model (its embedded-tier pre-training, our departure, is data/sg.py pretrain_response)


def response_models(ctx: RunContext) -> list[tuple]:
    """(config, pre-training seed, results.json key) of the run's response models: method.response, then
    method.transfer_response (seed + transfer_seed_offset) when set."""
    s = ctx.cfg.method
    seed = ctx.cfg.seed if s.response_seed is None else s.response_seed
    out = [(s.response, seed, "response")]
    if s.transfer_response is not None:
        out.append((s.transfer_response, seed + s.transfer_seed_offset, "transfer_response"))
    return out


def pretrain_free_first(ctx: RunContext) -> None:
    """With several tiny response models to pre-train, pre-train each one no concurrent run is pre-training
    (a sweep's jobs then split the work instead of queueing on the first); the rest are loaded (waiting for
    them) when used."""
    models = [m for m in response_models(ctx) if m[0].name_or_path is None]
    if len(models) > 1 and ctx.cfg.method.response_pretrain.mode != "off":
        for rc, seed, key in models:
            pretrain_response(ctx, rc, seed, key, wait=False)


def load_response(ctx: RunContext, rc=None, seed: int | None = None, key: str = "response"):
    """The response model for inference (frozen) and its pre-trained dir (None: not pre-trained).
    ``rc`` / ``seed`` / ``key``: another response model (method.transfer_response), its seed and its name in
    results.json (default: method.response, the run's seed, ``response``)."""
    from ..students.build import build_student

    s = ctx.cfg.method
    if rc is None:
        rc, seed, key = response_models(ctx)[0]
    tiny = rc.name_or_path is None
    mode = s.response_pretrain.mode
    # No fresh adapter to run: a LoRA response model is its base model (QLoRA keeps its 4-bit base).
    infer_cfg = replace(rc, adapter=Adapter.none if rc.adapter is Adapter.lora else rc.adapter)
    work = None
    if tiny and mode != "off":
        work = pretrain_response(ctx, rc, seed, key)
        seed_everything(seed)
        student = build_student(infer_cfg, corpus=None, work_dir=work)
    else:
        seed_everything(seed)
        corpus = [ex.question for ex in (*ctx.splits.train, *ctx.splits.test)] + [s.response_prompt] \
            if tiny else None
        student = build_student(infer_cfg, corpus=corpus, work_dir=ctx.paths.response_dir / (
            "student" if key == "response" else key))
        ctx.details[key] = {"pretrained": False, **({"note": "random init: knows nothing"} if tiny else {})}
    ctx.models[key] = model_info(student)
    return student, work


# --------------------------------------------------------------------------------------------------------
# Steps 3-5: guide training, collaborative inference, baselines


def train_guide(ctx: RunContext, pairs: list):
    """Step 3: fine-tune the guide (cfg.student) on the SG pairs, with LISA unless disabled; the loss covers
    the SG tokens only (the instruction and question are masked)."""
    from ..students.build import build_student
    from ..training import fit

    cfg, s = ctx.cfg, ctx.cfg.method
    guide_paths = ctx.paths.stage("guide")
    write_jsonl(guide_paths.train_data, (p.to_dict() for p in pairs))
    seed_everything(cfg.seed)
    guide = build_student(cfg.student, corpus=[p.input + p.label for p in pairs], work_dir=ctx.paths.student_dir)
    callbacks = lisa_callbacks(s, cfg.student, cfg.seed)
    outcome = fit(cfg, guide, pairs, {}, None, guide_paths, loggers=ctx.fit_loggers(guide_paths, "guide"),
                  callbacks=callbacks)
    ctx.models["student"] = model_info(guide)
    ctx.speed = {**outcome.speed(), "train_time_s": round(outcome.train_time_s, 2)}
    ctx.resumed_from_checkpoint = outcome.resumed_from_checkpoint
    ctx.details["guide"] = {
        "n_train_pairs": len(pairs), "lisa_draws": len(callbacks[0].history) if callbacks else None,
        "training": f"LISA (gamma={s.lisa.layers}, K={s.lisa.interval})" if s.lisa.enabled
        else f"adapter={cfg.student.adapter.value}"}
    return guide


def lisa_callbacks(s, student_cfg, seed: int) -> list:
    """The guide's recipe (3.6): LISA when enabled and the model is fully fine-tuned; else none (its adapter)."""
    if not s.lisa.enabled or student_cfg.adapter is not Adapter.none:
        return []
    from ..students.lisa import LISACallback

    return [LISACallback(s.lisa.layers, s.lisa.interval, seed=seed)]


def guide_writes_sg(ctx: RunContext, guide, questions: Sequence[Example]) -> tuple[list[str], list[str]]:
    """Step 4a: the guide's SG of each question (as Step lines; its raw output too) and how often it passes
    the filter."""
    s = ctx.cfg.method
    raw = guide.generate([sg_prompt(q.question, s.guide_prompt) for q in questions],
                         max_new_tokens=s.guide_max_new_tokens, batch_size=ctx.cfg.trainer.eval_batch_size,
                         progress=ctx.progress, max_input_tokens=guide.cfg.max_input_tokens, label="guide SG")
    sgs, report = [], FilterReport(questions=len(questions))
    for text in raw:
        steps, reasons = check_sg(text, s.filter)
        report.rejections_first.update(reasons)
        report.passed_first += not reasons
        sgs.append(format_steps(steps) if steps else text.strip())
    d = report.to_dict()
    ctx.details.setdefault("guide", {})["test_sg"] = {
        "filter_pass_rate": d["pass_rate"], "rejections": d["rejections_first_attempt"],
        "mean_steps": round(sum(x.count("Step ") for x in sgs) / max(1, len(sgs)), 2)}
    return sgs, raw


def answer_with_guidance(ctx: RunContext, response, examples: Sequence[Example], sgs: Sequence[str]) -> list[dict]:
    """Step 4b: the response model answers from question + SG; fs_cot scoring ('The answer is')."""
    s, bs = ctx.cfg.method, ctx.cfg.trainer.eval_batch_size
    prompts = [response_prompt(ex.question, sg, s.response_prompt) for ex, sg in zip(examples, sgs)]
    completions = response.generate(prompts, max_new_tokens=s.answer_max_new_tokens, batch_size=bs,
                                     progress=ctx.progress, max_input_tokens=response.cfg.max_input_tokens,
                                     label="response")
    spec = EvalSpec(ctx.task, "fs_cot", s.answer_max_new_tokens, bs, prefix=s.answer_prefix)
    rows = score_rows(examples, completions, spec, s.eval_split)
    return [{**row, "guidance": sg} for row, sg in zip(rows, sgs)]


def response_alone(ctx: RunContext, response, test: Sequence[Example], prefix: str = "") -> None:
    """Step 5: the response model without guidance, prompted and scored as the prompting baselines are
    (systems ``{prefix}response_{baseline}``)."""
    s = ctx.cfg.method
    common = {"task": ctx.task, "batch_size": ctx.cfg.trainer.eval_batch_size, "progress": ctx.progress}
    for kind in s.baselines:
        if kind == "zero_shot":
            rows = prompting.zero_shot(response, {s.eval_split: test}, **common)
        elif response.family != "decoder":
            raise ConfigError("invalid config at `method.baselines`: zero_shot_cot runs on decoder-only response "
                              "models (methods.md 5); allowed here: zero_shot")
        else:
            rows = prompting.zero_shot_cot(response, {s.eval_split: test},
                                           rationale_max_tokens=s.rationale_max_tokens,
                                           answer_max_tokens=s.answer_max_tokens, **common)
        write_jsonl(ctx.paths.response_rows(prefix + kind), rows)
        add_entry(ctx, rows, f"{prefix}response_{kind}")


def with_teacher_sg(ctx: RunContext, response, test: Sequence[Example], shots,
                    guide_sgs: Sequence[str]) -> list[str]:
    """Step 5: the response model with the teacher's SG of the test questions (an upper bound on the guide).
    The same filter and retry as the training SG; a dropped question gets an empty guidance. Returns them."""
    records, report = generate_guidance(ctx, test, shots, stage="guidance_test")
    teacher_sgs = [r["guidance"] or "" for r in records]
    rows = answer_with_guidance(ctx, response, test, teacher_sgs)
    write_jsonl(ctx.paths.response_rows("guided_teacher_sg"), rows)
    add_entry(ctx, rows, "teacher_sg")
    ctx.details["teacher_sg_on_test"] = {k: report.to_dict()[k] for k in ("questions", "kept", "dropped")}
    ctx.details["guide"]["test_sg"]["same_as_teacher_sg"] = round(
        sum(g == t for g, t in zip(guide_sgs, teacher_sgs)) / max(1, len(test)), 4)
    return teacher_sgs


def transfer(ctx: RunContext, test: Sequence[Example], guide_sgs: Sequence[str],
             teacher_sgs: Sequence[str] | None) -> None:
    """The same guide's SG given to a second response model, method.transfer_response (pre-trained like the
    first on the embedded tier, with seed + transfer_seed_offset): it never took part in the guide's training
    (no response model does in SGFT), so this measures whether the guidance transfers. Its rows: guided
    (``transfer_student``), alone (``transfer_response_{baseline}``), with the teacher's SG
    (``transfer_teacher_sg``, when the run has it)."""
    other, _ = load_response(ctx, *response_models(ctx)[1])
    rows = answer_with_guidance(ctx, other, test, guide_sgs)
    write_jsonl(ctx.paths.response_rows("transfer_guided"), rows)
    add_entry(ctx, rows, "transfer_student")
    response_alone(ctx, other, test, prefix="transfer_")
    if teacher_sgs is not None:
        rows = answer_with_guidance(ctx, other, test, teacher_sgs)
        write_jsonl(ctx.paths.response_rows("transfer_guided_teacher_sg"), rows)
        add_entry(ctx, rows, "transfer_teacher_sg")


def cot_solver(ctx: RunContext, ordered: Sequence[Example], cot_run: tuple[str, int, int], response,
               response_dir: Path | None):
    """The ablation's CoT-trained solver (3.7): the response model after the CoT fine-tuning ``cot_run`` (a
    step-5 baseline, trained first and recorded as such); how far its weights moved goes to results.json."""
    system, n_q, per_q = cot_run
    solver = cot_fine_tune(ctx, ordered, n_q, per_q, response_dir, system)
    if solver is None:
        ctx.require_samples([], ctx.details["cot_ft"][system]["filter"], "the solver's CoT filter")
    ctx.models["solver"] = model_info(solver)
    ctx.details["solver"].update(stage=system, weight_change_l2=weight_change(response.model, solver.model))
    ctx.lap("solver_cot_ft")
    return solver


def weight_change(before, after) -> float:
    """L2 norm of ``after - before`` over the parameters both models have (same name, same shape; a peft
    wrapper's prefix ignored), plus the norm of LoRA's B matrices (zero at the start)."""
    import torch

    ref = {n.removeprefix("base_model.model."): p for n, p in before.named_parameters()}
    total = 0.0
    with torch.no_grad():
        for name, p in after.named_parameters():
            q = ref.get(name.removeprefix("base_model.model.").replace(".base_layer", ""))
            if "lora_B" in name:
                total += float(p.float().pow(2).sum())
            elif q is not None and q.shape == p.shape:
                total += float((p.float() - q.float().to(p.device)).pow(2).sum())
    return round(total ** 0.5, 6)


def cot_fine_tune(ctx: RunContext, ordered: Sequence[Example], n_q: int, per_q: int, response_dir: Path | None,
                  system: str):
    """Step 5: Fine-tune-CoT on ``per_q`` teacher rationales (T > 0 when several) for each of the first ``n_q``
    questions, correctness-filtered (ft_cot_token), with the guide's recipe (its trainer, and LISA when the
    model is fully fine-tuned: methods.md 3.8), from the response model (default; the paper's CoT-FT row
    fine-tunes the same base model) or from a fresh student of the guide's config; evaluated as the protocol
    says on the same test questions. Returns the trained model (None: no CoT sample passed the filter)."""
    from ..students.build import build_student
    from ..training import train_and_evaluate

    cfg, s = ctx.cfg, ctx.cfg.method
    samples = teacher_rationales(ctx, ordered[:n_q], n_samples=per_q,
                                 temperature=0.0 if per_q == 1 else s.diverse_temperature)
    kept, report = correctness_filter(samples)
    info = {"n_train_questions": n_q, "rationales_per_question": per_q, "n_train_samples": len(kept),
            "filter": report, "init": s.cot_ft_init}
    ctx.details.setdefault("cot_ft", {})[system] = info
    if not kept:
        info["skipped"] = "the teacher's rationales were all filtered out (no CoT samples)"
        return None
    scfg = s.response if s.cot_ft_init == "response" else cfg.student
    pairs = cot_pairs(kept, "ft_cot_token", scfg.family.value)
    paths = ctx.paths.stage(system)
    write_jsonl(paths.train_data, (p.to_dict() for p in pairs))
    seed_everything(cfg.seed)
    if s.cot_ft_init == "response" and response_dir is not None:
        student = build_student(scfg, corpus=None, work_dir=response_dir)  # the pre-trained response model
    else:  # a checkpoint (adapter as configured), or a tiny model from scratch (Fine-tune-CoT's setting)
        corpus = [p.input + p.label for p in pairs] if scfg.name_or_path is None else None
        student = build_student(scfg, corpus=corpus, work_dir=paths.student_dir)
    spec = student_spec(ctx, "ft_cot_token", scfg)
    stage = train_and_evaluate(ctx, student, pairs, paths, spec, cfg=replace(cfg, student=scfg), stage=system,
                               system=system, callbacks=lisa_callbacks(s, scfg, cfg.seed))
    info.update(accuracy=stage["metrics"].get("accuracy"), train_time_s=round(stage["outcome"].train_time_s, 2))
    return student
