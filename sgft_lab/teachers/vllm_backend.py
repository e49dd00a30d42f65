"""teacher=vllm: vLLM's offline engine (``vllm.LLM``), imported only when this teacher is chosen.

vLLM schedules its own batches, so the engine hands it large batches (``teacher.batch_size``, 1024 in
conf/teacher/vllm.yaml); each batch is committed to the cache when it returns. ``teacher.extra`` goes to
``vllm.LLM(...)`` (tensor_parallel_size, gpu_memory_utilization, max_model_len, quantization, ...). At
temperature > 0 each request carries its own seed (``teacher.seed``, prompt, sample index), so sample k
is reproducible.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Completion, Request
from .hf import sample_seed
from .pricing import lookup_price

VLLM_MISSING = (
    "teacher=vllm needs the `vllm` package, which is not installed in this environment.\n"
    "  - On a Linux machine with a CUDA GPU: pip install 'sgft-lab[vllm]' (or pip install vllm; it pins its own "
    "torch, so use a separate virtual environment).\n"
    "  - Or serve the model with vLLM elsewhere (`vllm serve MODEL`) and use the API backend: "
    "teacher=openai teacher.base_url=http://HOST:8000/v1 teacher.model=MODEL.\n"
    "  - Or run it in-process with transformers: teacher=hf teacher.model=MODEL.")


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(VLLM_MISSING) from e
    return vllm


def vllm_identity(model: str, dtype: str, use_chat_template: bool, seed: int) -> str:
    """The cache identity of a vLLM teacher: its recipe (known without loading the weights)."""
    return f"vllm:{model}|dtype={dtype}|chat={int(use_chat_template)}|seed={seed}"


def identity_for(cfg: Any) -> str:
    """``vllm_identity`` of a teacher config (``dry_run``: no vllm import, no weights)."""
    return vllm_identity(cfg.model, cfg.dtype, cfg.use_chat_template, cfg.seed)


class VLLMTeacher:
    cacheable = True
    price = None

    def __init__(self, model: str, *, seed: int = 0, dtype: str = "auto", use_chat_template: bool = False,
                 trust_remote_code: bool = False, batch_size: int | None = None, engine_kwargs: dict | None = None):
        if not model:
            raise ValueError("teacher.model: required for teacher=vllm (a hub name or a local path)")
        self._vllm = import_vllm()
        self.model, self.seed, self.use_chat_template, self.batch_size = model, seed, use_chat_template, batch_size
        self.identity = vllm_identity(model, dtype, use_chat_template, seed)
        self._llm = self._vllm.LLM(model=model, seed=seed, dtype=dtype, trust_remote_code=trust_remote_code,
                                   **dict(engine_kwargs or {}))

    def __repr__(self) -> str:
        return f"VLLMTeacher({self.identity!r})"

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        sps = []
        for r in requests:
            p = r.params
            sps.append(self._vllm.SamplingParams(
                n=1, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                stop=list(p.stop) if p.stop else None,
                seed=sample_seed(self.seed, r.prompt, r.sample_index) % (2**31) if p.temperature > 0 else None))
        if self.use_chat_template:
            outs = self._llm.chat([[{"role": "user", "content": r.prompt}] for r in requests], sps, use_tqdm=False)
        else:
            outs = self._llm.generate([r.prompt for r in requests], sps, use_tqdm=False)
        result = []
        for o in outs:
            c = o.outputs[0]
            result.append(Completion(text=c.text, finish_reason=c.finish_reason,
                                     prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids)))
        return result


def from_config(cfg: Any) -> VLLMTeacher:
    t = VLLMTeacher(cfg.model, seed=cfg.seed, dtype=cfg.dtype, use_chat_template=cfg.use_chat_template,
                    trust_remote_code=cfg.trust_remote_code, batch_size=cfg.batch_size, engine_kwargs=cfg.extra)
    t.price = lookup_price(cfg.model, cfg.prices) if cfg.prices else None  # local: free unless priced
    return t
