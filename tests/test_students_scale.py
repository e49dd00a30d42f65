"""Students at scale (issue 5): presets, training options, chunked loss, length grouping, fast decoding,
throughput metrics, and the throughput benchmark's CPU smoke run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from conftest import CONF, CORPUS, PAIRS, REPO, SHARED, TINY, compose, run_sgft  # noqa: E402

from sgft_lab.config import Config, StudentConfig, TrainerConfig, validate  # noqa: E402
from sgft_lab.students.build import build_student  # noqa: E402
from sgft_lab.students.encode import collate, encode_pair  # noqa: E402
from sgft_lab.students.module import StudentModule  # noqa: E402

TINY_STORIES = SHARED / "models" / "TinyStories-656K"
SMALL = {"name_or_path": None, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128,
         "vocab_size": 400}
LLAMA7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


def _batch(student, pairs=PAIRS):
    items = [encode_pair(student.tokenizer, student.family, i, y, 512, 512) for i, y in pairs]
    return collate(items, student.tokenizer.pad_token_id, student.family)


def _trainer(**kw):
    base = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False}
    return pl.Trainer(**{**base, **kw})


def _loader(batch, n):
    return torch.utils.data.DataLoader([batch] * n, batch_size=None)


# ------------------------------------------------------------------------------------------------------
# 1. Presets
# ------------------------------------------------------------------------------------------------------
PRESETS = {
    "gpt2": "decoder", "gpt2-medium": "decoder", "gpt2-large": "decoder",
    "t5-small": "encoder_decoder", "t5-base": "encoder_decoder", "t5-large": "encoder_decoder",
    "flan-t5-small": "encoder_decoder", "flan-t5-base": "encoder_decoder", "flan-t5-large": "encoder_decoder",
    **{f"Qwen2.5-{s}{i}": "decoder" for s in ("0.5B", "1.5B", "3B", "7B") for i in ("", "-Instruct")},
    "Llama-3.2-1B": "decoder", "Llama-3.2-3B": "decoder", "Llama-3.1-8B": "decoder",
    "SmolLM2-135M": "decoder", "SmolLM2-360M": "decoder", "SmolLM2-1.7B": "decoder", "tiny": "decoder",
}
MODULES = {"gpt2": ["c_attn", "c_proj", "c_fc"], "t5": ["q", "k", "v", "o", "wi", "wo"],
           "flan-t5": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"], "Qwen2.5": LLAMA7, "Llama": LLAMA7,
           "SmolLM2": LLAMA7}


def _family_key(name: str) -> str:
    return next(k for k in sorted(MODULES, key=len, reverse=True) if name.startswith(k))


def test_every_student_preset_composes_with_the_right_modules():
    files = {p.stem for p in (CONF / "student").glob("*.yaml")}
    assert set(PRESETS) <= files, sorted(set(PRESETS) - files)
    for name, family in PRESETS.items():
        s = validate(compose([f"student={name}"])).student
        assert s.name == name and s.family == family, name
        if name == "tiny":
            assert s.name_or_path is None
            continue
        assert s.name_or_path and "/" in s.name_or_path and s.name_or_path.endswith(name.split("/")[-1]), name
        assert list(s.lora_target_modules) == MODULES[_family_key(name)], name
        assert s.padding_side == ("left" if family == "decoder" else "right"), name
        assert s.chat_template == name.endswith("-Instruct"), name
    # A size sweep is one multirun over the group: Hydra expands the sweep into one job per preset.
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"student={','.join(PRESETS)}"])
    assert list(override.sweep_string_iterator()) == list(PRESETS)


def _tiny_hf(kind: str):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=128))
    if kind == "t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                   num_heads=2, feed_forward_proj="relu"))
    if kind == "flan-t5":
        return T5ForConditionalGeneration(T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                                   num_heads=2, feed_forward_proj="gated-gelu"))
    cls, cfg = (Qwen2ForCausalLM, Qwen2Config) if kind == "Qwen2.5" else (LlamaForCausalLM, LlamaConfig)
    return cls(cfg(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=4, num_key_value_heads=2))


@pytest.mark.parametrize("kind", ["gpt2", "t5", "flan-t5", "Qwen2.5", "Llama"])
def test_preset_lora_modules_exist_in_the_architecture(kind):
    """Each preset's LoRA target names match modules of a random model of its architecture (no download)."""
    from peft import LoraConfig, get_peft_model

    model = _tiny_hf(kind)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(MODULES[kind]) <= names, sorted(set(MODULES[kind]) - names)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=MODULES[kind]))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(MODULES[kind])


