"""The Teacher interface: prompts in, n completions per prompt out.

A backend implements ``complete(requests)`` for individual (prompt, sample_index) requests; everything
else (caching, resuming, accounting, progress) is the generation engine's job (``teachers/engine.py``),
so every backend gets it for free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    max_tokens: int = 128
    n: int = 1  # samples per prompt; sample k of a prompt is cached under its own key
    stop: tuple[str, ...] | None = None
    top_p: float = 1.0

    def key_dict(self) -> dict:
        d = asdict(self)
        d.pop("n")  # n is not part of a sample's identity: sample k is the same whatever n is
        d["stop"] = list(self.stop) if self.stop else None
        return d


@dataclass(frozen=True)
class Request:
    prompt: str
    params: SamplingParams
    sample_index: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: str | None = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Teacher(Protocol):
    """A backend. ``identity`` must change whenever outputs could change (model, knobs, seed)."""

    identity: str

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Return one completion per request, in order. May raise; the engine retries."""
        ...


def request_key(teacher_identity: str, req: Request) -> str:
    """Cache key: teacher identity, prompt, sampling parameters and sample index."""
    payload = json.dumps(
        {"teacher": teacher_identity, "prompt": req.prompt, "params": req.params.key_dict(),
         "sample": req.sample_index},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
