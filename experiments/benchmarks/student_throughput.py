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

    python experiments/benchmarks/student_throughput.py                      # GPU: everything (long)
    python experiments/benchmarks/student_throughput.py --part train --shapes qwen2.5-0.5b --modes qlora
    python experiments/benchmarks/student_throughput.py --tiny               # CPU smoke run (tests)

Prints Markdown tables; ``--out FILE`` appends one JSON object per measurement.
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
        lora_r=16, lora_alpha=32, lora_dropout=0.05, lora_target_modules=LORA_TARGETS, decode="eager"))
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
def run_decode(folder: Path, device, dtype, batch: int, new_tokens: int, seed: int = 0) -> dict:
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
    # fp32 check (random-init bf16 weights have near-tied logits; fp32 has none in practice)
    if dtype != torch.float32:
        model = model.float()
    short = dict(kw, max_new_tokens=min(new_tokens, 64))
    e32 = greedy_ids(model, prompts, backend="eager", **short)
    s32 = greedy_ids(model, prompts, backend="static", options={"compile": compiled}, **short)
    out = {"batch": batch, "new_tokens": new_tokens, "eager_tok_s": n_eager / t_eager,
           "static_tok_s": n_static / t_static, "eager_s": t_eager, "static_s": t_static,
           "static_first_call_s": t_compile, "compiled": compiled, "rows_identical": same, "rows": len(eager),
           "fp32_rows_identical": sum(a == b for a, b in zip(e32, s32, strict=True)),
           "fp32_new_tokens": short["max_new_tokens"]}
    return out


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------
def machine(device) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "host": platform.node()}
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
    p.add_argument("--part", default="all", choices=["all", "train", "decode"])
    p.add_argument("--shapes", default="qwen2.5-0.5b,llama-3.2-1b")
    p.add_argument("--modes", default="qlora,lora", help="adapter modes: qlora,lora")
    p.add_argument("--batches", default="8x512,16x1024", help="batch x max length, comma separated")
    p.add_argument("--stacks", default="plain,sgft")
    p.add_argument("--gc", default="auto", help="sgft_lab gradient checkpointing: auto,on,off (comma list)")
    p.add_argument("--compile", action="store_true", help="sgft_lab: trainer.compile=true")
    p.add_argument("--optimizer", default="adamw", help="sgft_lab optimizer (plain: torch AdamW)")
    p.add_argument("--steps", type=int, default=30, help="timed batches per side")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--decode-new", type=int, default=256)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak bf16 TFLOP/s for MFU")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tiny:
        args.shapes, args.batches, args.steps, args.warmup = "tiny", "4x64", 3, 1
        args.decode_batch, args.decode_new = 4, 8
    return args


def main(argv=None) -> list[dict]:
    import torch

    args = parse_args(argv)
    if args.tiny:
        torch.set_num_threads(1)
    import logging
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
    command = "python experiments/benchmarks/student_throughput.py " + " ".join(given)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row = {"date": stamp, "command": command, **env, **row}
        rows.append(row)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k not in env and k not in ("date", "command")}),
              flush=True)

    with tempfile.TemporaryDirectory(prefix="sgft_bench_") as tmp:
        for shape in args.shapes.split(","):
            folder = Path(tmp) / shape
            counts = save_random_model(shape, folder, dtype, seed=args.seed)
            vocab = SHAPES[shape]["vocab_size"]
            flops_per_token = 4 * (counts["non_embedding"] + counts["lm_head"])
            if args.part in ("all", "train"):
                for spec in args.batches.split(","):
                    batch, max_len = (int(x) for x in spec.lower().split("x"))
                    warm = rationale_samples(args.warmup * batch, max_len, vocab, seed=args.seed + 1)
                    timed = rationale_samples(args.steps * batch, max_len, vocab, seed=args.seed + 2)
                    for mode in args.modes.split(","):
                        variants = [("plain", None)] if "plain" in args.stacks else []
                        if "sgft" in args.stacks:
                            variants += [("sgft", g) for g in args.gc.split(",")]
                        for stack, gc_mode in variants:
                            base = {"part": "train", "shape": shape, "mode": mode, "stack": stack,
                                    "batch": batch, "max_len": max_len}
                            if gc_mode:
                                base["gc"] = gc_mode
                            try:
                                if stack == "plain":
                                    r = run_plain(folder, mode, warm, timed, batch, device, dtype)
                                else:
                                    r = run_sgft(folder, mode, warm, timed, batch, device, dtype,
                                                 gc_mode=gc_mode, compile=args.compile,
                                                 optimizer=args.optimizer)
                            except Exception as e:  # out of memory is a result; anything else is a bug
                                if not is_oom(e):
                                    raise
                                peak = peak_gib(device)
                                del e  # its traceback holds the failed run's tensors
                                release()
                                emit({**base, "status": "out of memory", "peak_gib": peak})
                                continue
                            release()
                            tok_s = r["real_tokens"] / r["seconds"]
                            emit({**base, "status": "ok", **r, "real_tok_s": tok_s,
                                  "padding_fraction": 1 - r["real_tokens"] / r["positions"],
                                  "mfu": tok_s * flops_per_token / flops_peak if flops_peak else None})
            if args.part in ("all", "decode"):
                decoded = run_decode(folder, device, dtype, args.decode_batch, args.decode_new,
                                     seed=args.seed)
                release()
                emit({"part": "decode", "shape": shape, **decoded})
    print_tables(rows)
    return rows


def print_tables(rows: list[dict]) -> None:
    train = [r for r in rows if r["part"] == "train"]
    if train:
        print("\n| shape | mode | batch x len | stack | gc | real tok/s | padding | peak GiB | MFU "
              "| vs plain tok/s | vs plain mem |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in train:
            plain = next((p for p in train if p["stack"] == "plain" and p["status"] == "ok" and
                          (p["shape"], p["mode"], p["batch"], p["max_len"]) ==
                          (r["shape"], r["mode"], r["batch"], r["max_len"])), None)
            if r["status"] != "ok":
                print(f"| {r['shape']} | {r['mode']} | {r['batch']}x{r['max_len']} | {r['stack']} | "
                      f"{r.get('gc', '')} | {r['status']} | | >{r['peak_gib']:.1f} | | | |")
                continue
            ratio = f"{r['real_tok_s'] / plain['real_tok_s']:.2f}x" if plain and r is not plain else ""
            mem = f"{r['peak_gib'] / plain['peak_gib']:.2f}x" if plain and r is not plain else ""
            mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
            print(f"| {r['shape']} | {r['mode']} | {r['batch']}x{r['max_len']} | {r['stack']} | "
                  f"{r.get('gc', '')} | {r['real_tok_s']:,.0f} | {100 * r['padding_fraction']:.1f}% | "
                  f"{r['peak_gib']:.2f} | {mfu} | {ratio} | {mem} |")
    dec = [r for r in rows if r["part"] == "decode"]
    if dec:
        print("\n| shape | batch | new tokens | eager tok/s | sgft_lab static tok/s | speed-up "
              "| identical rows (bench dtype) | identical rows (fp32) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in dec:
            print(f"| {r['shape']} | {r['batch']} | {r['new_tokens']} | {r['eager_tok_s']:,.0f} | "
                  f"{r['static_tok_s']:,.0f} | {r['static_tok_s'] / r['eager_tok_s']:.1f}x | "
                  f"{r['rows_identical']}/{r['rows']} | {r['fp32_rows_identical']}/{r['rows']} |")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main()
