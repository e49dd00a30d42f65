"""SGFT: the SG dataset/DataModule, SG generation with the filter counts, the LISA callback, an end-to-end tiny
run, the guide x response multirun, the guide x solver ablation multirun and the data-size points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, compose, run_sgft

from sgft_lab.config import StudentConfig, TrainerConfig, validate

SMALL_ARCH = {"hidden_size": 32, "num_layers": 4, "num_heads": 2, "intermediate_size": 64, "vocab_size": 300}
# An end-to-end SGFT run in seconds: TINY plus a tiny response model, a small pre-training pool, short outputs.
SGFT_TINY = [
    "method=sgft", *TINY, "benchmark.n_train=32", "benchmark.n_test=6", "method.n_sg=null",
    "method.response.hidden_size=32", "method.response.num_layers=1", "method.response.num_heads=2",
    "method.response.intermediate_size=64", "method.response.vocab_size=300", "method.response.max_new_tokens=8",
    "method.response_pretrain.n_questions=30", "method.response_pretrain.max_epochs=1",
    "method.guide_max_new_tokens=40", "method.answer_max_new_tokens=40",
    "method.rationale_max_tokens=24", "method.answer_max_tokens=6",
    "method.lisa.layers=1", "method.lisa.interval=2",
]


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


def _tiny_student(corpus: list[str], **arch):
    import lightning.pytorch as pl

    from sgft_lab.students.build import build_student

    pl.seed_everything(0, verbose=False)
    return build_student(StudentConfig(**{**SMALL_ARCH, **arch}), corpus=corpus)


# --- SG generation, filter counts and the SG DataModule -----------------------------------------------------


def _records(n: int = 30, error_rate: float = 0.5, tmp=None):
    import tempfile

    from sgft_lab.benchmarks.embedded import generate_examples
    from sgft_lab.benchmarks.record import Splits
    from sgft_lab.methods.sgft import generate_guidance
    from sgft_lab.paths import RunPaths
    from sgft_lab.run import RunContext
    from sgft_lab.teachers.reference_sg import reference_guidance_kind

    tmp = tmp or tempfile.mkdtemp()
    cfg = validate(compose(["method=sgft", f"teacher.error_rate={error_rate}", f"paths.cache_dir={tmp}",
                            "trainer.enable_progress_bar=false"]))
    exs = generate_examples("arithmetic", n, 2, 0, id_prefix="q")
    ctx = RunContext(cfg, RunPaths(tmp), Splits("multiarith", exs, [], []))
    ctx.teacher(kinds=[reference_guidance_kind(exs, cfg.method.filter)])
    records, report = generate_guidance(ctx, exs)
    ctx.cache().close()
    return records, report, ctx.accounting


def test_generate_guidance_counts_retries_and_drops():
    records, report, acc = _records()
    d = report.to_dict()
    assert d["questions"] == len(records) == 30
    assert d["passed_first_attempt"] + d["retried"] == 30 and d["kept"] + d["dropped"] == 30
    assert d["retried"] > 0 and d["dropped"] > 0 and d["passed_retry"] > 0  # error_rate 0.5: all paths taken
    assert sum(d["rejections_first_attempt"].values()) >= d["retried"]
    assert acc.stages["guidance"].teacher_calls == 30 and acc.stages["guidance_retry"].teacher_calls == d["retried"]
    kept = [r for r in records if r["guidance"]]
    assert len(kept) == d["kept"] and all(r["guidance"].startswith("Step 1: ") for r in kept)
    assert all(r["retry"] is None for r in records if not r["first_reasons"])


def test_sg_datamodule_masks_the_prompt_and_ends_the_sg_with_eos():
    from sgft_lab.data.datamodules import CoTDataModule
    from sgft_lab.data.sg import guidance_pairs
    from sgft_lab.guidance import PROMPT_IV
    from sgft_lab.students.encode import IGNORE_INDEX

    records, report, _ = _records(12, error_rate=0.0)
    pairs = guidance_pairs(records + [{"example_id": "x", "question": "dropped?", "guidance": None}], "decoder")
    assert len(pairs) == report.kept == 12  # dropped SGs make no pair
    p = pairs[0]
    assert p.input == f"{PROMPT_IV}\n\n{records[0]['question']}" and p.label == " " + records[0]["guidance"]
    student = _tiny_student([q.input + q.label for q in pairs])
    dm = CoTDataModule(student, pairs, [], [], batch_size=4, seed=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape and batch["input_ids"].shape[0] == 4
    item = dm._train.items[0]
    n_prompt = sum(1 for t in item["labels"] if t == IGNORE_INDEX)
    tok = student.tokenizer
    assert tok.decode(item["input_ids"][:n_prompt]) == pairs[0].input
    assert item["labels"][-1] == tok.eos_token_id
    assert tok.decode(item["labels"][n_prompt:-1]) == pairs[0].label  # loss on the SG tokens only


# --- LISA ----------------------------------------------------------------------------------------------------


def test_lisa_changes_the_active_set_and_never_updates_frozen_blocks():
    import lightning.pytorch as pl
    import torch

    from sgft_lab.data.datamodules import CoTDataModule, Pair
    from sgft_lab.students.lisa import LISACallback, find_blocks
    from sgft_lab.students.module import StudentModule

    pairs = [Pair(f"Question {i} ###", f" Step 1: find {i}.\nStep 2: add.") for i in range(24)]
    student = _tiny_student([p.input + p.label for p in pairs])
    blocks = find_blocks(student.model)
    assert len(blocks) == 4
    block_of = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    params = dict(student.model.named_parameters())
    lisa = LISACallback(n_active=1, interval=2, seed=0)

    class Recorder(pl.Callback):
        def __init__(self):
            self.steps = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = {n: p.detach().clone() for n, p in params.items()}
            self.active = list(lisa.active)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            changed = {n for n, p in params.items() if not torch.equal(p.detach(), self.before[n])}
            self.steps.append((self.active, changed))

    rec = Recorder()
    tc = TrainerConfig(max_epochs=1, batch_size=4, lr=1e-2, scheduler="constant", warmup_ratio=0.0)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[lisa, rec])
    trainer.fit(StudentModule(student, tc), datamodule=CoTDataModule(student, pairs, [], [], batch_size=4, seed=0))

    assert [s for s, _ in lisa.history] == [0, 2, 4]
    assert len({tuple(a) for _, a in lisa.history}) > 1  # the active set changes
    for active, changed in rec.steps:
        assert len(active) == 1
        changed_blocks = {block_of[id(params[n])] for n in changed if id(params[n]) in block_of}
        assert changed_blocks == set(active)  # frozen blocks never move, the active one does
        assert any(id(params[n]) not in block_of for n in changed)  # embeddings / head always train
    assert all(p.requires_grad for p in student.model.parameters())  # unfrozen again after training


def test_lisa_resets_the_optimizer_state_of_newly_activated_blocks():
    import torch

    from sgft_lab.students.lisa import LISACallback

    student = _tiny_student(["a b c d e f g"])
    model = student.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    lisa = LISACallback(n_active=1, interval=1)
    blocks = lisa.blocks(model)

    def step():
        opt.zero_grad()
        model(input_ids=torch.tensor([[5, 6, 7, 8]]), labels=torch.tensor([[5, 6, 7, 8]])).loss.backward()
        opt.step()

    lisa.apply(model, [1], opt)
    step()
    p1 = next(blocks[1].parameters())
    head = model.lm_head.weight
    assert opt.state[p1]["step"] == 1 and next(blocks[0].parameters()) not in opt.state
    assert lisa.apply(model, [0], opt) == [0]
    step()
    assert opt.state[p1]["step"] == 1  # frozen: untouched, its (stale) state kept
    assert lisa.apply(model, [1], opt) == [1]
    assert p1 not in opt.state  # re-activated: fresh AdamW state
    assert opt.state[head]["step"] == 2  # non-block parameters keep theirs
    with pytest.raises(ValueError, match="gamma"):
        LISACallback(n_active=0)


# --- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sgft_end_to_end_tiny(tmp_path: Path):
    run_sgft(SGFT_TINY, tmp_path)
    (res,) = _results(tmp_path / "outputs" / "runs")
    d, data = res["details"], res["data"]
    assert res["run"]["method"] == "sgft" and res["run"]["student"] == "tiny"
    assert res["models"]["response"]["name"] == "tiny_small"
    systems = {e["system"]: e for e in res["entries"] if e["split"] == "test"}
    assert set(systems) == {"student", "response_zero_shot", "response_zero_shot_cot", "teacher_sg", "cot_ft_x1"}
    assert all(systems[k]["selection"] == "single" and systems[k]["n"] == 6 for k in systems if k != "cot_ft_x1")
    assert res["metrics"]["accuracy"] == systems["student"]["accuracy"]
    f = d["filter"]
    assert f["questions"] == data["n_sg_questions"] == 32 and f["kept"] == data["n_sg_examples"]
    assert f["passed_first_attempt"] + f["retried"] == 32 and set(f["rejections_first_attempt"]) >= {
        "too_few_steps", "arithmetic_expression", "final_answer"}
    assert d["response"]["reused"] is False and d["response"]["pool_questions"] == 30
    assert d["guide"]["training"].startswith("LISA") and d["guide"]["lisa_draws"] >= 1
    stages = res["teacher"]["accounting"]["stages"]
    assert stages["guidance"]["teacher_calls"] == 32 and stages["guidance_test"]["teacher_calls"] == 6
    run_dir = Path(res["run"]["run_dir"])
    for name in ("teacher/guidance.jsonl", "guide/data/train.jsonl", "response/guided.jsonl",
                 "response/zero_shot_cot.jsonl", "cot_ft_x1/predictions/epoch_001.jsonl"):
        assert (run_dir / name).exists(), name
    guided = [json.loads(line) for line in (run_dir / "response" / "guided.jsonl").read_text().splitlines()]
    assert len(guided) == 6 and {"guidance", "guide_output", "completion", "correct"} <= set(guided[0])
    # the reported pass rate is the filter's verdict on the guide's own outputs
    from sgft_lab.config import validate
    from sgft_lab.guidance import check_sg

    flt = validate(compose(SGFT_TINY)).method.filter
    passed = sum(not check_sg(r["guide_output"], flt)[1] for r in guided)
    assert d["teacher_sg_on_test"]["questions"] == 6
    assert d["guide"]["test_sg"]["filter_pass_rate"] == round(passed / 6, 4)


@pytest.mark.slow
def test_guide_x_response_multirun_one_results_per_cell(tmp_path: Path):
    fast = ["method.baselines=[]", "method.cot_ft=false", "method.teacher_sg_on_test=false",
            "trainer.max_epochs=1", "benchmark.n_test=4"]
    # conf/experiment/sgft/grid.yaml sweeps student=tiny,tiny_small x student@method.response=tiny,tiny_small
    p = run_sgft(["experiment=sgft/grid", *SGFT_TINY, *fast], tmp_path)
    (sweep,) = list((tmp_path / "outputs" / "multirun").iterdir())
    results = _results(sweep)
    assert len(results) == 4, p.stdout[-2000:]
    assert {(r["run"]["student"], r["models"]["response"]["name"]) for r in results} == {
        (g, r) for g in ("tiny", "tiny_small") for r in ("tiny", "tiny_small")}
    # each response model is pre-trained once and reused by the second guide
    assert sorted(r["details"]["response"]["reused"] for r in results) == [False, False, True, True]
    assert all(r["run"]["experiment"] == "sgft/grid" for r in results)


# --- the ablation (guide trained? x solver CoT-trained?) and the data-size points ------------------------------

CELLS = {(False, "response"): "untrained_guide", (False, "cot_ft"): "untrained_guide_cot_solver",
         (True, "response"): "student", (True, "cot_ft"): "sg_guide_cot_solver"}


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """`-m +experiment=sgft/ablation tier=embedded` at SGFT_TINY's size: the four cells, one results.json each."""
    tmp = tmp_path_factory.mktemp("ablation")
    run_sgft(["+experiment=sgft/ablation", "tier=embedded", *SGFT_TINY[1:], "trainer.max_epochs=1",
              "benchmark.n_val=8", "method.baselines=[]"], tmp)
    (sweep,) = list((tmp / "outputs" / "multirun").iterdir())
    out = {}
    for r in _results(sweep):
        swept = dict(o.split("=", 1) for o in r["run"]["overrides"])
        out[swept["method.train_guide"] == "True", swept["method.solver"]] = r
    return out


