"""Price table for teacher cost accounting: USD per 1M tokens, (input, output), by model name.

Source: OpenAI's pricing page (platform.openai.com/docs/pricing), standard tier, as copied by third-party
summaries dated March-May 2026 (deploybase.ai/articles/openai-pricing, aimodelcalc.pages.dev); not
checked against OpenAI directly. The retired GPT-3 models are at their last list price (text-davinci-002:
$0.02 per 1K tokens, in and out). Prices change: override or extend per run with
``teacher.prices={MODEL: {input: X, output: Y}}``. A model found in neither is costed at 0 and the
accounting says so (``price_per_1m: null``); local backends (hf, vllm, reference) cost 0 unless priced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

PRICES_AS_OF = "2026-03"


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6

    def to_dict(self) -> dict:
        return {"input": self.input_per_1m, "output": self.output_per_1m}


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    # Retired; kept so the papers' teachers can be costed.
    "text-davinci-002": Price(20.00, 20.00),
    "text-davinci-003": Price(20.00, 20.00),
}


def _as_price(model: str, v: Any) -> Price:
    if isinstance(v, Price):
        return v
    if isinstance(v, Mapping) and {"input", "output"} <= set(v):
        return Price(float(v["input"]), float(v["output"]))
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return Price(float(v[0]), float(v[1]))
    raise ValueError(f"teacher.prices.{model}: expected {{input: USD/1M, output: USD/1M}}, got {v!r}")


def lookup_price(model: str | None, overrides: Mapping[str, Any] | None = None) -> Price | None:
    """Price of ``model``: overrides first, then the default table; exact name, else the longest prefix
    (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``). None when unknown."""
    if not model:
        return None
    table = dict(DEFAULT_PRICES)
    table.update({k: _as_price(k, v) for k, v in (overrides or {}).items()})
    if model in table:
        return table[model]
    base = model.rsplit("/", 1)[-1]  # "openai/gpt-4o" (routers) -> "gpt-4o"
    matches = [k for k in table if base == k or base.startswith(k + "-")]
    return table[max(matches, key=len)] if matches else None