def test_trainer_presets_and_strategies():
    from sgft_lab.training import build_strategy

    for name, strategy in (("ddp", "ddp"), ("fsdp", "fsdp"), ("deepspeed", "deepspeed_stage_2"),
                           ("gpu_fast", "auto")):
        t = validate(compose([f"trainer={name}"])).trainer
        assert t.strategy == strategy and t.group_by_length and t.precision == "bf16-mixed"
    student = build_student(StudentConfig(**SMALL), CORPUS)
    try:
        import deepspeed  # noqa: F401
    except ImportError:  # the usual case here: a clear message, before any training
        with pytest.raises(ValueError, match="pip install deepspeed"):
            build_strategy(TrainerConfig(strategy="deepspeed_stage_2"), student)
    from lightning.pytorch.strategies import FSDPStrategy

    fsdp = build_strategy(TrainerConfig(strategy="fsdp"), student)
    assert isinstance(fsdp, FSDPStrategy) and fsdp.kwargs["use_orig_params"]
    # wraps the model's own blocks (transformers' _no_split_modules)
    assert {c.__name__ for c in fsdp.kwargs["auto_wrap_policy"]._module_classes} == {"LlamaDecoderLayer"}
    from sgft_lab.config import Adapter

    qcfg = StudentConfig(**{**SMALL, "adapter": Adapter.qlora})
    with pytest.raises(ValueError, match="QLoRA"):
        build_strategy(TrainerConfig(strategy="fsdp"), type("S", (), {"cfg": qcfg, "model": student.model})())
    # (the schema's typed value: build_student would make "qlora" an Adapter; a hand-made config is typed here)


def test_fsdp_refuses_per_epoch_generation_before_training(tmp_path):
    from sgft_lab.evaluation import EvalSpec
    from sgft_lab.paths import RunPaths
    from sgft_lab.training import fit

    student = build_student(StudentConfig(**SMALL), CORPUS)
    cfg = Config(trainer=TrainerConfig(strategy="fsdp", accelerator="cpu"))
    from sgft_lab.benchmarks.record import Example

    ex = Example(id="1", question="q", answer="1", answer_type="number")
    with pytest.raises(ValueError, match="rank 0 cannot evaluate"):
        fit(cfg, student, [], {"test": [ex]}, EvalSpec("multiarith", "ft_cot_token", 8, 4),
            RunPaths(tmp_path))


# ------------------------------------------------------------------------------------------------------
# 2-3. Loss, options, batching, throughput
# ------------------------------------------------------------------------------------------------------
def _loss_and_grads(model, fn):
    model.zero_grad()
    loss = fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


def _assert_same_loss_and_grads(model, batch, chunk):
    from sgft_lab.students.loss import chunked_causal_lm_loss

    ref_loss, ref = _loss_and_grads(model, lambda: model(**batch).loss)
    loss, got = _loss_and_grads(model, lambda: chunked_causal_lm_loss(
        model, batch["input_ids"], batch["attention_mask"], batch["labels"], chunk))
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (loss, ref_loss)
    assert ref and set(got) == set(ref)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_chunked_loss_equals_the_models_own_loss_and_gradients(adapter, monkeypatch):
    import sgft_lab.students.loss as loss_mod

    torch.manual_seed(0)
    cfg = StudentConfig(**SMALL, adapter=adapter, lora_dropout=0.0,
                        lora_target_modules=["q_proj", "v_proj", "down_proj", "lm_head"])
    student = build_student(cfg, CORPUS)
    if adapter == "lora":  # lora_B starts at zero: perturb it so every adapter gradient is non-trivial
        with torch.no_grad():
            for n, p in student.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    batch = _batch(student)
    assert (batch["attention_mask"] == 0).any() and (batch["labels"] == -100).any()
    for chunk in (1, 7, 4096):
        _assert_same_loss_and_grads(student.model, batch, chunk)
    monkeypatch.setattr(loss_mod, "_CHECKPOINT_MIN_ENTRIES", 0)  # the recomputing (checkpointed) path too
    _assert_same_loss_and_grads(student.model, batch, 5)