@pytest.mark.slow
def test_ablation_runs_four_cells_each_named_by_its_guide_and_solver(ablation):
    assert set(ablation) == set(CELLS)
    for (trained, solver), r in ablation.items():
        guided = [e for e in r["entries"] if e["split"] == "test" and e["system"] == CELLS[trained, solver]]
        assert len(guided) == 1 and r["metrics"]["accuracy"] == guided[0]["accuracy"]
        assert r["details"]["solver"]["kind"] == solver
        stages = r["teacher"]["accounting"]["stages"]
        assert ("guidance" in stages) == trained  # an untrained guide gets no SG data
        assert r["details"]["guide"]["training"].startswith("LISA" if trained else "none")
        assert r["data"]["n_sg_examples"] == (r["details"]["filter"]["kept"] if trained else 0)


@pytest.mark.slow
def test_cot_trained_solver_is_trained_before_it_answers(ablation):
    """The solver=cot_ft cells train the CoT-FT model first (its entry comes before the guided one), its weights
    moved away from the response model's (recorded), and it -- not the response model -- answers: with the
    same untrained guide's SG the two untrained-guide cells answer differently."""
    for trained in (False, True):
        r = ablation[trained, "cot_ft"]
        systems = [e["system"] for e in r["entries"] if e["split"] == "test"]
        assert systems.index("cot_ft_x1") < systems.index(CELLS[trained, "cot_ft"])
        assert r["details"]["solver"]["stage"] == "cot_ft_x1" and r["details"]["solver"]["weight_change_l2"] > 0
        assert r["models"]["solver"]["name"] == r["models"]["response"]["name"] == "tiny_small"
        assert list(r["timings_s"]).index("solver_cot_ft") < list(r["timings_s"]).index("collaborative_inference")
        assert "solver" not in ablation[trained, "response"]["models"]

    def guided(r):
        run_dir = Path(r["run"]["run_dir"])
        return [json.loads(line) for line in (run_dir / "response" / "guided.jsonl").read_text().splitlines()]

    plain, cot = guided(ablation[False, "response"]), guided(ablation[False, "cot_ft"])
    assert [x["guide_output"] for x in plain] == [x["guide_output"] for x in cot]
    assert [x["completion"] for x in plain] != [x["completion"] for x in cot]


