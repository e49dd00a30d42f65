"""How FDD's round students are asked and scored, in domain and out of domain (methods.md 4.2-4.4).
Used by sgft_lab/methods/fdd.py; every choice here is ours and listed in experiments/fdd/README.md.

Reads. A round's selected student is read in its format: CoT (``ftcot``: Fine-tune-CoT's ``ft_cot_token``
rule) or PoT (``fdd_numeric``: its program executed, ``ans`` within 1e-4 of the gold). rationale=mixed has
two reads of the same model: the PoT one (the primary: feedback, dev selection, the headline) and a CoT one
(system ``cot``, or ``no_feedback_cot`` for the control), each input naming its format by its trigger.

Out of domain (methods.md 4.3). Every read is repeated on each set of ``method.ood_benchmarks`` (the test
split; ``ood_split=all``: every problem), with the in-domain answer rule (the PoT read executes programs; the
CoT read uses the OOD benchmark's own ftcot number rule), capped by ``trainer.max_eval_examples``, recorded
as result entries with ``benchmark`` = the benchmark read. An embedded in-domain benchmark (any tier=embedded
run) reads ``method.ood_stand_ins`` instead: embedded arithmetic with other difficulty or number bounds and
another seed, as many test questions as the in-domain test (conf/benchmark/embedded_arithmetic_*.yaml). The
OOD sets are math word problems: a task whose answers are not numbers gets none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .benchmarks.record import Example
from .data.fdd import COT_TRIGGER, POT_TRIGGER, mixed_input
from .errors import ConfigError
from .evaluation import EvalSpec, predict
from .io import read_jsonl, write_jsonl
from .run import Entry, rows_entry


@dataclass
class TriggerSpec(EvalSpec):
    """rationale=mixed: the student input is ``Question: {q}\\n{trigger}\\n`` (data/fdd.py mixed_input)."""

    trigger: str = POT_TRIGGER

    def prompts(self, examples, family: str) -> list[str]:
        return [mixed_input(ex.question, self.trigger) for ex in examples]


def round_spec(ctx, programs, fmt: str) -> EvalSpec:
    """How a round's student is asked and scored in format ``fmt``: cot | pot | mixed_pot | mixed_cot."""
    cfg = ctx.cfg
    pot = fmt in ("pot", "mixed_pot")
    args = (ctx.task, "pot" if pot else "ft_cot_token", cfg.student.max_new_tokens, cfg.trainer.eval_batch_size)
    kw: dict[str, Any] = dict(max_input_tokens=cfg.student.max_input_tokens,
                              scorer=programs.score if pot else None, metric="fdd_numeric" if pot else "ftcot")
    if fmt.startswith("mixed"):
        return TriggerSpec(*args, trigger=POT_TRIGGER if pot else COT_TRIGGER, **kw)
    return EvalSpec(*args, **kw)


def reads(ctx, programs, system: str) -> list[tuple[str, EvalSpec]]:
    """(system, spec) of each read of a round's student; the first is the primary one."""
    r = ctx.cfg.method.rationale
    if r != "mixed":
        return [(system, round_spec(ctx, programs, r))]
    return [(system, round_spec(ctx, programs, "mixed_pot")),
            ("cot" if system == "student" else f"{system}_cot", round_spec(ctx, programs, "mixed_cot"))]


# --------------------------------------------------------------------------------------------------------
# Out-of-domain sets


@dataclass
class OodSet:
    name: str  # the benchmark read (a stand-in when the in-domain benchmark is embedded)
    asked: str  # its name in method.ood_benchmarks
    task: str  # its scoring key
    examples: list[Example]


def ood_name(cfg, asked: str) -> str:
    """The benchmark read for ``asked``: itself, or its embedded stand-in for an embedded in-domain benchmark."""
    f = cfg.method
    if cfg.benchmark.source != "embedded" or asked.startswith("embedded_"):
        return asked
    if asked not in f.ood_stand_ins:
        raise ConfigError(f"invalid config at `method.ood_benchmarks`: {asked!r} has no embedded stand-in for "
                          f"the embedded benchmark {cfg.benchmark.name}; allowed: "
                          f"{', '.join(sorted(f.ood_stand_ins))} (method.ood_stand_ins) or an embedded_* preset")
    return f.ood_stand_ins[asked]


