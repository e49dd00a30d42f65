"""Re-score a predictions JSONL with the Fine-tune-CoT evaluator (sgft_lab.answers).

    python -m sgft_lab.score --benchmark gsm8k --template ft_cot_token [--prefix P] [--rule strict]
                             [--split val|test] [--out PATH] FILE.jsonl

``--rule official`` (default) is Fine-tune-CoT's evaluator with every quirk; ``--rule strict`` reads the text
after the answer prefix and compares numbers as numbers, choices as standalone letters, yes/no as words
(answers.score_strict). Each row needs ``completion`` and ``answer`` (gold as stored). ``--split val|test``
scores only the rows whose ``split`` field has that value (a run's predictions/epoch_NNN.jsonl holds both;
a row without the field is an error). Writes FILE.scored.jsonl -- FILE.SPLIT.scored.jsonl with --split, or
``--out PATH`` -- (the rows plus ``extracted``, ``correct``, ``contains_answer``, ``correct_format``), prints
the accuracy and, as the last line, a JSON summary. A run's own readers take only ``epoch_NNN.jsonl`` from its
predictions folder, so a scored file written there does not disturb a later resume.

Every failure is one line ``sgft_lab.score: <message>`` on stderr and exit code 2: a bad row (invalid JSON or
UTF-8, a missing or non-string field: file, line and field), a file with no rows to score (``no rows``), an
input that cannot be read or an output that cannot be written, a bad option.

A gold answer the task cannot compare -- one that no completion could ever match under the task's rule, e.g.
``three`` or ``1e3`` for gsm8k or multiarith (compared as digit strings), ``three`` for svamp (a float), ``F`` or
``(C)`` for aqua (one letter A-E), ``Yes`` for coin_flip (stored lower-case) -- is refused for every task, with
file and line: such a row would otherwise count as wrong (the official rule for string-compared tasks) and
lower the accuracy silently, so no number is printed until the gold (or ``--benchmark``) is fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from sgft_lab.answers import (FROM_TEMPLATE, RULES, TASKS, TEMPLATES, accuracy, normalize_gold, resolve_prefix, score,
                              score_strict)
from sgft_lab.io import loads_line, write_jsonl

PROG = "sgft_lab.score"
REQUIRED_FIELDS = ("completion", "answer")
SPLITS = ("val", "test")

# What a gold answer must look like for each task's comparison (answers.py): anything else never matches.
_DIGITS = re.compile(r"-?\d+(?:\.\d+)?")  # gsm8k, multiarith: string-compared with the candidates (commas dropped)
_STRING_NUMBER = ("gsm8k", "multiarith")
_FLOAT = ("single_eq", "addsub", "svamp", "asdiv", "mawps")
_LETTERS = {"aqua": "ABCDE", "commonsense_qa": "ABCDE", "date_understanding": "ABCDEF",
            "tracking_shuffled_objects": "ABC"}
_LAST_LETTER_BAD = re.compile(r"[\s\"'.,!?;:]")  # dropped by the official rule, word breaks for the strict one


class RowError(ValueError):
    """A row that cannot be scored; the message names file, line and field."""


class ScoreError(ValueError):
    """A file-level failure (nothing to score, unreadable input, unwritable output)."""


def gold_problem(task: str, gold: str) -> str | None:
    """Why ``task`` cannot compare ``gold`` (as stored) with any completion, or None when it can."""
    if task in _STRING_NUMBER:
        if not _DIGITS.fullmatch(gold.replace(",", "")):
            return "is not a plain number (digits, an optional '-', '.' and ',')"
    elif task in _FLOAT:
        try:
            value = normalize_gold(task, gold)
        except ValueError:
            return "is not a number"
        if not math.isfinite(value):
            return "is not a finite number"
    elif task in _LETTERS:
        if len(gold) != 1 or gold not in _LETTERS[task]:
            return f"is not one choice letter {_LETTERS[task][0]}-{_LETTERS[task][-1]}"
    elif task == "strategy_qa":
        if gold.lower() not in ("yes", "no"):
            return "is not Yes or No"
    elif task == "coin_flip":
        if gold not in ("yes", "no"):
            return "is not 'yes' or 'no' (lower case, as stored)"
    elif task == "last_letter_concatenation":
        if not gold or _LAST_LETTER_BAD.search(gold):
            return "is not one word without spaces, quotes or punctuation"
    return None


def scored_path(path: Path, split: str | None = None) -> Path:
    """FILE.jsonl -> FILE.scored.jsonl, or FILE.SPLIT.scored.jsonl (other names get the suffix appended)."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + (f".{split}" if split else "") + ".scored.jsonl")


