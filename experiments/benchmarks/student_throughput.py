"""Student training and evaluation-decoding throughput: sgft_lab against the plain stack, one run, one device.

Training (per shape x adapter mode x batch shape): the same random-init model (weights drawn from the
shape's config, saved once, loaded by both sides; nothing is downloaded) trains on the same variable-length
rationale samples:

- plain: transformers + peft (+ bitsandbytes nf4 for QLoRA), a hand-written loop: random batches padded to
  their longest sample, the model's own loss (full fp32 logits), torch AdamW, bf16 autocast, no gradient
  checkpointing, no packing.
- sgft_lab: ``build_student`` + ``StudentModule`` under a Lightning Trainer (bf16-mixed): length-grouped
  batches (``LengthGroupedSampler``), the chunked LM-head loss, gradient checkpointing per ``--gc``
  (auto = sgft_lab's default: on for QLoRA), optionally ``torch.compile`` (``--compile``).

Each side runs ``--warmup`` batches first (not timed; peak memory is reset after them), then ``--steps``
batches timed end to end (CUDA synchronised). Reported: real (non-pad) tokens/s, padding fraction, peak
memory (``torch.cuda.max_memory_allocated``; peak RSS on CPU), MFU = real tokens/s x model FLOPs per token /
peak FLOP/s, with model FLOPs per token = 4 x (non-embedding + LM-head parameters) for LoRA/QLoRA (forward,
plus the backward through frozen weights; attention scores and recomputation not counted).

Decoding: greedy, ``--decode-batch`` prompts of 96-128 tokens, ``--decode-new`` new tokens, no stopping
(EOS ignored so both sides decode the same number of steps): transformers' eager ``generate`` against
sgft_lab's static-KV-cache decoder (compiled with CUDA graphs on CUDA; eager on CPU). Outputs are compared
token by token in the benchmark dtype (bf16 on GPU: random-init weights have near-ties there) and in fp32
(must be identical).

    python experiments/benchmarks/student_throughput.py --quick --out-dir bench_out  # GPU: one call, < 8 min
    python experiments/benchmarks/student_throughput.py                      # GPU: everything (long)
    python experiments/benchmarks/student_throughput.py --part train --shapes qwen2.5-0.5b --modes qlora
    python experiments/benchmarks/student_throughput.py --tiny               # CPU smoke run (tests)
    python experiments/benchmarks/student_throughput.py --tiny --quick --out-dir /tmp/b  # the quick plan, CPU

``--quick``: every kind of measurement the targets need (QLoRA and LoRA bf16 at 8x512 on both shapes and
both stacks, the QLoRA 16x1024 memory case on the 0.5B shape, decoding on both shapes) with 2 + 8 steps per
side and 128 new tokens, ordered by importance (``build_plan``), under a wall-clock budget (``--budget-s``,
450 s): a measurement whose estimate (``estimate_s``, guessed H100 costs) would end past the budget is
recorded as ``skipped: budget`` instead of run. gpu_quick.sh (beside this file) runs it in one device call.

Prints Markdown tables; ``--out FILE`` appends one JSON object per measurement (with its wall clock:
``started_s``, ``elapsed_s``, ``est_s``); ``--out-dir DIR`` writes DIR/bench.jsonl and DIR/bench.md, the
report (date, device, command, versions, the targets with met / missed / not measured, the tables with the
ratios, the phases), rewritten after every measurement so that a call killed at its limit keeps it. An
error other than out-of-memory is recorded, the run goes on, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The real models' shapes (config.json of Qwen/Qwen2.5-0.5B and meta-llama/Llama-3.2-1B), written out because
# AutoConfig cannot download here. Weights are random: throughput and memory depend on shapes only.
SHAPES: dict[str, dict] = {
    "qwen2.5-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
        use_sliding_window=False),
    "llama-3.2-1b": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        hidden_act="silu",
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
    "tiny": dict(
        model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024, tie_word_embeddings=False,
        hidden_act="silu"),
}
PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, vendor spec


# --------------------------------------------------------------------------------------------------------
# Data: variable-length rationale samples
# --------------------------------------------------------------------------------------------------------
def rationale_samples(n: int, max_len: int, vocab: int, seed: int) -> list[dict]:
    """``n`` samples shaped like Fine-tune-CoT training samples: a question (~12% of ``max_len``, lognormal)
    then a rationale + answer (~25%, lognormal, long tail), capped at ``max_len``; 5% are exactly
    ``max_len`` long, so both sides meet at least one batch of the full shape (worst-case memory).
    Token ids are random; the loss covers the label part only, as in training."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 20 == 0:
            total = max_len
            prompt = max(1, int(0.15 * max_len))
        else:
            prompt = max(4, min(max_len // 2, int(rng.lognormvariate(math.log(0.12 * max_len), 0.5))))
            label = max(4, int(rng.lognormvariate(math.log(0.25 * max_len), 0.6)))
            total = min(max_len, prompt + label)
        ids = [rng.randrange(3, vocab) for _ in range(total)]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    rng.shuffle(out)
    return out


def plain_batches(items: list[dict], batch: int, seed: int) -> list[list[dict]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [[items[i] for i in order[s:s + batch]] for s in range(0, len(order), batch)]


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------
def make_config(shape: str):
    from transformers import AutoConfig

    kw = dict(SHAPES[shape])
    return AutoConfig.for_model(kw.pop("model_type"), **kw)


def save_random_model(shape: str, folder: Path, dtype, seed: int = 0) -> dict:
    """Random-init weights of ``shape`` saved in ``folder`` (with a small tokenizer build_student can load);
    returns parameter counts for the FLOP estimate."""
    import torch
    from transformers import AutoModelForCausalLM

    from sgft_lab.students.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    config = make_config(shape)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = config.vocab_size * config.hidden_size
    model.save_pretrained(folder)
    train_tokenizer([f"sample {i} --> {i}" for i in range(50)], 300).save_pretrained(folder)
    del model
    gc.collect()
    return {"params": total, "non_embedding": total - embed, "lm_head": head}


def bnb_config(compute_dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def lora_config():
    from peft import LoraConfig, TaskType

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS,
                      task_type=TaskType.CAUSAL_LM)


# --------------------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def release() -> None:
    """Return freed memory to the device (callers drop their references first)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------
# The plain stack
# --------------------------------------------------------------------------------------------------------
def run_plain(folder: Path, mode: str, warm: list[dict], timed: list[dict], batch: int, device,
              dtype) -> dict:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from sgft_lab.students.encode import collate

    kwargs = {"dtype": dtype}
    if mode == "qlora":
        kwargs.update(quantization_config=bnb_config(dtype), device_map={"": device.index or 0}
                      if device.type == "cuda" else {"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if device.type == "cpu":
            from sgft_lab.students.build import disable_cpu_bf16_repack

            disable_cpu_bf16_repack(model)
    else:
        model = model.to(device)
    model = get_peft_model(model, lora_config())
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def step(items):
        b = collate(items, pad_id=0, family="decoder")
        b = {k: v.to(device) for k, v in b.items()}
        with autocast:
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return b["attention_mask"]

    for items in plain_batches(warm, batch, seed=1):
        step(items)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    real = positions = 0
    masks = [step(items) for items in plain_batches(timed, batch, seed=2)]
    sync(device)
    seconds = time.perf_counter() - t0
    for m in masks:
        real += int(m.sum())
        positions += m.numel()
    return {"seconds": seconds, "real_tokens": real, "positions": positions, "peak_gib": peak_gib(device)}


# --------------------------------------------------------------------------------------------------------
# sgft_lab
# --------------------------------------------------------------------------------------------------------
def run_sgft(folder: Path, mode: str, warm: list[dict], timed: list[dict], batch: int, device, dtype, *,
             gc_mode: str, compile: bool, optimizer: str) -> dict:
    import lightning.pytorch as pl
    import torch

    from sgft_lab.config import StudentConfig, TrainerConfig
    from sgft_lab.data.datamodules import LengthGroupedSampler
    from sgft_lab.students.build import build_student
    from sgft_lab.students.encode import collate
    from sgft_lab.students.module import StudentModule

    bf16 = dtype == torch.bfloat16
    student = build_student(StudentConfig(
        name="bench", name_or_path=str(folder), adapter=mode, dtype="bfloat16" if bf16 else "float32",
        lora_r=16, lora_alpha=32, lora_dropout=0.05, lora_target_modules=LORA_TARGETS))
    if mode != "qlora":
        student.model.to(device)
    tc = TrainerConfig(accelerator="gpu" if device.type == "cuda" else "cpu", precision="bf16-mixed" if bf16
                       else "32-true", lr=1e-4, weight_decay=0.01, optimizer=optimizer, batch_size=batch,
                       gradient_checkpointing={"auto": None, "on": True, "off": False}[gc_mode],
                       compile=compile, group_by_length=True, loss_chunk_size=4096)
    module = StudentModule(student, tc)
    collate_fn = partial(collate, pad_id=0, family="decoder")

    def loader(items, seed):
        lengths = [len(x["input_ids"]) for x in items]
        return torch.utils.data.DataLoader(items, batch_size=batch, collate_fn=collate_fn,
                                           sampler=LengthGroupedSampler(lengths, batch, seed=seed))

    class Count(pl.Callback):
        def __init__(self):
            self.real = torch.zeros((), dtype=torch.float64, device=device)
            self.positions = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
            self.real += b["attention_mask"].sum()
            self.positions += b["attention_mask"].numel()

        def on_train_start(self, trainer, pl_module):
            reset_peak(device)
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            sync(device)
            self.seconds = time.perf_counter() - self.t0

    def trainer(callbacks=()):
        return pl.Trainer(accelerator=tc.accelerator, devices=1, precision=tc.precision, max_epochs=1,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                          callbacks=list(callbacks))

    t = trainer()
    t.fit(module, loader(warm, 1))
    del t
    release()
    count = Count()
    t = trainer([count])
    t.fit(module, loader(timed, 2))
    out = {"seconds": count.seconds, "real_tokens": int(count.real), "positions": count.positions,
           "peak_gib": peak_gib(device), "gradient_checkpointing": module.gradient_checkpointing,
           "chunked_loss": module.uses_chunked_loss, "compile": compile, "optimizer": optimizer}
    del t, module, student
    release()
    return out


# --------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------
def run_decode(folder: Path, device, dtype, batch: int, new_tokens: int, fp32_new: int = 64,
               seed: int = 0) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from sgft_lab.students.generation import greedy_ids

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device)
    model.generation_config.eos_token_id = None
    vocab = model.config.vocab_size
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(96, 128))] for _ in range(batch)]
    kw = dict(family="decoder", max_new_tokens=new_tokens, batch_size=batch, pad_id=0, eos_ids=[])
    compiled = device.type == "cuda"

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        return out, time.perf_counter() - t0

    eager, t_eager = timed(lambda: greedy_ids(model, prompts, backend="eager", **kw))
    static_kw = {**kw, "backend": "static", "options": {"compile": compiled}}
    _, t_compile = timed(lambda: greedy_ids(model, prompts, **static_kw))
    static, t_static = timed(lambda: greedy_ids(model, prompts, **static_kw))
    n_eager, n_static = sum(map(len, eager)), sum(map(len, static))
    same = sum(a == b for a, b in zip(eager, static, strict=True))
    # fp32 check (random-init bf16 weights have near-tied logits; fp32 has none in practice). On CUDA the
    # static side compiles again (new dtype and cache length): counted in fp32_static_s.
    if dtype != torch.float32:
        model = model.float()
    short = dict(kw, max_new_tokens=min(new_tokens, fp32_new))
    e32, t_e32 = timed(lambda: greedy_ids(model, prompts, backend="eager", **short))
    s32, t_s32 = timed(lambda: greedy_ids(model, prompts, backend="static", options={"compile": compiled},
                                          **short))
    out = {"batch": batch, "new_tokens": new_tokens, "eager_tok_s": n_eager / t_eager,
           "static_tok_s": n_static / t_static, "eager_s": t_eager, "static_s": t_static,
           "static_first_call_s": t_compile, "compiled": compiled, "rows_identical": same, "rows": len(eager),
           "fp32_rows_identical": sum(a == b for a, b in zip(e32, s32, strict=True)),
           "fp32_new_tokens": short["max_new_tokens"], "fp32_eager_s": t_e32, "fp32_static_s": t_s32}
    if compiled:  # drop the compiled graphs (they hold this model's weights) before the next measurement
        torch._dynamo.reset()
    return out


# --------------------------------------------------------------------------------------------------------
# The plan: which measurements, in which order, and what each is expected to cost
# --------------------------------------------------------------------------------------------------------
REAL_SHAPES = ("qwen2.5-0.5b", "llama-3.2-1b")
MEMORY_SHAPE = "qwen2.5-0.5b"  # the QLoRA 16 x 1024 memory target is on this shape
QUICK_BATCHES = {"small": (8, 512), "memory": (16, 1024)}
TINY_QUICK_BATCHES = {"small": (4, 64), "memory": (8, 128)}
QUICK_BUDGET_S = 450.0

# Budget guard inputs: guessed H100 costs in seconds. ESTIMATES, not measurements: the per-token part comes
# from the plain stack's measured tokens/s in ../shared/docs/environment.md (every batch priced as if padded
# to its full batch x max_len, both sides), the fixed parts (imports, random init + save, loading,
# quantisation, Lightning set-up, torch.compile of the decoding step) are guesses. RESULTS.md should replace
# them with the measured started_s / elapsed_s of each row.
EST_STARTUP_S = 25.0  # imports, CUDA and bitsandbytes initialisation
EST_MODEL_S = {"qwen2.5-0.5b": 15.0, "llama-3.2-1b": 25.0}  # random init on the CPU + save_pretrained
EST_TRAIN_FIXED_S = 8.0  # load (+ nf4 quantisation), peft, Trainer set-up, first-step kernel selection
EST_PLAIN_TOK_S = {("qwen2.5-0.5b", "qlora"): 14481, ("qwen2.5-0.5b", "lora"): 24318,
                   ("llama-3.2-1b", "qlora"): 15306, ("llama-3.2-1b", "lora"): 31544}
EST_GC_FACTOR = 1.35  # gradient checkpointing recomputes the forward
EST_DECODE_FIXED_S = 8.0  # load, prefill, the timed static call
EST_COMPILE_S = 45.0  # torch.compile (reduce-overhead) of one decoding step; bf16 and fp32 compile once each
EST_EAGER_STEPS_S = 16.0  # eager generate: ~16 steps/s at any batch (environment.md)
EST_TINY_S = 0.5


def label(item: dict) -> str:
    if item["part"] == "decode":
        return f"decode {item['shape']}"
    gc_part = f" (gc {item['gc']})" if item.get("gc") else ""
    expected = f"; expected: {item['expected']}" if item.get("expected") else ""
    return (f"train {item['shape']} {item['mode']} {item['batch']}x{item['max_len']} {item['stack']}{gc_part}"
            f"{expected}")


def build_plan(args) -> list[dict]:
    """The measurements in the order they run. Full plan: per shape, every batch x mode x stack, then the
    shape's decoding. Quick plan: the same kinds of measurement, fewer steps, ordered by what the targets
    need most, so that the budget guard drops the least useful ones: QLoRA 8x512 and the QLoRA memory case
    and decoding of the first shape, then QLoRA 8x512 and decoding of the second, then LoRA bf16 8x512 of
    both, last the plain stack at the memory case (expected out of memory, environment.md)."""
    shapes = [s for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    stacks = [s for s in args.stacks.split(",") if s]
    gcs = [g for g in args.gc.split(",") if g]
    train, decode = args.part in ("all", "train"), args.part in ("all", "decode")

    def train_items(shape, mode, batch, max_len, only=None):
        out = []
        for stack in stacks:
            if only and stack not in only:
                continue
            base = {"part": "train", "shape": shape, "mode": mode, "stack": stack, "batch": batch,
                    "max_len": max_len}
            out += [base] if stack == "plain" else [{**base, "gc": g} for g in gcs]
        return out

    plan: list[dict] = []
    if not args.quick:
        for shape in shapes:
            if train:
                for spec in args.batches.split(","):
                    batch, max_len = (int(x) for x in spec.lower().split("x"))
                    for mode in modes:
                        plan += train_items(shape, mode, batch, max_len)
            if decode:
                plan.append({"part": "decode", "shape": shape})
        return plan
    sizes = TINY_QUICK_BATCHES if args.tiny else QUICK_BATCHES
    mem_shape = memory_case(args)[0]
    first, later = modes[:1], modes[1:]  # the first mode (qlora by default) before the others
    for shape in shapes:
        if train:
            for mode in first:
                plan += train_items(shape, mode, *sizes["small"])
                if mode == "qlora" and shape == mem_shape:
                    plan += train_items(shape, mode, *sizes["memory"], only=("sgft",))
        if decode:
            plan.append({"part": "decode", "shape": shape})
    if train:
        for mode in later:
            for shape in shapes:
                plan += train_items(shape, mode, *sizes["small"])
        if "qlora" in modes and mem_shape in shapes and "plain" in stacks:
            plan.append({**train_items(mem_shape, "qlora", *sizes["memory"], only=("plain",))[0],
                         "expected": "out of memory (environment.md: >79 GiB)"})
    return plan


def memory_case(args) -> tuple[str, int, int]:
    """(shape, batch, max_len) of the QLoRA memory target (tiny runs: the tiny shape at a small size)."""
    if args.tiny:
        return ("tiny", *TINY_QUICK_BATCHES["memory"])
    return (MEMORY_SHAPE, *QUICK_BATCHES["memory"])


def estimate_s(item: dict, args, created=()) -> float:
    """Guessed H100 seconds of one measurement (see EST_*), model creation included if not done yet."""
    shape = item["shape"]
    if shape not in REAL_SHAPES:
        return EST_TINY_S
    total = 0.0 if shape in created else EST_MODEL_S[shape]
    if item["part"] == "decode":
        steps = args.decode_new + min(args.decode_new, args.decode_fp32_new)
        return total + EST_DECODE_FIXED_S + steps / EST_EAGER_STEPS_S + 2 * EST_COMPILE_S
    tokens = (args.warmup + args.steps) * item["batch"] * item["max_len"]
    seconds = tokens / EST_PLAIN_TOK_S.get((shape, item["mode"]), 15000)
    gc_on = item.get("gc") == "on" or (item.get("gc") == "auto" and item["mode"] == "qlora")
    if item["stack"] == "sgft" and gc_on:
        seconds *= EST_GC_FACTOR
    return total + EST_TRAIN_FIXED_S + seconds


def plan_estimate_s(plan: list[dict], args) -> float:
    created: set[str] = set()
    total = EST_STARTUP_S
    for item in plan:
        total += estimate_s(item, args, created)
        created.add(item["shape"])
    return total


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------
def machine(device) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "host": platform.node()}
    for mod in ("transformers", "peft", "bitsandbytes", "lightning"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    info["device"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                      else platform.processor() or "cpu")
    return info


def peak_flops(device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_TFLOPS_BF16.items() if k in name), None)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny shape, few steps")
    p.add_argument("--quick", action="store_true",
                   help="the whole benchmark in one short GPU call (< 8 min on one H100 by estimate): fewer "
                        "steps, 8x512 plus the QLoRA 16x1024 memory case, shorter decoding, budget guard")
    p.add_argument("--part", default="all", choices=["all", "train", "decode"])
    p.add_argument("--shapes", default="qwen2.5-0.5b,llama-3.2-1b")
    p.add_argument("--modes", default="qlora,lora", help="adapter modes: qlora,lora")
    p.add_argument("--batches", default="8x512,16x1024",
                   help="batch x max length, comma separated (full plan; --quick uses its own)")
    p.add_argument("--stacks", default="plain,sgft")
    p.add_argument("--gc", default="auto", help="sgft_lab gradient checkpointing: auto,on,off (comma list)")
    p.add_argument("--compile", action="store_true", help="sgft_lab: trainer.compile=true")
    p.add_argument("--optimizer", default="adamw", help="sgft_lab optimizer (plain: torch AdamW)")
    p.add_argument("--steps", type=int, default=None, help="timed batches per side (30; --quick 8)")
    p.add_argument("--warmup", type=int, default=None, help="untimed batches per side (5; --quick 2)")
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--decode-new", type=int, default=None, help="new tokens per prompt (256; --quick 128)")
    p.add_argument("--decode-fp32-new", type=int, default=None,
                   help="new tokens of the fp32 equality check (64; --quick 32)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget: a measurement whose estimate would end past it is skipped "
                        "(status 'skipped: budget'); 0 = none (default: 450 with --quick, else none)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak bf16 TFLOP/s for MFU")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="write DIR/bench.jsonl (appended) and DIR/bench.md (the Markdown report)")
    p.add_argument("--md", type=Path, default=None,
                   help="Markdown report (default: DIR/bench.md with --out-dir, else --out with .md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plan", action="store_true", help="print the plan with its estimates and exit")
    args = p.parse_args(argv)
    if args.tiny:
        args.shapes = "tiny"
        if not args.quick:
            args.batches = "4x64"
        args.decode_batch = 4
    # defaults: (full, quick, tiny, tiny quick)
    def pick(full, quick, tiny, tiny_quick):
        return (tiny_quick if args.quick else tiny) if args.tiny else (quick if args.quick else full)

    args.steps = args.steps if args.steps is not None else pick(30, 8, 3, 2)
    args.warmup = args.warmup if args.warmup is not None else pick(5, 2, 1, 1)
    args.decode_new = args.decode_new if args.decode_new is not None else pick(256, 128, 8, 8)
    args.decode_fp32_new = args.decode_fp32_new if args.decode_fp32_new is not None else pick(64, 32, 8, 8)
    if args.budget_s is None:
        args.budget_s = QUICK_BUDGET_S if args.quick else 0.0
    if args.out_dir is not None and not args.plan:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        args.out = args.out or args.out_dir / "bench.jsonl"
        args.md = args.md or args.out_dir / "bench.md"
    elif args.md is None and args.out is not None:
        args.md = args.out.with_suffix(".md")
    return args


def print_plan(plan: list[dict], args) -> None:
    """The plan with the guard's estimates (guessed one-H100 seconds, not measurements)."""
    created: set[str] = set()
    total = EST_STARTUP_S
    print(f"| # | measurement | estimate s | cumulative s |\n| --- | --- | --- | --- |\n"
          f"| | start-up | {EST_STARTUP_S:.0f} | {total:.0f} |")
    for i, item in enumerate(plan, 1):
        est = estimate_s(item, args, created)
        created.add(item["shape"])
        total += est
        print(f"| {i} | {label(item)} | {est:.1f} | {total:.1f} |")
    print(f"\nbudget: {args.budget_s or 'none'} s; guessed one-H100 costs, not measurements "
          f"(EST_* in {Path(__file__).name})")


def main(argv=None) -> list[dict]:
    t_start = time.monotonic()
    args = parse_args(argv)
    if args.plan:
        print_plan(build_plan(args), args)
        return []
    import torch

    if args.tiny:
        torch.set_num_threads(1)
    import logging
    import traceback
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|litlogger|Paged optimizers).*")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    flops_peak = peak_flops(device, args.peak_tflops)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = machine(device)
    given = sys.argv[1:] if argv is None else argv
    command = "python experiments/benchmarks/student_throughput.py " + " ".join(map(str, given))
    plan = build_plan(args)
    meta = {"date": stamp, "command": command, "env": env, "args": args, "plan": plan,
            "estimate_s": plan_estimate_s(plan, args), "budget_s": args.budget_s, "t_start": t_start,
            "on_gpu": device.type == "cuda", "memory_case": memory_case(args)}
    print(f"plan: {len(plan)} measurements; estimated H100 time {meta['estimate_s']:.0f} s (an estimate from "
          f"environment.md figures, not a measurement); budget {args.budget_s or 'none'}", flush=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row = {"date": stamp, "command": command, **env, **row}
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        if args.md:  # rewritten after every measurement: a call killed at its time limit keeps its report
            try:
                write_report(args.md, rows, meta)
            except Exception:  # the report must never cost the measurements still to come
                traceback.print_exc()
        print(json.dumps({k: v for k, v in row.items() if k not in env and k not in ("date", "command")}),
              flush=True)

    created: dict[str, tuple[Path, dict]] = {}
    ran_any = False
    # Calibration of the guessed costs in this very run: each later estimate of a part (train, decode) is
    # scaled by measured / estimated of that part's last measurement, so that a slower compile than
    # guessed makes the guard skip the measurements that no longer fit, instead of running past the call.
    scale = {"train": 1.0, "decode": 1.0}
    with tempfile.TemporaryDirectory(prefix="sgft_bench_") as tmp:
        for item in plan:
            shape = item["shape"]
            raw = estimate_s(item, args, created)
            est = raw * scale[item["part"]]
            started = time.monotonic() - t_start
            timing = {"started_s": round(started, 2), "est_s": round(est, 1),
                      "est_scale": round(scale[item["part"]], 3)}
            if args.budget_s and ran_any and started + est > args.budget_s:
                emit({**item, "status": "skipped: budget", **timing, "budget_s": args.budget_s})
                continue
            ran_any = True
            t_item = time.monotonic()
            extra: dict = {}
            try:
                reset_peak(device)
                if shape not in created:
                    t_model = time.monotonic()
                    folder = Path(tmp) / shape
                    created[shape] = (folder, save_random_model(shape, folder, dtype, seed=args.seed))
                    extra["model_create_s"] = round(time.monotonic() - t_model, 2)
                folder, counts = created[shape]
                if item["part"] == "decode":
                    r = run_decode(folder, device, dtype, args.decode_batch, args.decode_new,
                                   args.decode_fp32_new, seed=args.seed)
                    release()
                    row = {**item, "status": "ok", **r}
                else:
                    batch, max_len, mode = item["batch"], item["max_len"], item["mode"]
                    vocab = SHAPES[shape]["vocab_size"]
                    warm = rationale_samples(args.warmup * batch, max_len, vocab, seed=args.seed + 1)
                    timed = rationale_samples(args.steps * batch, max_len, vocab, seed=args.seed + 2)
                    if item["stack"] == "plain":
                        r = run_plain(folder, mode, warm, timed, batch, device, dtype)
                    else:
                        r = run_sgft(folder, mode, warm, timed, batch, device, dtype, gc_mode=item["gc"],
                                     compile=args.compile, optimizer=args.optimizer)
                    release()
                    tok_s = r["real_tokens"] / r["seconds"]
                    flops_per_token = 4 * (counts["non_embedding"] + counts["lm_head"])
                    row = {**item, "status": "ok", **r, "real_tok_s": tok_s,
                           "padding_fraction": 1 - r["real_tokens"] / r["positions"],
                           "mfu": tok_s * flops_per_token / flops_peak if flops_peak else None}
            except Exception as e:  # out of memory is a result; anything else is recorded, then fails the run
                if is_oom(e):
                    row = {**item, "status": "out of memory", "peak_gib": peak_gib(device)}
                else:
                    traceback.print_exc()
                    why = " ".join(str(e).split())[:300].replace("|", "/")  # one Markdown table cell
                    row = {**item, "status": f"error: {type(e).__name__}: {why}"}
                del e  # its traceback holds the failed run's tensors
                release()
            elapsed = time.monotonic() - t_item
            if row["status"] == "ok":
                scale[item["part"]] = min(3.0, max(0.5, elapsed / raw))
            emit({**row, **extra, **timing, "elapsed_s": round(elapsed, 2)})
    meta["finished"] = True
    if args.md:
        write_report(args.md, rows, meta)
    print()
    print(report(rows, meta))
    return rows


# --------------------------------------------------------------------------------------------------------
# Report: Markdown tables, targets, phases
# --------------------------------------------------------------------------------------------------------
TARGET_TOK = 2.0  # QLoRA: >= 2.0x plain real tokens/s ...
TARGET_MEM = 0.6  # ... at <= 0.6x plain peak memory
TARGET_MEMORY_GIB = 40.0  # QLoRA 16 x 1024 on the 0.5B shape
TARGET_DECODE = 10.0  # decoding: >= 10x eager generate, identical greedy outputs


def _find(rows: list[dict], **key) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)


def _not_measured(row: dict | None, who: str = "") -> str | None:
    """The verdict when ``row`` has no figures, else None."""
    if row is None:
        return f"not measured ({who}not run)"
    status = row.get("status", "ok")
    if status == "ok":
        return None
    return f"not measured ({who}{status})"


def targets(rows: list[dict], plan: list[dict], memory: tuple[str, int, int], on_gpu: bool) -> list[tuple]:
    """(target, case, figures, verdict) per target case; verdict: met | missed | not measured (why)."""
    out = []
    t1 = f"QLoRA >= {TARGET_TOK:.1f}x plain real tok/s at <= {TARGET_MEM:.1f}x plain peak memory"
    for item in plan:
        if item["part"] != "train" or item["mode"] != "qlora" or item["stack"] != "sgft":
            continue
        key = {k: item[k] for k in ("part", "shape", "mode", "batch", "max_len")}
        case = f"{item['shape']} {item['batch']}x{item['max_len']} (gc {item['gc']})"
        r, p = _find(rows, **key, stack="sgft", gc=item["gc"]), _find(rows, **key, stack="plain")
        figures = ""
        if r is not None and r.get("status") == "ok":
            figures = f"sgft_lab {r['real_tok_s']:,.0f} tok/s, {r['peak_gib']:.1f} GiB"
        verdict = _not_measured(r, "sgft_lab: ")
        if verdict is None and p is not None and p.get("status") == "out of memory":
            verdict = "not measured (plain stack out of memory: no ratio)"
        elif verdict is None:
            verdict = _not_measured(p, "plain: ")
        if verdict is None:
            tok, mem = r["real_tok_s"] / p["real_tok_s"], r["peak_gib"] / p["peak_gib"]
            figures = f"{tok:.2f}x tok/s, {mem:.2f}x peak memory"
            verdict = "met" if tok >= TARGET_TOK and mem <= TARGET_MEM else "missed"
        if r is not None and r.get("status") == "out of memory":
            verdict = "missed (sgft_lab out of memory)"
        out.append((t1, case, figures, verdict))
    shape, batch, max_len = memory
    t2 = f"QLoRA {batch} x {max_len} on the {shape} shape within {TARGET_MEMORY_GIB:.0f} GiB"
    r = _find(rows, part="train", shape=shape, mode="qlora", stack="sgft", batch=batch, max_len=max_len)
    in_plan = any(i["part"] == "train" and i["shape"] == shape and i["mode"] == "qlora"
                  and i["stack"] == "sgft" and (i["batch"], i["max_len"]) == (batch, max_len) for i in plan)
    figures = f"peak {r['peak_gib']:.1f} GiB" if r is not None and r.get("status") == "ok" else ""
    if r is not None and r.get("status") == "out of memory":
        verdict, figures = "missed (out of memory)", f"peak > {r.get('peak_gib', 0):.1f} GiB"
    elif not in_plan:
        verdict = "not measured (not in this plan)"
    else:
        verdict = _not_measured(r) or ("met" if r["peak_gib"] <= TARGET_MEMORY_GIB else "missed")
    out.append((t2, f"{shape} qlora {batch}x{max_len} sgft_lab", figures, verdict))
    t3 = f"decoding >= {TARGET_DECODE:.0f}x eager generate, same batch, identical greedy outputs"
    for item in plan:
        if item["part"] != "decode":
            continue
        r = _find(rows, part="decode", shape=item["shape"])
        verdict = _not_measured(r)
        figures = ""
        if verdict is None:
            speed = r["static_tok_s"] / r["eager_tok_s"]
            same = r["fp32_rows_identical"] == r["rows"]
            figures = (f"{speed:.1f}x; fp32 identical {r['fp32_rows_identical']}/{r['rows']} "
                       f"({r['fp32_new_tokens']} new tokens); "
                       f"bf16 identical {r['rows_identical']}/{r['rows']}")
            verdict = "met" if speed >= TARGET_DECODE and same else "missed"
        case = f"{item['shape']} batch {r['batch']}" if r and "batch" in r else item["shape"]
        out.append((t3, case, figures, verdict))
    if not on_gpu:
        out = [(t, c, f, v if v.startswith("not measured") else f"not measured (CPU run; would read: {v})")
               for t, c, f, v in out]
    return out


def tables(rows: list[dict]) -> str:
    """The training and decoding tables (Markdown), with the ratios to the plain stack."""
    lines: list[str] = []
    train = [r for r in rows if r["part"] == "train"]
    if train:
        lines += [("| shape | mode | batch x len | stack | gc | real tok/s | padding | peak GiB | MFU "
                   "| vs plain tok/s | vs plain mem |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in train:
            plain = next((p for p in train if p["stack"] == "plain" and p["status"] == "ok" and
                          (p["shape"], p["mode"], p["batch"], p["max_len"]) ==
                          (r["shape"], r["mode"], r["batch"], r["max_len"])), None)
            head = (f"| {r['shape']} | {r['mode']} | {r['batch']}x{r['max_len']} | {r['stack']} | "
                    f"{r.get('gc', '')} |")
            if r["status"] != "ok":
                peak = f">{r['peak_gib']:.1f}" if r["status"] == "out of memory" else ""
                lines.append(f"{head} {r['status']} | | {peak} | | | |")
                continue
            ratio = f"{r['real_tok_s'] / plain['real_tok_s']:.2f}x" if plain and r is not plain else ""
            mem = f"{r['peak_gib'] / plain['peak_gib']:.2f}x" if plain and r is not plain else ""
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            lines.append(f"{head} {r['real_tok_s']:,.0f} | {100 * r['padding_fraction']:.1f}% | "
                         f"{r['peak_gib']:.2f} | {mfu} | {ratio} | {mem} |")
    dec = [r for r in rows if r["part"] == "decode"]
    if dec:
        lines += ["", ("| shape | batch | new tokens | eager tok/s | sgft_lab static tok/s | speed-up "
                       "| identical rows (bench dtype) | identical rows (fp32) | static first call s |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in dec:
            if r.get("status", "ok") != "ok":
                lines.append(f"| {r['shape']} | | | {r['status']} | | | | | |")
                continue
            lines.append(f"| {r['shape']} | {r['batch']} | {r['new_tokens']} | {r['eager_tok_s']:,.0f} | "
                         f"{r['static_tok_s']:,.0f} | {r['static_tok_s'] / r['eager_tok_s']:.1f}x | "
                         f"{r['rows_identical']}/{r['rows']} | {r['fp32_rows_identical']}/{r['rows']} "
                         f"({r['fp32_new_tokens']} tokens) | {r['static_first_call_s']:.1f} |")
    return "\n".join(lines).lstrip("\n")


def print_tables(rows: list[dict]) -> None:
    print("\n" + tables(rows))


def report(rows: list[dict], meta: dict) -> str:
    """The Markdown report: header (date, device, command, versions, wall time), targets, tables, phases."""
    env, args = meta["env"], meta["args"]
    libs = ", ".join(f"{k} {env.get(k)}" for k in ("python", "torch", "cuda", "transformers", "peft",
                                                   "bitsandbytes", "lightning"))
    wall = time.monotonic() - meta["t_start"]
    counts: dict[str, int] = {}
    for r in rows:
        s = r.get("status", "ok")
        s = "error" if s.startswith("error") else s
        counts[s] = counts.get(s, 0) + 1
    pending = len(meta["plan"]) - len(rows)
    fp32_new = min(args.decode_new, args.decode_fp32_new)
    done = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none run yet"
    state = "finished" if meta.get("finished") else f"IN PROGRESS ({pending} measurements not run yet)"
    title = f"{'quick plan' if args.quick else 'full plan'}{', tiny CPU smoke run' if args.tiny else ''}"
    lines = [
        f"# Student throughput benchmark ({title})",
        "",
        f"- Date: {meta['date']}",
        f"- Device: {env.get('device')} (host {env.get('host')})",
        f"- Command: `{meta['command']}`",
        f"- Libraries: {libs}",
        (f"- Run: {state}; wall time {wall:.0f} s; budget {args.budget_s or 'none'} s; estimated one-H100 "
         f"time of this plan {meta['estimate_s']:.0f} s (an estimate from environment.md figures, not a "
         "measurement)"),
        f"- Measurements: {len(meta['plan'])} planned; {done}",
        (f"- Steps per side: {args.warmup} warm-up + {args.steps} timed; decoding {args.decode_batch} "
         f"prompts x {args.decode_new} new tokens (fp32 check: {fp32_new})"),
        ("- Models: random-init weights of the real shapes (nothing downloaded); the same samples on both "
         "sides."),
    ]
    if not meta["on_gpu"]:
        lines += ["", "> CPU run: these figures say nothing about the GPU targets and must not be quoted."]
    lines += ["", "## Targets", "", "| target | case | figures | verdict |", "| --- | --- | --- | --- |"]
    for t, c, f, v in targets(rows, meta["plan"], meta["memory_case"], meta["on_gpu"]):
        lines.append(f"| {t} | {c} | {f} | {v} |")
    body = tables(rows)
    lines += ["", "## Measurements", "", body or "(none yet)", "",
              "## Phases (wall clock, seconds since start)",
              "", "| # | measurement | started | elapsed | estimate | status |",
              "| --- | --- | --- | --- | --- | --- |"]
    for i, item in enumerate(meta["plan"]):
        r = rows[i] if i < len(rows) else None
        if r is None:
            lines.append(f"| {i + 1} | {label(item)} | | | | pending |")
            continue
        el = f"{r['elapsed_s']:.1f}" if "elapsed_s" in r else ""
        model = f" (model created: {r['model_create_s']:.1f})" if "model_create_s" in r else ""
        lines.append(f"| {i + 1} | {label(item)} | {r['started_s']:.1f} | {el}{model} | {r['est_s']:.1f} | "
                     f"{r.get('status', 'ok')} |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, rows: list[dict], meta: dict) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(report(rows, meta))
    tmp.replace(path)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    result = main()
    sys.exit(1 if any(r.get("status", "ok").startswith("error") for r in result) else 0)