def ood_config(cfg, name: str):
    """conf/benchmark/<name>.yaml as a BenchmarkConfig; an embedded one sized like the in-domain test."""
    from omegaconf import OmegaConf

    from .config import BenchmarkConfig
    from .tiers import conf_dir, load_preset

    folder = conf_dir() / "benchmark"
    if not (folder / f"{name}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"invalid config at `method.ood_benchmarks`: no benchmark preset {name!r}; allowed: {known}")
    bc: BenchmarkConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BenchmarkConfig),
                                                              load_preset("benchmark", name)))  # type: ignore
    if bc.source == "embedded":  # only its test split is read: as large as the run's own
        bc.n_train, bc.n_val, bc.n_test = 0, 0, cfg.benchmark.n_test
    bc.data_dir = bc.data_dir or cfg.benchmark.data_dir
    return bc


def ood_sets(cfg, splits) -> list[OodSet]:
    """The run's out-of-domain sets, loaded and capped (nothing is written; a missing file raises here)."""
    from .benchmarks import load_benchmark

    f = cfg.method
    if any(ex.answer_type != "number" for ex in splits.train):
        return []  # the OOD sets are math word problems: not for a task whose answers are not numbers
    names = [ood_name(cfg, a) for a in f.ood_benchmarks]
    if len(set(names)) != len(names) or cfg.benchmark.name in names:
        raise ConfigError(f"invalid config at `method.ood_benchmarks`: {list(f.ood_benchmarks)} reads {names}; "
                          f"allowed: distinct benchmarks other than the in-domain {cfg.benchmark.name}")
    cap, out = cfg.trainer.max_eval_examples, []
    for asked, name in zip(f.ood_benchmarks, names):
        bc = ood_config(cfg, name)
        s = load_benchmark(bc, cfg.paths.data_dir, require_train=False)
        xs = s.test if f.ood_split == "test" else [*s.train, *s.val, *s.test]
        out.append(OodSet(name, asked, bc.task, xs if cap is None else xs[:cap]))
    return out


# --------------------------------------------------------------------------------------------------------
# The round's extra reads


def extra_reads(lp, student, r: int, epoch: int) -> tuple[list[Entry], list[dict]]:
    """After a round's in-domain test read (training.train_and_evaluate): the other reads of the test split
    (mixed: CoT) and every read of every OOD set, with the selected ``epoch``'s weights that ``student`` holds.
    Rows go to ``predictions/test[_cot][_<benchmark>].jsonl`` and are reused by a resumed run when they are of
    that epoch. Returns the result entries and one summary row per read."""
    ctx = lp.ctx
    paths = ctx.paths.round(r)
    test = ctx.eval_sets(("test",))["test"]
    own = ctx.cfg.benchmark.name
    val = ctx.eval_sets(("val",))["val"] if lp.f.read_val else []
    entries, rows_out = [], []
    for k, (system, spec) in enumerate(lp.reads()):
        sets = ([("test", None, test, spec)] if k else []) + \
            ([("val", own, val, spec)] if val else []) + \
            [("test", s.name, s.examples, replace(spec, task=s.task)) for s in lp.ood]
        for split, bench, xs, sp in sets:
            path = paths.read_predictions(split, bench, cot=k > 0)
            rows = read_jsonl(path) if path.is_file() else []
            if len(rows) != len(xs) or (rows and rows[0].get("epoch") != epoch):
                rows = predict(student, xs, sp, split=split, progress=ctx.progress, epoch=epoch)
                write_jsonl(path, rows)
            e = replace(rows_entry(rows, system=system, split=split, round=r, metric=sp.metric,
                                   selection="dev_selected", epoch=epoch), benchmark=bench)
            entries.append(e)
            rows_out.append({"system": system, "split": split, "benchmark": bench, "metric": e.metric,
                             "accuracy": e.accuracy, "n": e.n})
    return entries, rows_out
