"""Teacher backends (config group ``teacher``) and the generation engine they all run through.

==========  ================================================================  ==========================
name        backend                                                           module
==========  ================================================================  ==========================
reference   embedded teacher writing rationales from solution traces          ``reference.py`` (+ ``_sg``, ``_fdd``)
openai      any OpenAI-compatible server (OpenAI, vLLM serve, Ollama, TGI)    ``openai_backend.py``
hf          a local transformers causal LM, batched, any device               ``hf.py``
vllm        vLLM's offline engine (optional dependency)                       ``vllm_backend.py``
replay      completions read from JSONL (e.g. Fine-tune-CoT's released ones)  ``replay.py``
==========  ================================================================  ==========================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .base import Completion, Request, SamplingParams, Teacher  # noqa: F401

if TYPE_CHECKING:
    from ..benchmarks.record import Example
    from ..config import TeacherConfig

TEACHERS = ("reference", "openai", "hf", "vllm", "replay")


def build_teacher(cfg: "TeacherConfig", examples: Sequence["Example"] = (), kinds: Sequence = ()) -> Teacher:
    """Build the backend named by ``cfg.name`` -- the one place a teacher is made, for every method.

    ``examples`` lets the reference teacher read solution traces; ``kinds`` are the prompt kinds a method
    adds to it (SGFT's guidance writer, reference_sg.py; FDD's variants and programs, reference_fdd.py).
    Other backends answer every prompt themselves and ignore both."""
    if cfg.name == "reference":
        from .reference import ReferenceTeacher

        return ReferenceTeacher(examples, error_rate=cfg.error_rate, diversity=cfg.diversity, seed=cfg.seed,
                                extra_kinds=kinds)
    if cfg.name == "openai":
        from .openai_backend import from_config

        return from_config(cfg)
    if cfg.name == "hf":
        from .hf import from_config as hf_from_config

        return hf_from_config(cfg)
    if cfg.name == "vllm":
        from .vllm_backend import from_config as vllm_from_config

        return vllm_from_config(cfg)
    if cfg.name == "replay":
        from .replay import from_config as replay_from_config

        return replay_from_config(cfg)
    raise ValueError(f"unknown teacher {cfg.name!r}; known: {', '.join(TEACHERS)}")
