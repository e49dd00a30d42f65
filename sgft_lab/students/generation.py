"""Batched greedy decoding for students (Fine-tune-CoT evaluation, methods.md 2.5).

Backends (``student.decode``, passed down as :class:`DecodeOptions`; ``generate(..., backend=...)`` overrides it):

- ``eager``: transformers' ``generate`` (dynamic KV cache). Bound by per-step host overhead on a GPU
  (~16 steps/s for a 1B model at any batch size, environment.md).
- ``static``: our greedy loop over a static KV cache (``transformers.StaticCache``), prompts left-padded to a
  width bucket and batches padded to a fixed size so every decoding step has the same shapes; on CUDA the
  step (base model + LM head + argmax) is ``torch.compile``d with CUDA graphs (``mode="reduce-overhead"``),
  so a step is one graph launch and the host never waits on the GPU except for the stop check every
  ``check_every`` steps. On CPU it runs eagerly. Decoders of the types ``loss.decoder_parts`` covers only.
- ``vllm``: the vLLM engine (optional, lazily imported), weights handed over through a temporary folder.
- ``auto``: ``static`` on CUDA for supported decoders, ``eager`` otherwise.

Greedy outputs are the same token ids for ``eager`` and ``static`` (same model, same dtype), up to exact ties
of logits: tests/test_students_scale.py checks it in fp32 on a trained tiny model.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgft_lab.students.encode import prompt_ids

BACKENDS = ("auto", "eager", "static", "vllm")
WIDTH_BUCKET = 32  # compiled static decoding: prompt widths rounded up to a multiple of this (fewer shapes)

_decoders: weakref.WeakKeyDictionary[Any, StaticDecoder] = weakref.WeakKeyDictionary()
_static_failed: weakref.WeakSet = weakref.WeakSet()  # models whose `auto` static decoding failed once: eager


@dataclass(frozen=True)
class DecodeOptions:
    """The evaluation decoding choices of a student (``student.decode*``)."""

    backend: str = "auto"  # auto | eager | static | vllm
    compile: bool | None = None  # static: compile the step (None: on CUDA only)
    check_every: int = 16  # static: decoding steps between stop checks
    vllm_kwargs: dict = field(default_factory=dict)  # vllm: vllm.LLM keyword arguments
    official_padding: bool = False  # Fine-tune-CoT's GPT-2 evaluation (greedy_ids)

    @classmethod
    def of(cls, cfg: Any) -> "DecodeOptions":
        backend = getattr(cfg.decode, "value", cfg.decode)
        return cls(backend, cfg.decode_compile, cfg.decode_check_every, dict(cfg.vllm_kwargs or {}),
                   bool(getattr(cfg, "official_padding", False)))

    def options(self) -> dict:
        """The backend's keyword options (greedy_ids ``options``)."""
        if self.backend == "vllm":
            return dict(self.vllm_kwargs)
        out: dict[str, Any] = {"check_every": self.check_every}
        if self.compile is not None:
            out["compile"] = self.compile
        return out