def test_solver_cot_ft_plans_its_own_cot_fine_tuning():
    from types import SimpleNamespace as NS

    from sgft_lab.benchmarks.embedded import generate_examples
    from sgft_lab.benchmarks.record import Splits
    from sgft_lab.config import ConfigError
    from sgft_lab.data.sg import cot_ft_runs
    from sgft_lab.methods.sgft import check

    base = dict(cot_ft=True, cot_ft_scales=[1, 10], cot_ft_per_question=None, solver="response")
    assert cot_ft_runs(NS(**base), 100, 3000) == [("cot_ft_x1", 100, 1), ("cot_ft_x10", 1000, 1)]
    assert cot_ft_runs(NS(**{**base, "solver": "cot_ft"}), 100, 3000)[0] == ("cot_ft_x1", 100, 1)
    assert cot_ft_runs(NS(**{**base, "cot_ft": False, "cot_ft_scales": [], "cot_ft_per_question": 4,
                             "solver": "cot_ft"}), 3000, 6726) == [("cot_ft", 6726, 4)]
    assert cot_ft_runs(NS(**{**base, "cot_ft": False}), 100, 3000) == []
    cfg = validate(compose(["method=sgft", "method.solver=cot_ft", "method.cot_ft_init=guide"]))
    with pytest.raises(ConfigError, match="cot_ft_init"):  # the solver is the CoT-trained response model
        check(cfg, Splits("multiarith", generate_examples("arithmetic", 400, 2, 0), [], []))


