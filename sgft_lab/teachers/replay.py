"""teacher=replay: answer from completions stored in JSONL files; no model, no API.

Replay file schema (one JSON object per line)::

    {"prompt": "Q: ...\\nA: Let's think step by step.",   # required: the exact prompt sent to the teacher
     "completion": " First, ...",                        # required: the teacher's completion text
     "sample_index": 0,                                  # optional (default 0): sample k of this prompt
     "finish_reason": "stop",                            # optional
     "prompt_tokens": 0, "completion_tokens": 0,         # optional: token usage, if known
     "temperature": 0.7,                                 # optional: the temperature it was sampled at
     "meta": {...}}                                      # optional: anything (source file, question, ...)

Lookup: ``(prompt, sample_index)``. A greedy request (temperature 0) for sample k may be served by any
stored sample of that prompt, since greedy samples are identical; that is how Fine-tune-CoT's stage-2
answers (one per distinct stage-2 prompt) serve our stage-2 requests. With ``teacher.replay_match=
normalized`` (default) a prompt not found verbatim is looked up again with whitespace runs collapsed and
ends stripped, which absorbs the camera-ready code's stripping. A prompt with no completion is an error
listing the first few missing prompts; ``teacher.replay_missing=skip`` returns an empty completion with
``finish_reason="missing"`` instead (the correctness filter then drops it).

Replay answers are not written to the teacher cache (``cacheable = False``): the files are the cache.

:func:`convert_ftcot` turns Fine-tune-CoT's released teacher completions (the ``teacher_completion_data``
archive: ``B_text-davinci-002__C_zs_cot*/D_<dataset>.json``, format in their ``src/data/
completion_dataset.py``) into this schema: ``{"metadata": {...}, "data": {sample_index: [{completion_index,
question, answer, reasoning_prompt, reasoning_completion, reasoning_finish_reason, prompt, completion,
finish_reason}, ...]}}``. Each completion sample gives two rows: stage 1 (``reasoning_prompt`` ->
``reasoning_completion``, ``sample_index = completion_index``) and stage 2 (``prompt`` -> ``completion``,
``sample_index = 0``, greedy in the paper). CLI: ``python -m sgft_lab.teachers convert-ftcot FILE.json ...
-o teacher.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import iter_jsonl, write_jsonl
from .base import Completion, Request

log = logging.getLogger("sgft_lab.teachers")

_WS = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    return _WS.sub(" ", prompt).strip()


class ReplayMissingError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads better plain
        return str(self.args[0])


@dataclass
class ReplayStats:
    exact: int = 0
    normalized: int = 0
    greedy_any_sample: int = 0
    missing: int = 0
    temperature_mismatch: int = 0


class ReplayTeacher:
    """A synchronous backend over one or more replay JSONL files."""

    cacheable = False

    def __init__(self, files: Sequence[str | Path], *, missing: str = "error", match: str = "normalized"):
        if missing not in ("error", "skip"):
            raise ValueError(f"teacher.replay_missing: {missing!r} is not one of ('error', 'skip')")
        if match not in ("exact", "normalized"):
            raise ValueError(f"teacher.replay_match: {match!r} is not one of ('exact', 'normalized')")
        if not files:
            raise ValueError("teacher.replay_files: give at least one JSONL file (see sgft_lab/teachers/replay.py)")
        self.files = [Path(f) for f in files]
        self.missing, self.match = missing, match
        self.stats = ReplayStats()
        self._rows: dict[tuple[str, int], dict] = {}
        self._where: dict[tuple[str, int], str] = {}
        self._by_prompt: dict[str, list[int]] = {}
        self._norm: dict[tuple[str, int], tuple[str, int]] = {}
        self._norm_prompt: dict[str, str] = {}
        digest = hashlib.sha256()
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(f"teacher.replay_files: {f} does not exist")
            digest.update(f.read_bytes())
            self._load(f)
        self.identity = f"replay:{digest.hexdigest()[:16]}"
        self._warned = False

    def _load(self, path: Path) -> None:
        for lineno, row in enumerate(iter_jsonl(path), 1):
            where = f"{path}:{lineno}"
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            for fld, typ in (("prompt", str), ("completion", str)):
                if not isinstance(row.get(fld), typ):
                    raise ValueError(f"{where}: field `{fld}` must be a string")
            k = row.get("sample_index", 0)
            if not isinstance(k, int) or k < 0:
                raise ValueError(f"{where}: field `sample_index` must be a non-negative integer")
            key = (row["prompt"], k)
            if key in self._rows:
                if self._rows[key]["completion"] != row["completion"]:
                    raise ValueError(f"{where}: prompt/sample_index already given a different completion at "
                                     f"{self._where[key]}")
                continue
            self._rows[key], self._where[key] = row, where
            self._by_prompt.setdefault(row["prompt"], []).append(k)
            n = normalize_prompt(row["prompt"])
            self._norm.setdefault((n, k), key)
            self._norm_prompt.setdefault(n, row["prompt"])

    def __len__(self) -> int:
        return len(self._rows)

    def _find(self, req: Request) -> dict | None:
        prompt, k = req.prompt, req.sample_index
        if (prompt, k) in self._rows:
            self.stats.exact += 1
            return self._rows[(prompt, k)]
        if self.match == "normalized":
            n = normalize_prompt(prompt)
            if (n, k) in self._norm:
                self.stats.normalized += 1
                return self._rows[self._norm[(n, k)]]
            prompt = self._norm_prompt.get(n, prompt)
        if req.params.temperature == 0 and self._by_prompt.get(prompt):
            self.stats.greedy_any_sample += 1
            return self._rows[(prompt, min(self._by_prompt[prompt]))]
        return None

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        out, missing = [], []
        for r in requests:
            row = self._find(r)
            if row is None:
                missing.append(r)
                out.append(Completion(text="", finish_reason="missing"))
                continue
            t = row.get("temperature")
            if t is not None and float(t) != r.params.temperature:
                self.stats.temperature_mismatch += 1
                if not self._warned:
                    self._warned = True
                    log.warning("replay: a completion sampled at temperature %s serves a request at %s "
                                "(first: %s)", t, r.params.temperature, self._where.get((row["prompt"],
                                                                                         row.get("sample_index", 0))))
            out.append(Completion(text=row["completion"], finish_reason=row.get("finish_reason", "stop"),
                                  prompt_tokens=int(row.get("prompt_tokens") or 0),
                                  completion_tokens=int(row.get("completion_tokens") or 0)))
        self.stats.missing += len(missing)
        if missing and self.missing == "error":
            shown = "\n".join(f"  sample {r.sample_index}: {r.prompt[:160]!r}" for r in missing[:3])
            raise ReplayMissingError(
                f"replay: {len(missing)} of {len(requests)} requests have no stored completion in "
                f"{', '.join(map(str, self.files))} ({len(self)} completions loaded); first:\n{shown}\n"
                "Check that the benchmark, split and prompt template match the files, or set "
                "teacher.replay_missing=skip to drop these samples.")
        return out


def from_config(cfg: Any) -> ReplayTeacher:
    return ReplayTeacher(cfg.replay_files, missing=cfg.replay_missing, match=cfg.replay_match)


# --------------------------------------------------------------------------------------------------------
# Converter from Fine-tune-CoT's CompletionDataset JSON
# --------------------------------------------------------------------------------------------------------
@dataclass
class ConvertReport:
    files: int = 0
    completion_samples: int = 0
    stage1_rows: int = 0
    stage2_rows: int = 0
    without_completion: int = 0  # completion samples their run never filled in
    duplicates: int = 0  # identical (prompt, sample_index, completion) rows folded
    conflicts: int = 0  # same (prompt, sample_index), different completion: first kept
    datasets: dict[str, int] = field(default_factory=dict)


def ftcot_rows(raw: dict, source: str, report: ConvertReport) -> Iterable[dict]:
    """Replay rows from one parsed Fine-tune-CoT CompletionDataset (see the module docstring)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise ValueError(f"{source}: not a Fine-tune-CoT completion file (expected {{'metadata': ..., 'data': "
                         "{sample_index: [completion, ...]}}})")
    md = raw.get("metadata") or {}
    dataset = md.get("dataset_key", "?")
    # Their metadata records the settings of the step that created the file (stage 1 for zs_cot):
    # reasoning_temperature / reasoning_max_tokens, and temperature / max_tokens where present.
    t1, t2 = md.get("reasoning_temperature"), md.get("temperature")
    for sample_index, completions in raw["data"].items():
        if not isinstance(completions, list):
            raise ValueError(f"{source}: data[{sample_index!r}] must be a list of completion samples")
        for j, c in enumerate(completions):
            where = f"{source}: data[{sample_index}][{j}]"
            if not isinstance(c, dict):
                raise ValueError(f"{where}: expected an object")
            report.completion_samples += 1
            report.datasets[dataset] = report.datasets.get(dataset, 0) + 1
            k = c.get("completion_index", j)
            meta = {"source": f"{Path(source).name}:{sample_index}:{k}", "dataset_key": dataset,
                    "sample_index": int(sample_index), "completion_index": k, "question": c.get("question"),
                    "answer": c.get("answer")}
            has1 = isinstance(c.get("reasoning_prompt"), str) and isinstance(c.get("reasoning_completion"), str)
            has2 = isinstance(c.get("prompt"), str) and isinstance(c.get("completion"), str)
            if not (has1 or has2):
                report.without_completion += 1
                continue
            if has1:
                report.stage1_rows += 1
                yield _row(c["reasoning_prompt"], c["reasoning_completion"], k, c.get("reasoning_finish_reason"),
                           t1, {**meta, "stage": 1})
            if has2:
                report.stage2_rows += 1
                # Stage 2 is greedy and its prompt already holds sample k's rationale: sample index 0.
                yield _row(c["prompt"], c["completion"], 0 if has1 else k, c.get("finish_reason"),
                           t2, {**meta, "stage": 2 if has1 else 0})


def _row(prompt, completion, k, finish_reason, temperature, meta) -> dict:
    row = {"prompt": prompt, "completion": completion, "sample_index": int(k),
           "finish_reason": finish_reason or "stop", "meta": meta}
    if temperature is not None:
        row["temperature"] = float(temperature)
    return row


def convert_ftcot(inputs: Sequence[str | Path], output: str | Path) -> ConvertReport:
    """Convert Fine-tune-CoT completion JSON files into one replay JSONL file (written atomically)."""
    report = ConvertReport()
    rows: dict[tuple[str, int], dict] = {}
    for f in inputs:
        f = Path(f)
        try:
            raw = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}:{e.lineno}: invalid JSON ({e.msg})") from None
        report.files += 1
        for row in ftcot_rows(raw, str(f), report):
            key = (row["prompt"], row["sample_index"])
            if key in rows:
                if rows[key]["completion"] == row["completion"]:
                    report.duplicates += 1
                else:
                    report.conflicts += 1
                continue
            rows[key] = row
    write_jsonl(output, rows.values())
    return report
