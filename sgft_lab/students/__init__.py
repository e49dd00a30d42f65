"""Students: model building (LoRA/QLoRA), tokenisation and collation, the LightningModule (chunked loss),
greedy generation (eager, static KV cache, vLLM).

Names are imported lazily, so ``import sgft_lab.students`` does not pull in torch or lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Student": "build",
    "build_student": "build",
    "count_parameters": "build",
    "disable_cpu_bf16_repack": "build",
    "train_tokenizer": "tokenizer",
    "encode_pair": "encode",
    "collate": "encode",
    "prompt_ids": "encode",
    "StudentModule": "module",
    "generate": "generation",
    "greedy_ids": "generation",
    "StaticDecoder": "generation",
    "chunked_causal_lm_loss": "loss",
    "decoder_parts": "loss",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
