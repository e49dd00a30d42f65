"""One module per method; each reads like its paper's algorithm box and composes the shared parts."""

from __future__ import annotations

import importlib

# method.name -> "module:function"; the function takes (cfg: Config, run_dir: Path) and returns results.
METHODS = {
    "fine_tune_cot": "sgft_lab.methods.fine_tune_cot:run",
    "diverse_reasoning": "sgft_lab.methods.fine_tune_cot:run",
    "vanilla_ft": "sgft_lab.methods.fine_tune_cot:run",
}


def get_method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    module, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(module), fn)