def _lines(path: Path):
    """(line number, text) of each line; bytes that are not UTF-8 -> RowError naming the line."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ScoreError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        try:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors)
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise RowError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                   f"{e.start + 1})") from None
        except OSError as e:  # e.g. a directory: reading fails, not opening
            raise ScoreError(f"{path}: cannot read ({e.strerror or e})") from None


def _parse(line: str, where: str) -> dict[str, Any]:
    row = loads_line(line, where, RowError)
    if not isinstance(row, dict):
        raise RowError(f"{where}: row is not a JSON object")
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"{where}: a string holds a lone surrogate (\\ud800-\\udfff), which UTF-8 cannot store") \
            from None
    return row


def score_rows(path: Path, task: str, template: str, prefix: Any = FROM_TEMPLATE,
               rule: str = "official", split: str | None = None) -> list[dict[str, Any]]:
    """Read ``path`` and return its rows (those of ``split`` when given) with the four score fields of ``rule``
    added. A bad row -> RowError naming file, line and field; an unreadable file -> ScoreError."""
    scorer = score_strict if rule == "strict" else score
    out = []
    for lineno, line in _lines(path):
        # Own loop rather than io.iter_jsonl: errors must carry the line number of the row.
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = _parse(line, where)
        if split is not None:
            if "split" not in row:
                raise RowError(f"{where}: missing field 'split' (--split {split} keeps the rows whose 'split' is "
                               f"{split!r}; leave --split out to score every row)")
            if row["split"] != split:
                continue
        for name in REQUIRED_FIELDS:
            if name not in row:
                raise RowError(f"{where}: missing field '{name}'")
            if not isinstance(row[name], str):
                raise RowError(f"{where}: field '{name}' must be a string, got {row[name]!r}")
        problem = gold_problem(task, row["answer"])
        if problem is not None:
            raise RowError(f"{where}: field 'answer': gold {row['answer']!r} {problem}, so task {task} can never "
                           "score it right; fix the gold or --benchmark")
        try:
            s = scorer(task, template, row["completion"], row["answer"], prefix=prefix)
        except ValueError as e:
            raise RowError(f"{where}: field 'answer': {e}") from None
        out.append({**row, **asdict(s)})
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``sgft_lab.score: ...``, status 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: {message} (see --help)\n")


def _fail(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return 2


def _split_counts(path: Path) -> str:
    """'12 rows: test 8, val 4' for the no-rows message of --split (best effort: the file parsed once already)."""
    counts: dict[str, int] = {}
    for _, line in _lines(path):
        if line.strip():
            s = str(json.loads(line).get("split"))
            counts[s] = counts.get(s, 0) + 1
    return f"{sum(counts.values())} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m sgft_lab.score", description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", required=True, choices=TASKS, help="Fine-tune-CoT task key")
    parser.add_argument("--template", required=True, choices=TEMPLATES, help="fixes the answer prefix")
    parser.add_argument("--prefix", default=None, help="override the template's answer prefix")
    parser.add_argument("--rule", default="official", choices=RULES,
                        help="official: Fine-tune-CoT's evaluator (default); strict: numbers as numbers, "
                             "standalone choice letters, yes/no as words")
    parser.add_argument("--split", default=None, choices=SPLITS,
                        help="score only the rows whose 'split' field is this (a run's predictions files)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the scored rows (default: FILE[.SPLIT].scored.jsonl beside FILE)")
    parser.add_argument("file", type=Path, help="predictions JSONL with 'completion' and 'answer'")
    args = parser.parse_args(argv)

    prefix = FROM_TEMPLATE if args.prefix is None else args.prefix
    try:
        rows = score_rows(args.file, args.benchmark, args.template, prefix, args.rule, args.split)
    except (RowError, ScoreError) as e:
        return _fail(str(e))
    if not rows:
        if args.split is None:
            return _fail(f"{args.file}: no rows to score (the file is empty or holds only blank lines)")
        return _fail(f"{args.file}: no rows with split {args.split!r} ({_split_counts(args.file)})")
    out = args.out if args.out is not None else scored_path(args.file, args.split)
    try:
        write_jsonl(out, rows)
    except OSError as e:
        return _fail(f"cannot write {out} ({e.strerror or e}); pass --out PATH to write the scored rows elsewhere")

    n, k = len(rows), sum(r["correct"] for r in rows)
    acc = accuracy(r["correct"] for r in rows)
    print(f"scored: {out}")
    print(f"accuracy: {100 * acc:.2f}% ({k}/{n})")
    summary = {
        "benchmark": args.benchmark,
        "template": args.template,
        "rule": args.rule,
        "prefix": resolve_prefix(args.template, prefix),  # the prefix actually looked for
        "split": args.split,
        "n": n,
        "correct": k,
        "accuracy": acc,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
