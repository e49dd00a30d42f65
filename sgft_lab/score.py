"""Re-score a predictions JSONL with the Fine-tune-CoT evaluator (sgft_lab.answers).

    python -m sgft_lab.score --benchmark gsm8k --template ft_cot_token [--prefix P] [--rule strict] FILE.jsonl

``--rule official`` (default) is Fine-tune-CoT's evaluator with every quirk; ``--rule strict`` reads the text
after the answer prefix and compares numbers as numbers, choices as standalone letters, yes/no as words
(answers.score_strict). Each row needs ``completion`` and ``answer`` (gold as stored). Writes
FILE.scored.jsonl (the rows plus ``extracted``, ``correct``, ``contains_answer``, ``correct_format``), prints
the accuracy and, as the last line, a JSON summary. A bad row -> one-line error naming file, line and field,
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sgft_lab.answers import FROM_TEMPLATE, RULES, TASKS, TEMPLATES, accuracy, resolve_prefix, score, score_strict
from sgft_lab.io import write_jsonl

REQUIRED_FIELDS = ("completion", "answer")


class RowError(ValueError):
    """A row that cannot be scored; the message names file, line and field."""


def scored_path(path: Path) -> Path:
    """FILE.jsonl -> FILE.scored.jsonl (other names get ``.scored.jsonl`` appended)."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + ".scored.jsonl")


def score_rows(path: Path, task: str, template: str, prefix: Any = FROM_TEMPLATE,
               rule: str = "official") -> list[dict[str, Any]]:
    """Read ``path`` and return its rows with the four score fields of ``rule`` added."""
    scorer = score_strict if rule == "strict" else score
    out = []
    with open(path, encoding="utf-8") as f:
        # Own loop rather than io.iter_jsonl: errors must carry the line number of the row.
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RowError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise RowError(f"{where}: row is not a JSON object")
            for name in REQUIRED_FIELDS:
                if name not in row:
                    raise RowError(f"{where}: missing field '{name}'")
                if not isinstance(row[name], str):
                    raise RowError(f"{where}: field '{name}' must be a string, got {row[name]!r}")
            try:
                s = scorer(task, template, row["completion"], row["answer"], prefix=prefix)
            except ValueError as e:
                raise RowError(f"{where}: field 'answer': {e}") from None
            out.append({**row, **asdict(s)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sgft_lab.score", description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", required=True, choices=TASKS, help="Fine-tune-CoT task key")
    parser.add_argument("--template", required=True, choices=TEMPLATES, help="fixes the answer prefix")
    parser.add_argument("--prefix", default=None, help="override the template's answer prefix")
    parser.add_argument("--rule", default="official", choices=RULES,
                        help="official: Fine-tune-CoT's evaluator (default); strict: numbers as numbers, "
                             "standalone choice letters, yes/no as words")
    parser.add_argument("file", type=Path, help="predictions JSONL with 'completion' and 'answer'")
    args = parser.parse_args(argv)

    prefix = FROM_TEMPLATE if args.prefix is None else args.prefix
    try:
        rows = score_rows(args.file, args.benchmark, args.template, prefix, args.rule)
    except (RowError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = scored_path(args.file)
    write_jsonl(out, rows)

    n, k = len(rows), sum(r["correct"] for r in rows)
    acc = accuracy(r["correct"] for r in rows)
    print(f"scored: {out}")
    print(f"accuracy: {100 * acc:.2f}% ({k}/{n})")
    summary = {
        "benchmark": args.benchmark,
        "template": args.template,
        "rule": args.rule,
        "prefix": resolve_prefix(args.template, prefix),  # the prefix actually looked for
        "n": n,
        "correct": k,
        "accuracy": acc,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