def test_chunked_loss_on_gpt2_architecture():
    from sgft_lab.students.loss import decoder_parts

    torch.manual_seed(0)
    model = _tiny_hf("gpt2").eval()  # GPT-2 has dropout: compare without it (gradients flow in eval mode too)
    assert decoder_parts(model) is not None and decoder_parts(_tiny_hf("t5")) is None
    ids = torch.randint(3, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100
    _assert_same_loss_and_grads(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, 5)


@pytest.mark.shared
@pytest.mark.skipif(not (TINY_STORIES / "config.json").is_file(), reason=f"needs ../shared ({TINY_STORIES})")
def test_chunked_loss_on_tinystories_lora():
    torch.manual_seed(0)
    student = build_student(StudentConfig(name="hf", name_or_path=str(TINY_STORIES), adapter="lora",
                                          lora_dropout=0.0, lora_target_modules=LLAMA7))
    with torch.no_grad():
        for n, p in student.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    _assert_same_loss_and_grads(student.model, _batch(student), 6)


def test_module_options_checkpointing_optimizers_compile():
    torch.manual_seed(0)
    student = build_student(StudentConfig(**SMALL), CORPUS)
    batch = _batch(student)
    plain = StudentModule(student, TrainerConfig(loss_chunk_size=None))
    assert not plain.uses_chunked_loss and not plain.gradient_checkpointing
    ref_loss, ref = _loss_and_grads(student.model, lambda: plain._loss(batch))
    gc = StudentModule(student, TrainerConfig(gradient_checkpointing=True, loss_chunk_size=16))
    assert gc.uses_chunked_loss and student.model.is_gradient_checkpointing
    loss, got = _loss_and_grads(student.model, lambda: gc._loss(batch))
    assert torch.allclose(loss, ref_loss, rtol=1e-5)
    assert all(torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-6) for n in ref)
    # compile (backend=eager: dynamo tracing without a C++ toolchain) keeps parameter names and the loss
    compiled = StudentModule(student, TrainerConfig(compile=True, compile_backend="eager"))
    assert set(compiled.state_dict()) == set(plain.state_dict())
    assert torch.allclose(compiled._loss(batch), ref_loss, rtol=1e-5)
    with pytest.raises(ValueError, match="optimizer"):
        StudentModule(student, TrainerConfig(optimizer="lion"))
    with pytest.raises(ValueError, match="adamw_fused needs"):
        from sgft_lab.students.module import make_optimizer

        make_optimizer("adamw_fused", [torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0)


@pytest.mark.parametrize("optimizer,precision", [("paged_adamw_8bit", "32-true"), ("adamw", "bf16-mixed")])
def test_optimizer_and_precision_train_on_cpu(optimizer, precision):
    """bitsandbytes' paged 8-bit AdamW runs on CPU (unpaged there); bf16-mixed runs through CPU autocast."""
    pytest.importorskip("bitsandbytes")
    pl.seed_everything(0)
    student = build_student(StudentConfig(**SMALL), CORPUS)
    batch = _batch(student)
    before = StudentModule(student, TrainerConfig())._loss(batch).item()
    module = StudentModule(student, TrainerConfig(lr=3e-3, optimizer=optimizer))
    _trainer(max_steps=25, precision=precision).fit(module, _loader(batch, 25))
    opt = module.trainer.optimizers[0]
    assert type(opt).__name__ == {"paged_adamw_8bit": "PagedAdamW8bit", "adamw": "AdamW"}[optimizer]
    if optimizer == "paged_adamw_8bit":  # big tensors keep 8-bit state
        states = [s.get("state1") for s in opt.state.values()]
        assert any(s is not None and s.dtype == torch.uint8 for s in states)
    with torch.no_grad():
        after = module._loss(batch).item()
    assert after < 0.7 * before, (before, after)


def test_length_grouped_sampler_partitions_ranks_and_cuts_padding():
    import random

    from sgft_lab.data.datamodules import LengthGroupedSampler, padding_fraction

    rng = random.Random(0)
    lengths = [rng.randint(5, 400) for _ in range(203)]
    for world in (1, 2, 3):
        seen: list[int] = []
        per_rank = []
        for rank in range(world):
            s = LengthGroupedSampler(lengths, 8, seed=3, num_replicas=world, rank=rank, group_batches=5)
            batches = s.batches()
            idx = list(s)
            assert [idx[i:i + 8] for i in range(0, len(idx), 8)] == batches  # a DataLoader rebuilds them
            per_rank.append(len(batches))
            seen += idx
        assert len(set(per_rank)) == 1  # every rank takes as many steps
        assert set(seen) == set(range(len(lengths)))
        grouped = padding_fraction(lengths, LengthGroupedSampler(lengths, 8, seed=3).batches())
        perm = list(range(len(lengths)))
        random.Random(1).shuffle(perm)
        assert grouped < 0.5 * padding_fraction(lengths, [perm[i:i + 8] for i in range(0, len(perm), 8)])
    s = LengthGroupedSampler(lengths, 8, seed=3)
    first = s.batches()
    assert max(lengths[i] for i in first[0]) == max(lengths)  # longest batch first: OOM shows at step 1
    s.set_epoch(1)
    assert s.batches() != first  # a new shuffle each epoch


def test_fit_records_throughput_and_group_by_length_cuts_padding(tmp_path):
    from sgft_lab.data.datamodules import Pair
    from sgft_lab.evaluation import EvalSpec
    from sgft_lab.paths import RunPaths
    from sgft_lab.training import fit

    pairs = [Pair(i * (1 + k % 3), y) for k, (i, y) in enumerate(PAIRS * 4)]
    spec = EvalSpec("multiarith", "ft_cot_token", 8, 4)
    out = {}
    for grouped in (False, True):
        pl.seed_everything(0)
        student = build_student(StudentConfig(**SMALL), [p.input + p.label for p in pairs])
        cfg = Config(trainer=TrainerConfig(max_epochs=2, batch_size=4, group_by_length=grouped,
                                           enable_progress_bar=False, save_checkpoints=False))
        paths = RunPaths(tmp_path / str(grouped))
        o = fit(cfg, student, pairs, {}, spec, paths)
        assert o.tokens_per_s and o.tokens_per_s > 0 and o.peak_memory_gib > 0
        assert o.peak_memory_kind == "cpu_max_rss" and o.is_global_zero and o.world_size == 1
        assert o.speed()["train_tokens"] == o.train_tokens > 0
        header = (paths.run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
        assert {"train_tokens_per_s", "train_padding_fraction", "peak_memory_gib"} <= set(header)
        out[grouped] = o
    assert out[True].train_tokens == out[False].train_tokens
    assert out[True].padding_fraction < out[False].padding_fraction


# ------------------------------------------------------------------------------------------------------
# 4. Fast decoding
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    pl.seed_everything(0)
    student = build_student(StudentConfig(**SMALL), CORPUS)
    module = StudentModule(student, TrainerConfig(lr=3e-3))
    from torch.utils.data import DataLoader

    data = [encode_pair(student.tokenizer, "decoder", i, y, 512, 512) for i, y in PAIRS]
    pad = student.tokenizer.pad_token_id
    _trainer(max_epochs=60).fit(module, DataLoader(data, batch_size=6, collate_fn=lambda b: collate(
        b, pad, "decoder")))
    return student


def test_static_decoding_matches_eager_generate_on_a_trained_model(trained):
    from sgft_lab.students.generation import generate, resolve_backend

    prompts = [i for i, _ in PAIRS] + ["What is 2 plus 2? ###", "Tom ###", "unseen words here and more"] * 2
    trained.model.train()
    eager = generate(trained.model, trained.tokenizer, "decoder", prompts, 24, batch_size=4, backend="eager")
    static = generate(trained.model, trained.tokenizer, "decoder", prompts, 24, batch_size=4,
                      backend="static")
    assert static == eager
    assert eager[:len(PAIRS)] == [y for _, y in PAIRS]  # trained: the comparison is on meaningful outputs
    # max_new_tokens is a hard limit on both paths; batch size does not change outputs
    short = [generate(trained.model, trained.tokenizer, "decoder", prompts, 3, batch_size=b, backend=backend)
             for b, backend in ((5, "static"), (2, "eager"))]
    assert short[0] == short[1]
    assert resolve_backend(trained.model, "decoder") == "eager"  # auto on CPU
    assert trained.model.training  # the mode it came in


def test_static_decoding_matches_on_random_fp32_token_ids():
    from sgft_lab.students.generation import greedy_ids

    torch.manual_seed(1)
    model = _tiny_hf("Qwen2.5").eval()
    import random

    rng = random.Random(0)
    prompts = [[rng.randrange(3, 300) for _ in range(rng.randint(2, 20))] for _ in range(7)]
    kw = dict(family="decoder", max_new_tokens=12, batch_size=3, pad_id=0, eos_ids=[5])
    static = greedy_ids(model, prompts, backend="static", **kw)
    assert static == greedy_ids(model, prompts, backend="eager", **kw)
    assert all(0 < len(r) <= 12 for r in static)


def test_decode_backend_errors_are_clear():
    from sgft_lab.students.generation import greedy_ids, resolve_backend

    with pytest.raises(ValueError, match="fastest"):
        build_student(StudentConfig(**SMALL, decode="fastest"), CORPUS)
    with pytest.raises(ValueError, match="static"):
        resolve_backend(_tiny_hf("t5"), "encoder_decoder", "static")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install vllm"):
            greedy_ids(_tiny_hf("Llama"), [[4, 5]], family="decoder", max_new_tokens=2, batch_size=1,
                       pad_id=0, eos_ids=[], backend="vllm")


def test_chat_template_wraps_prompts_for_training_and_generation():
    from sgft_lab.students.encode import prompt_ids

    with pytest.raises(ValueError, match="no chat template"):
        build_student(StudentConfig(**SMALL, chat_template=True), CORPUS)
    student = build_student(StudentConfig(**SMALL), CORPUS)
    tok = student.tokenizer
    tok.chat_template = "{% for m in messages %}<s>user: {{ m['content'] }}\n{% endfor %}assistant:"
    plain = prompt_ids(tok, "decoder", "Sum 7 and 8 ###")
    wrapped = prompt_ids(tok, "decoder", "Sum 7 and 8 ###", chat=True)
    assert tok.decode(wrapped) == "<s>user: Sum 7 and 8 ###\nassistant:" and wrapped != plain
    item = encode_pair(tok, "decoder", "Sum 7 and 8 ###", " 15", 512, 512, chat=True)
    assert item["input_ids"][:len(wrapped)] == wrapped  # training sees exactly the generation prompt
    # The choice travels with the student (student.chat_template), not on the tokenizer.
    from dataclasses import replace

    chatty = replace(student, cfg=replace(student.cfg, chat_template=True))
    assert chatty.chat and not student.chat and not hasattr(tok, "sgft_chat_template")


# ------------------------------------------------------------------------------------------------------
# End to end: QLoRA on a real checkpoint through the CLI; the benchmark's CPU smoke run
# ------------------------------------------------------------------------------------------------------
@pytest.mark.shared
@pytest.mark.skipif(not (TINY_STORIES / "config.json").is_file(), reason=f"needs ../shared ({TINY_STORIES})")
def test_cli_qlora_on_tinystories_learns(tmp_path):
    args = [a for a in TINY if not a.startswith("student.")] + [
        "student=hf", f"student.name_or_path={TINY_STORIES}", "student.adapter=qlora",
        "student.max_new_tokens=16",
        "trainer.max_epochs=3", "trainer.lr=1e-2", "trainer.eval_every_n_epochs=3", "trainer.threads=1",
        "trainer.group_by_length=true", "trainer.optimizer=paged_adamw_8bit"]
    run_sgft(args, tmp_path)
    (res_file,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    run_dir = res_file.parent
    import csv

    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("train_loss_epoch")]
    losses = [float(r["train_loss_epoch"]) for r in rows]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2] and losses[-1] < 0.8 * losses[0], losses
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # adapter only


def test_throughput_benchmark_tiny_runs_on_cpu(tmp_path):
    out = tmp_path / "bench.jsonl"
    p = subprocess.run([sys.executable, str(REPO / "experiments" / "benchmarks" / "student_throughput.py"),
                        "--tiny", "--modes", "lora", "--out", str(out)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = {r["stack"]: r for r in rows if r["part"] == "train"}
    assert set(train) == {"plain", "sgft"} and all(r["status"] == "ok" for r in train.values())
    assert train["plain"]["real_tokens"] == train["sgft"]["real_tokens"] > 0  # the same samples
    assert train["sgft"]["padding_fraction"] < train["plain"]["padding_fraction"]
    assert train["sgft"]["chunked_loss"] and train["plain"]["real_tok_s"] > 0
    (dec,) = [r for r in rows if r["part"] == "decode"]
    assert dec["rows_identical"] == dec["fp32_rows_identical"] == dec["rows"]
    assert "| sgft |" in p.stdout and "eager tok/s" in p.stdout
