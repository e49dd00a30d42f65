"""The papers' published numbers (package data ``paper_numbers.json``) and how a measured cell finds its own.

A cell is matched by method, student (family and size), benchmark, D (diverse reasoning) and n_shot (data-size
ablation). Where a run has no published counterpart -- an embedded task, a student that is not a paper
student -- a *stand-in* may be printed instead, always marked, following the rules stored in the data file
itself (``stand_ins``): the real task an embedded generator imitates, the paper student of the same size rank.
SGFT numbers are secondary (methods.md 3.7) and are flagged so wherever they are printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

DATA_FILE = "paper_numbers.json"
DIVERSE = (
    "fine_tune_cot",
    "diverse_reasoning",
)  # one algorithm; D = 1 is Fine-tune-CoT, D > 1 diverse reasoning


@dataclass(frozen=True)
class PaperCell:
    """A published accuracy (%) and what it was matched on."""

    value: float
    table: str  # e.g. tab:performance_t5, sgft:3.7
    student: str  # the paper's student, e.g. "t5-small 60M", "curie 6.7B", "qwen2-7b -> chatglm3-6b"
    benchmark: str  # the paper's task key
    stand_in: tuple[str, ...] = ()  # which parts are stand-ins: "task", "student"
    secondary: bool = False  # from a third-party summary (SGFT)
    protocol: str = "best_test_epoch"  # how the paper chose the number (GPT-3 students: evaluated once)

    @property
    def exact(self) -> bool:
        return not self.stand_in and not self.secondary

    def describe(self) -> str:
        parts = [f"{self.table}, {self.student}, {self.benchmark}"]
        if self.stand_in:
            parts.append("stand-in " + " and ".join(self.stand_in))
        if self.secondary:
            parts.append("secondary source")
        return "; ".join(parts)


@dataclass(frozen=True)
class Record:
    table: str
    family: str
    size: str | None
    method: str
    benchmark: str
    value: float | None
    D: int | None = None  # fine_tune_cot / diverse_reasoning only
    n_shot: int | None = None  # None = all training questions


class PaperNumbers:
    """The records of ``paper_numbers.json`` with a lookup for measured cells."""

    def __init__(self, data: dict[str, Any], source: str = DATA_FILE):
        self.data, self.source = data, source
        ft = data["fine_tune_cot"]
        self.benchmarks: list[str] = list(ft["benchmarks"])
        self.labels: dict[str, str] = dict(ft["benchmark_labels"])
        self.families: dict[str, dict[str, str]] = ft["families"]
        self.diverse_d: dict[str, int] = ft["diverse_d"]
        self.student_presets: dict[str, tuple[str, str]] = {
            k: tuple(v) for k, v in data["student_presets"].items()
        }
        self.stand_ins: dict[str, Any] = data.get("stand_ins", {})
        self.records: list[Record] = []
        for tid, t in ft["tables"].items():
            for row in t["rows"]:
                for bench, v in zip(self.benchmarks, row["values"]):
                    m = row["method"]
                    d = (
                        1
                        if m == "fine_tune_cot"
                        else self.paper_d(bench)
                        if m == "diverse_reasoning"
                        else None
                    )
                    self.records.append(Record(t["label"], t["family"], row["size"], m, bench, v, D=d))
        ds = ft["ablations"]["data_size"]
        for p in ds["points"]:
            self.records.append(
                Record(
                    "methods.md 2.9 data size",
                    ds["family"],
                    ds["size"],
                    p["method"],
                    ds["benchmark"],
                    p["value"],
                    D=p["D"],
                    n_shot=p["n_shot"],
                )
            )
        self.sgft: list[dict] = [r for r in data.get("sgft", {}).get("records", [])]

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PaperNumbers":
        if path is not None:
            p = Path(path)
            return cls(_read_json(p), str(p))
        return _packaged()

    def paper_d(self, benchmark: str) -> int:
        return int(self.diverse_d.get(benchmark, self.diverse_d["default"]))

    def label(self, benchmark: str) -> str:
        return self.labels.get(benchmark, benchmark)

    def paper_student(self, student: str, student_model: str | None = None) -> tuple[str, str] | None:
        """(family, size) of a paper student, by preset name or by the checkpoint's base name."""
        for key in (student, Path(student_model or "").name):
            if key and key.lower() in self.student_presets:
                return self.student_presets[key.lower()]
        return None

    # ------------------------------------------------------------------------------------------------
    def lookup(
        self,
        *,
        method: str,
        system: str = "student",
        student: str,
        benchmark: str,
        task: str | None = None,
        student_model: str | None = None,
        embedded: bool = False,
        D: int | None = None,
        n_shot: int | None = None,
        experiment: str | None = None,
        response_model: str | None = None,
    ) -> PaperCell | None:
        """The published number for one measured cell, or a marked stand-in, or None. A run with a response
        model (guide -> response) is looked up in SGFT's records, by system."""
        if response_model is not None:
            return self._lookup_sgft(system, student_model, response_model, benchmark)
        if system != "student":
            return None
        stand_in: list[str] = []
        bench = benchmark
        if bench not in self.benchmarks:
            if not (embedded and task in self.benchmarks):
                return None
            bench, stand_in = task, ["task"]  # type: ignore[assignment]
        if method in DIVERSE:
            if D is None:
                return None
            method = "fine_tune_cot" if D == 1 else "diverse_reasoning"
        candidates: list[tuple[tuple[str, str], list[str]]] = []
        exact = self.paper_student(student, student_model)
        if exact:
            candidates.append((exact, []))
        rule = self.stand_ins.get("experiments", {}).get(experiment or "")
        if rule and embedded and not rule.get("embedded", True):
            rule = None  # data size: an embedded run's size is its n_train, not the paper's questions
        if rule:
            fam = rule["family"]
            if rule.get("size"):
                candidates.append(((fam, rule["size"]), ["student"]))
            elif not exact and student in self.stand_ins.get("embedded_students", []):
                rank = self.stand_ins["embedded_students"].index(student)
                sizes = list(self.families[fam])
                if rank < len(sizes):
                    candidates.append(((fam, sizes[rank]), ["student"]))
        for (fam, size), marks in candidates:
            for r in self.records:
                if (r.family, r.size, r.method, r.benchmark, r.n_shot) != (fam, size, method, bench, n_shot):
                    continue
                if r.D is not None and r.D != D:
                    continue  # e.g. diverse reasoning at D = 8 is not the paper's D = 64 cell
                if r.value is None:
                    return None  # the paper's '-'
                name = self.families.get(fam, {}).get(size or "", fam)
                protocol = "single evaluation" if fam == "gpt3" else "best_test_epoch"
                return PaperCell(
                    r.value, r.table, f"{name} {size}", bench, tuple(stand_in + marks), protocol=protocol
                )
        return None

    def _lookup_sgft(
        self, system: str, guide: str | None, response: str | None, benchmark: str
    ) -> PaperCell | None:
        entry = {"student": "sgft", "cot_ft_x10": "cot_ft"}.get(system, system)  # CoT-FT: ~30k CoT, ~10x SG
        g, r = _model_key(guide), _model_key(response)
        for rec in self.sgft:
            if rec["confidence"] != "medium" or rec["benchmark"] != benchmark or rec["entry"] != entry:
                continue
            if entry == "sgft" and (rec["guide"], rec["response"]) != (g, r):
                continue
            if entry != "sgft" and rec["response"] != r:
                continue
            who = f"{rec['guide']} -> {rec['response']}" if rec["guide"] else rec["response"]
            return PaperCell(
                rec["value"], "SGFT (methods.md 3.7)", who, benchmark, (), secondary=True, protocol="unknown"
            )
        return None


def _model_key(name: str | None) -> str | None:
    n = (name or "").lower()
    for key, needle in (
        ("chatglm3-6b", "chatglm3-6b"),
        ("qwen2-7b", "qwen2-7b"),
        ("llama", "meta-llama-3-8b"),
    ):
        if needle in n:
            return key
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


@lru_cache(maxsize=1)
def _packaged() -> PaperNumbers:
    ref = resources.files("sgft_lab.report").joinpath(DATA_FILE)
    try:
        data = json.loads(ref.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{ref}:{e.lineno}: not valid JSON ({e.msg})") from None
    return PaperNumbers(data, f"sgft_lab/report/{DATA_FILE}")
