"""One module per method; each reads like its paper's algorithm box and composes the shared parts."""

from __future__ import annotations

import importlib

# method.name -> "module:function"; the function takes (cfg: Config, run_dir: Path) and returns results.
METHODS = {
    "fine_tune_cot": "sgft_lab.methods.fine_tune_cot:run",
    "diverse_reasoning": "sgft_lab.methods.fine_tune_cot:run",
    "vanilla_ft": "sgft_lab.methods.fine_tune_cot:run",
    "sgft": "sgft_lab.methods.sgft:run",
    "fdd": "sgft_lab.methods.fdd:run",
    "fdd_pot": "sgft_lab.methods.fdd:run",
    "zero_shot": "sgft_lab.methods.baselines:run",
    "zero_shot_cot": "sgft_lab.methods.baselines:run",
    "few_shot_cot": "sgft_lab.methods.baselines:run",
}


def get_method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    module, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(module), fn)