def _eos_ids(model, tokenizer) -> list[int]:
    """EOS ids to stop at: the tokenizer's (labels end with it) and any in the model's generation config."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in ([gen_eos] if isinstance(gen_eos, int) else (gen_eos or [])):
        if i not in ids:
            ids.append(i)
    return ids


def resolve_backend(model, family: str, backend: str | None = None) -> str:
    """The backend that will run: ``backend`` (None: auto), with ``auto`` resolved to ``static`` (a CUDA
    decoder that StaticDecoder supports, whose static decoding has not failed before) or ``eager``."""
    from sgft_lab.students.loss import decoder_parts

    backend = backend or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"decode backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        device = next(model.parameters()).device
        ok = family == "decoder" and device.type == "cuda" and decoder_parts(model) is not None
        return "static" if ok and model not in _static_failed else "eager"
    if backend == "static" and (family != "decoder" or decoder_parts(model) is None):
        raise ValueError(f"decode backend 'static' supports decoders of the types in "
                         f"sgft_lab.students.loss.CHUNKABLE_MODEL_TYPES, not this {family} "
                         f"({type(model).__name__}); use student.decode=eager")
    return backend


def trim_at_eos(ids: Sequence[int], eos: Sequence[int]) -> list[int]:
    """``ids`` up to and including the first EOS."""
    out = []
    for t in ids:
        out.append(int(t))
        if t in eos:
            break
    return out


def greedy_ids(model, encoded: Sequence[Sequence[int]], *, family: str, max_new_tokens: int, batch_size: int,
               pad_id: int, eos_ids: Sequence[int], backend: str | None = "eager",
               options: dict | None = None, on_batch: Callable[..., None] | None = None,
               max_length: int | None = None, official_padding: bool = False) -> list[list[int]]:
    """New token ids of greedy decoding for each prompt in ``encoded`` (input order), cut after the first EOS.

    Prompts are sorted longest first so each batch holds similar lengths (and an out-of-memory error shows in
    the first batch); decoders are left-padded. ``backend``: eager | static | vllm | auto | None (auto); see the
    module docstring.

    ``max_length``: Fine-tune-CoT's ``generate(max_length=...)`` instead of ``max_new_tokens``: a decoder's
    prompt (its padded batch width) counts against it, an encoder-decoder's output (with its start token)
    does. ``official_padding``: as Fine-tune-CoT evaluated GPT-2 -- every batch left-padded to the longest
    prompt of the whole set, in input order, and no attention mask (the pads are attended); eager only.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    options = dict(options or {})
    eos = list(eos_ids)
    backend = "eager" if official_padding else resolve_backend(model, family, backend)
    if backend == "vllm":
        return vllm_greedy(model, encoded, max_new_tokens=max_new_tokens, eos_ids=eos, options=options)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    if official_padding:
        order = list(range(len(encoded)))  # the official test loader: file order, one width for the whole set
    set_width = max((len(e) for e in encoded), default=0)
    left = family == "decoder"  # a decoder's new tokens must follow its prompt directly
    device = next(model.parameters()).device
    outputs: list[list[int] | None] = [None] * len(encoded)
    static = None
    if backend == "static":
        static = _decoders.get(model)
        want_compile = bool(options.get("compile", device.type == "cuda"))
        dtype = next(model.parameters()).dtype
        if static is None or static.compiled != want_compile or static.dtype != dtype:
            static = _decoders[model] = StaticDecoder(model, compile=want_compile,
                                                      check_every=int(options.get("check_every", 16)))
        # Compiled: one prompt width for every batch of this call (the longest prompt, bucketed), so the
        # decoding step keeps one shape per evaluation set and compiles once, not once per batch.
        width = max(len(e) for e in encoded) if encoded else 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: bnb/peft may cache tensors that training later reuses
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                seqs = [list(encoded[i]) for i in idx]
                batch_width = set_width if official_padding else max(len(s) for s in seqs)
                new = new_tokens(model, family, max_new_tokens, max_length,
                                 width if static is not None else batch_width)
                if new <= 0:
                    rows = [[] for _ in seqs]
                elif static is not None:
                    rows = static.run(seqs, new, pad_id, eos, batch_size=batch_size, min_width=width)
                else:
                    rows = _hf_generate(model, seqs, left, family, new, pad_id, eos, device,
                                        width=batch_width, attend_pads=official_padding)
                for i, r in zip(idx, rows, strict=True):
                    outputs[i] = trim_at_eos(r, eos)
                if on_batch is not None:  # prompts done, new tokens made
                    on_batch(len(idx), sum(len(outputs[i]) for i in idx))
    finally:
        model.train(was_training)
    return outputs  # type: ignore[return-value]


def _left_pad(seqs: list[list[int]], width: int, pad_id: int, left: bool = True):
    import torch

    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        input_ids[r, sl] = torch.tensor(s, dtype=torch.long)
        attention_mask[r, sl] = 1
    return input_ids, attention_mask


def new_tokens(model, family: str, max_new_tokens: int, max_length: int | None, width: int) -> int:
    """New tokens for a batch of prompt ``width``: ``max_new_tokens``, or what ``max_length`` leaves (HF
    ``generate(max_length)``: a decoder's prompt counts, an encoder-decoder's start token does), never past
    the model's positions."""
    if max_length is None:
        new = max_new_tokens
    else:
        new = max_length - (width if family == "decoder" else 1)
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if family == "decoder" and isinstance(positions, int):
        new = min(new, positions - width)
    return new


def _hf_generate(model, seqs, left, family, max_new_tokens, pad_id, eos, device, width: int | None = None,
                 attend_pads: bool = False) -> list[list[int]]:
    width = width or max(len(s) for s in seqs)
    input_ids, attention_mask = _left_pad(seqs, width, pad_id, left)
    if attend_pads:  # Fine-tune-CoT passed no attention mask: GPT-2's pads (= EOS) are attended
        attention_mask = torch_ones_like(attention_mask)
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=eos,
    )
    new = out[:, width:] if family == "decoder" else out[:, 1:]  # seq2seq: drop the decoder start token
    return new.tolist()