def test_data_size_preset_sweeps_the_papers_points():
    """methods.md 3: 3,000 SG plus the 1,000-SG ablation, each beside CoT-FT on 1x and 10x as many CoT samples
    (10 x 3,000 = the ~30k CoT baseline); at tier=embedded the points come from the command line at the
    tier's scale (conf/tier/embedded.yaml caps method.n_sg at 100)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sgft_lab.tiers import map_jobs

    hc = compose(["+experiment=sgft/data_size"], hydra_cfg=True)
    params = [f"{k}={v}" for k, v in hc.hydra.sweeper.params.items()]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    assert jobs == [["method.n_sg=1000"], ["method.n_sg=3000"]]
    for job in jobs:
        c = validate(compose(["+experiment=sgft/data_size", *job]))
        assert c.benchmark.name == "gsm8k" and c.method.cot_ft_scales == [1, 10] and c.method.train_guide
    tier = compose(["+experiment=sgft/data_size", "tier=embedded"], hydra_cfg=True).tier.stand_ins
    assert len(map_jobs(jobs, tier)) == 1  # the cap merges the paper's points ...
    assert map_jobs([["method.n_sg=33"], ["method.n_sg=100"]], tier) == [["method.n_sg=33"], ["method.n_sg=100"]]


def test_chat_students_get_guide_and_response_prompts_in_their_chat_template(monkeypatch):
    """methods.md 3.3: with student.chat_template=true the guide's and the response model's prompts go through
    the tokenizer's chat template (no longer refused); a raw-text student's do not."""
    from dataclasses import replace
    from types import SimpleNamespace

    import sgft_lab.students.generation as generation
    from conftest import CORPUS
    from sgft_lab.benchmarks.record import Example
    from sgft_lab.methods import sgft
    from sgft_lab.students.build import build_student

    calls = []

    def fake_generate(model, tokenizer, family, prompts, **kw):
        calls.append((kw["chat"], list(prompts)))
        return ["Step 1: add 2 and 3.\nThe answer is 5"] * len(prompts)

    monkeypatch.setattr(generation, "generate", fake_generate)
    cfg = validate(compose(["method=sgft", "student.chat_template=true", "method.response.chat_template=true"]))
    assert cfg.student.chat_template and cfg.method.response.chat_template  # accepted, not refused
    ctx = SimpleNamespace(cfg=cfg, progress=False, details={}, task="multiarith")
    tiny = build_student(StudentConfig(num_layers=1), CORPUS)
    chatty = replace(tiny, cfg=replace(tiny.cfg, chat_template=True))
    qs = [Example("q0", "Ann has 2 apples and gets 3 more. How many?", "5", "number")]
    sgs, _ = sgft.guide_writes_sg(ctx, chatty, qs)
    rows = sgft.answer_with_guidance(ctx, chatty, qs, sgs)
    sgft.answer_with_guidance(ctx, tiny, qs, sgs)
    assert [c for c, _ in calls] == [True, True, False]
    assert calls[0][1] == [sgft.sg_prompt(qs[0].question, cfg.method.guide_prompt)]
    assert rows[0]["correct"] and rows[0]["guidance"].startswith("Step 1:")
