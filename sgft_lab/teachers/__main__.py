"""`python -m sgft_lab.teachers convert-ftcot FILE.json [...] -o teacher.jsonl`

Converts Fine-tune-CoT's released teacher completions (``B_text-davinci-002__C_zs_cot*/D_<dataset>.json``)
into a replay file for ``teacher=replay teacher.replay_files=[teacher.jsonl]``. See ``replay.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgft_lab.teachers", description="teacher utilities")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert-ftcot", help="Fine-tune-CoT completion JSON -> replay JSONL")
    c.add_argument("inputs", nargs="+", help="their CompletionDataset files (D_<dataset>.json)")
    c.add_argument("-o", "--output", required=True, help="replay JSONL to write")
    args = ap.parse_args(argv)

    from .replay import convert_ftcot

    try:
        report = convert_ftcot(args.inputs, args.output)
    except (OSError, ValueError) as e:
        print(f"convert-ftcot: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"output": args.output, **asdict(report)}, indent=2))
    if report.conflicts:
        print(f"convert-ftcot: {report.conflicts} prompts had conflicting completions; the first was kept",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