class StaticDecoder:
    """Greedy decoding of one decoder over a static KV cache, with the per-step call optionally compiled.

    Caches are kept per (batch, length) shape and reset between batches (their tensors keep their addresses,
    which CUDA graphs need); the compiled step is reused across calls (epochs), so compilation happens once
    per shape bucket.
    """

    def __init__(self, model, compile: bool = False, check_every: int = 16):
        import inspect

        import torch

        from sgft_lab.students.loss import decoder_parts

        parts = decoder_parts(model)
        if parts is None:
            raise ValueError(f"static decoding: {type(model).__name__} is not a supported decoder")
        self.inner, self.head = parts
        self.config = self.inner.config
        self.dtype = next(model.parameters()).dtype
        # transformers < 5.2x takes cache_position; later versions track it inside the cache.
        self.takes_cache_position = "cache_position" in inspect.signature(self.inner.forward).parameters
        self.compiled = compile
        self.check_every = max(1, check_every)
        self.caches: dict[tuple[int, int], Any] = {}
        if compile:
            # One graph per (batch, length) shape and model; the default limit (8) would fall back to eager
            # when a run holds several students or evaluation sets.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self._step = torch.compile(self._forward, mode="reduce-overhead", dynamic=False) if compile \
            else self._forward

    def _forward(self, ids, pos, mask, cache, cache_position):
        kw = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "past_key_values": cache,
              "use_cache": True}
        if self.takes_cache_position:
            kw["cache_position"] = cache_position
        hidden = self.inner(**kw)[0][:, -1]
        return self.head(hidden).float().argmax(-1)

    def _cache(self, batch: int, length: int):
        from transformers import StaticCache

        key = (batch, length)
        cache = self.caches.get(key)
        if cache is None:
            cache = self.caches[key] = StaticCache(config=self.config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    def run(self, seqs: list[list[int]], max_new_tokens: int, pad_id: int, eos: Sequence[int],
            batch_size: int | None = None, min_width: int = 0) -> list[list[int]]:
        """Greedy new tokens for ``seqs`` (one batch): ``max_new_tokens`` each, pads after an EOS."""
        import torch

        device = self.head.weight.device
        n = len(seqs)
        width = max(len(s) for s in seqs)
        if self.compiled:  # fixed shapes: width bucket, full batch (dummy rows repeat the last prompt)
            width = -(-max(width, min_width) // WIDTH_BUCKET) * WIDTH_BUCKET
            seqs = seqs + [seqs[-1]] * (max(batch_size or n, n) - n)
        b = len(seqs)
        length = width + max_new_tokens
        ids, prompt_mask = _left_pad(seqs, width, pad_id)
        mask = torch.ones((b, length), dtype=torch.long)
        mask[:, :width] = prompt_mask
        ids, mask = ids.to(device), mask.to(device)
        # Positions as transformers' generate computes them for left padding.
        pos = (prompt_mask.cumsum(-1) - 1).masked_fill(prompt_mask == 0, 1).to(device)
        cache = self._cache(b, length)
        # Prefill (eager: one call per batch, compiling it would cost more than it saves).
        next_tok = self._forward(ids, pos, mask, cache, torch.arange(width, device=device))
        pos = pos[:, -1:].clone()
        eos_t = torch.tensor(list(eos) or [-1], device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
        cache_position = torch.tensor([width], device=device)
        for t in range(max_new_tokens):
            next_tok = torch.where(done, torch.full_like(next_tok, pad_id), next_tok)
            out[:, t] = next_tok
            done = done | torch.isin(next_tok, eos_t)
            if t + 1 == max_new_tokens:
                break
            if (not self.compiled or (t + 1) % self.check_every == 0) and bool(done[:n].all()):
                break
            pos = pos + 1
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            next_tok = self._step(next_tok[:, None], pos, mask, cache, cache_position).clone()
            cache_position = cache_position + 1
        return out[:n].tolist()


def vllm_greedy(model, encoded: Sequence[Sequence[int]], *, max_new_tokens: int, eos_ids: Sequence[int],
                options: dict | None = None) -> list[list[int]]:
    """Greedy decoding with vLLM (optional dependency). The current weights are saved to a temporary folder
    (LoRA merged into a copy; QLoRA is not supported) and loaded by ``vllm.LLM(**options)``, which sees the
    prompts as token ids. vLLM's kernels differ from transformers', so outputs may differ at near-ties."""
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError("student.decode=vllm needs the vllm package (pip install vllm, a CUDA machine); "
                           "student.decode=static is the built-in fast path") from e
    import copy
    import gc
    import tempfile

    import torch

    from sgft_lab.students.loss import unwrap

    if any(p.__class__.__name__ == "Params4bit" for p in model.parameters()):
        raise ValueError("student.decode=vllm does not take 4-bit (QLoRA) students; "
                         "use student.decode=static")
    with tempfile.TemporaryDirectory(prefix="sgft_vllm_") as tmp:
        merged = copy.deepcopy(model)
        if hasattr(merged, "merge_and_unload"):
            merged = merged.merge_and_unload()
        unwrap(merged).save_pretrained(tmp)
        del merged
        kwargs = {"gpu_memory_utilization": 0.3, "enforce_eager": False, **(options or {})}
        llm = vllm.LLM(model=tmp, skip_tokenizer_init=True, **kwargs)
        params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(eos_ids),
                                     detokenize=False)
        prompts = [{"prompt_token_ids": list(ids)} for ids in encoded]
        results = llm.generate(prompts, params, use_tqdm=False)
        out = [trim_at_eos(list(r.outputs[0].token_ids), eos_ids) for r in results]
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def torch_ones_like(t):
    import torch

    return torch.ones_like(t)


def generate(model, tokenizer, family: str, prompts: list[str], max_new_tokens: int, batch_size: int = 64,
             progress: bool = False, max_input_tokens: int | None = None, backend: str | None = None,
             decode: DecodeOptions | None = None, chat: bool = False, label: str = "generating",
             max_length: int | None = None) -> list[str]:
    """Greedy completions of ``prompts`` (new text only, special tokens skipped), in input order.

    Prompts are tokenized by ``encode.prompt_ids`` (the ids the student was trained on; cut at
    ``max_input_tokens``; ``chat``: wrapped in the chat template) and decoded by ``greedy_ids`` with
    ``decode`` (the student's choices; ``backend`` overrides its backend); ``max_length``: Fine-tune-CoT's
    length rule instead of ``max_new_tokens`` (see ``greedy_ids``). ``progress``: a bar named ``label``
    advancing per batch, with new tokens per second.
    Departs from Fine-tune-CoT in bounding new tokens (``max_new_tokens``) rather than prompt + new
    (``max_length=1024``). The model runs in eval mode under ``torch.no_grad`` and gets its mode back.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    decode = decode or DecodeOptions()
    wanted = backend or decode.backend
    eos = _eos_ids(model, tokenizer)
    encoded = [prompt_ids(tokenizer, family, p, max_input_tokens, chat=chat) for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"generate: prompt(s) at index {empty[:5]} encode to no tokens")
    chosen = resolve_backend(model, family, wanted)

    bar = task = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                       TextColumn("{task.fields[tok_s]}"), TimeRemainingColumn(), transient=True)
        task = bar.add_task(label, total=len(prompts), tok_s="")
        bar.start()
    try:
        kw = {"family": family, "max_new_tokens": max_new_tokens, "batch_size": batch_size, "pad_id": pad_id,
              "eos_ids": eos, "options": decode.options(), "max_length": max_length,
              "official_padding": decode.official_padding,
              "on_batch": _progress_hook(bar, task) if bar is not None else None}
        try:
            rows = greedy_ids(model, encoded, backend=chosen, **kw)
        except Exception as e:  # auto chose static: never lose an evaluation to the fast path
            if chosen != "static" or wanted != "auto":
                raise
            warnings.warn(f"static decoding failed ({type(e).__name__}: {e}); falling back to eager generate "
                          "for this model (set student.decode=eager to silence)", stacklevel=2)
            _static_failed.add(model)
            rows = greedy_ids(model, encoded, backend="eager", **kw)
    finally:
        if bar is not None:
            bar.stop()
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def _progress_hook(bar, task) -> Callable[[int, int], None]:
    """Advance the bar by a batch of prompts; show new tokens per second since the first batch."""
    import time

    start, total = time.perf_counter(), [0]

    def hook(n_prompts: int, n_new_tokens: int = 0) -> None:
        total[0] += n_new_tokens
        rate = total[0] / max(time.perf_counter() - start, 1e-9)
        bar.update(task, advance=n_prompts, tok_s=f"{rate:,.0f} tok/s")

    return hook
