"""One module per method; each reads like its paper's algorithm box and composes the shared parts.

A method is ``run(ctx: RunContext) -> None``: its science only; optionally ``check(cfg, splits)`` rejects
what the data makes impossible (nothing is written before it passes). The run lifecycle (sgft_lab/run.py) prepares
the run before it and writes results.json, the W&B summary and the table after it, whether it returns or
raises. A method records what it measured with ``ctx.add(entries)``, ``ctx.metrics`` (the headline) and
``ctx.details``. A new method: a dataclass in config.py (its settings), conf/method/<name>.yaml, a module
here, and a line below.
"""

from __future__ import annotations

import importlib

# method.name -> the module holding its run()
METHODS = {
    "fine_tune_cot": "sgft_lab.methods.fine_tune_cot",
    "diverse_reasoning": "sgft_lab.methods.fine_tune_cot",
    "vanilla_ft": "sgft_lab.methods.fine_tune_cot",
    "sgft": "sgft_lab.methods.sgft",
    "fdd": "sgft_lab.methods.fdd",
    "fdd_pot": "sgft_lab.methods.fdd",
    "zero_shot": "sgft_lab.methods.baselines",
    "zero_shot_cot": "sgft_lab.methods.baselines",
    "few_shot_cot": "sgft_lab.methods.baselines",
    "dss": "sgft_lab.methods.dss",
}


def get_method(name: str):
    """The method's module (``run`` and, where it has one, ``check``)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return importlib.import_module(METHODS[name])
