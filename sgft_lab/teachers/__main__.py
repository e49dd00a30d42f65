"""Teacher utilities.

``python -m sgft_lab.teachers convert-ftcot FILE.json [...] -o teacher.jsonl``
    Converts Fine-tune-CoT's released teacher completions (``B_text-davinci-002__C_zs_cot*/D_<dataset>.json``)
    into a replay file for ``teacher=replay teacher.replay_files=[teacher.jsonl]``. See ``replay.py``.

``python -m sgft_lab.teachers cache check PATH [--json]``
    Counts the rows of a teacher cache that can be read and verified, and those that cannot; exit 0 if
    healthy, 2 if not (``cache.py``).

``python -m sgft_lab.teachers cache rebuild PATH [--json]``
    Copies every readable, verified row into a fresh cache at PATH and keeps the damaged file as
    ``PATH.corrupt-<timestamp>``; run it while no run uses the cache. Exit 0 once rebuilt, 2 if PATH is
    missing.
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
    cache = sub.add_parser("cache", help="check or rebuild a teacher cache (SQLite)")
    cache_sub = cache.add_subparsers(dest="action", required=True)
    for action, text in (("check", "count readable / unreadable rows; exit 0 if healthy, 2 if not"),
                         ("rebuild", ("copy every readable row into a fresh cache; keep the old file as "
                                      "PATH.corrupt-<timestamp>"))):
        a = cache_sub.add_parser(action, help=text)
        a.add_argument("path", help="the cache file (paths.cache_dir/teacher_cache.sqlite)")
        a.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = ap.parse_args(argv)
    if args.cmd == "cache":
        return _cache(args)

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


def _cache(args) -> int:
    from .cache import check_cache, rebuild_cache

    rep = check_cache(args.path) if args.action == "check" else rebuild_cache(args.path)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        print(rep.summary())
        if args.action == "rebuild" and rep.rows_copied is not None:
            print(f"rebuilt {args.path}: {rep.rows_copied} rows copied into a fresh cache"
                  + (f"; the old file is kept as {rep.kept_as}" if rep.kept_as else ""))
        elif args.action == "check" and not rep.healthy and rep.error != "no such file":
            print(f"to keep the readable rows in a fresh cache: python -m sgft_lab.teachers cache rebuild {args.path}")
    if args.action == "check":
        return 0 if rep.healthy else 2
    return 0 if rep.rows_copied is not None else 2


if __name__ == "__main__":
    sys.exit(main())
