"""teacher=hf: a local transformers causal LM (hub name or path), batched generation on any device.

- Greedy at temperature 0. At temperature > 0, sample k of a prompt is drawn with the Gumbel-max trick
  from a generator seeded by (``teacher.seed``, prompt, k): ``argmax(logits / T + Gumbel noise)`` is an
  exact draw from ``softmax(logits / T)`` (after top-p), and each row owns its generator, so sample k is
  the same whatever else shares its batch or however the run is resumed. (HF's own sampling draws all
  rows from one global RNG, so a sample would depend on its batch.)
- Left padding; prompts go in as raw text, or as one user message through the chat template
  (``teacher.use_chat_template``). Stop strings cut the text after generation.
- ``teacher.device``: None picks cuda, then mps, then cpu. ``teacher.dtype=auto``: bfloat16 on CUDA
  (float16 where bf16 is missing), float32 elsewhere.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from .base import Completion, Request
from .pricing import lookup_price


def sample_seed(seed: int, prompt: str, sample_index: int) -> int:
    """The generator seed of sample k of a prompt (63 bits)."""
    h = hashlib.sha256(f"{seed}\x00{sample_index}\x00{prompt}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") >> 1


def pick_device(device: str | None) -> str:
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"teacher.dtype: {dtype!r} is not one of auto, float32, bfloat16, float16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class HFTeacher:
    """A synchronous backend: ``complete(requests)`` generates them in one padded batch per sampling setting."""

    cacheable = True
    price = None

    def __init__(self, name_or_path: str, *, device: str | None = None, dtype: str = "auto", seed: int = 0,
                 use_chat_template: bool = False, trust_remote_code: bool = False, batch_size: int | None = None,
                 model_kwargs: dict | None = None):
        if not name_or_path:
            raise ValueError("teacher.model: required for teacher=hf (a hub name or a local path)")
        self.name_or_path, self.seed, self.use_chat_template = name_or_path, seed, use_chat_template
        self.device = pick_device(device)
        self.dtype_name, self.trust_remote_code, self.batch_size = dtype, trust_remote_code, batch_size
        self.model_kwargs = dict(model_kwargs or {})
        self.identity = f"hf:{name_or_path}|dtype={dtype}|chat={int(use_chat_template)}|seed={seed}"
        self._model = self._tok = None

    def __repr__(self) -> str:
        return f"HFTeacher({self.identity!r}, device={self.device!r})"

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.name_or_path, trust_remote_code=self.trust_remote_code)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            self.name_or_path, dtype=pick_dtype(self.dtype_name, self.device),
            trust_remote_code=self.trust_remote_code, **self.model_kwargs)
        self._model, self._tok = model.to(self.device).eval(), tok

    def _render(self, prompt: str) -> str:
        if not self.use_chat_template:
            return prompt
        return self._tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        self._load()
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.params, []).append(i)
        for params, idx in groups.items():
            for j, c in zip(idx, self._generate([requests[i] for i in idx], params)):
                out[j] = c
        return out  # type: ignore[return-value]

    def _generate(self, reqs: list[Request], params) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        tok, model = self._tok, self._model
        texts = [self._render(r.prompt) for r in reqs]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not self.use_chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])
        gc = GenerationConfig(max_new_tokens=params.max_tokens, do_sample=False, num_beams=1,
                              eos_token_id=sorted(eos_ids), pad_token_id=tok.pad_token_id,
                              bos_token_id=model.generation_config.bos_token_id)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            seeds = [sample_seed(self.seed, r.prompt, r.sample_index) for r in reqs]
            processors.append(GumbelSampler(seeds, params.temperature, params.top_p, self.device))
        with torch.no_grad():
            gen = model.generate(**enc, generation_config=gc, logits_processor=processors)
        new = gen[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        outs = []
        for row, plen in zip(new, prompt_lens):
            n, finish = len(row), "length"
            for t, tid in enumerate(row):
                if tid in eos_ids:
                    n, finish = t, "stop"
                    break
            text = tok.decode(row[:n], skip_special_tokens=True)
            if params.stop:
                cut = min((text.find(s) for s in params.stop if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            outs.append(Completion(text=text, finish_reason=finish, prompt_tokens=int(plen), completion_tokens=n))
        return outs


class GumbelSampler:
    """Logits processor: temperature, top-p, then per-row Gumbel noise from per-row generators, so that
    greedy decoding of the result samples each row from its own reproducible stream."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device: str):
        import torch

        self.temperature, self.top_p = temperature, top_p
        gen_device = "cpu" if device == "mps" else device  # mps has no per-tensor generators
        self.gens = [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]
        self.gen_device = gen_device

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            drop = cum - torch.softmax(sorted_scores, dim=-1) >= self.top_p  # keep the first token always
            scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=self.gen_device) for g in self.gens])
        expo = (-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10)  # Exp(1) noise
        gumbel = -torch.log(expo).to(scores.device)
        return scores + gumbel


def from_config(cfg: Any) -> HFTeacher:
    t = HFTeacher(cfg.model, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                  use_chat_template=cfg.use_chat_template, trust_remote_code=cfg.trust_remote_code,
                  batch_size=cfg.batch_size, model_kwargs=cfg.extra)
    t.price = lookup_price(cfg.model, cfg.prices) if cfg.prices else None  # local: free unless priced
    return t
