"""Teacher generation throughput against the loopback OpenAI-compatible server (not a test).

Starts tests/fake_openai_server.py in its own process with an artificial latency per answer, then runs
``sgft_lab.teachers.engine.generate`` with teacher=openai at several concurrency levels on a fresh cache
each, and finally reruns the largest job on its filled cache (which must send zero requests). Request
counts are read from the server's own counters (``GET /_stats``).

    python experiments/benchmarks/teacher_throughput.py [--latency 0.05] [--concurrency 1 8 64]

Prints a Markdown table (paste into TEACHER_RESULTS.md) and, with --json, writes the raw figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sgft_lab.config import TeacherConfig  # noqa: E402
from sgft_lab.teachers import SamplingParams, build_teacher  # noqa: E402
from sgft_lab.teachers.cache import TeacherCache  # noqa: E402
from sgft_lab.teachers.engine import TeacherAccounting, generate  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_openai_server.py"), "--port", str(port),
                             "--latency", str(latency)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake server did not start")


def server_requests(root: str) -> int:
    with urllib.request.urlopen(f"{root}/_stats") as r:
        return json.load(r)["requests"]


def run_once(root: str, cache_path: Path, prompts: list[str], **teacher_kw) -> dict:
    cfg = TeacherConfig(name="openai", base_url=f"{root}/v1", model="gpt-4o-mini", **teacher_kw)
    teacher = build_teacher(cfg)
    cache = TeacherCache(cache_path)
    acc = TeacherAccounting()
    before = server_requests(root)
    t0 = time.perf_counter()
    generate(teacher, cache, prompts, SamplingParams(max_tokens=64), accounting=acc, stage="bench", progress=False)
    wall = time.perf_counter() - t0
    cache.close()
    s = acc.stage("bench")
    return {"endpoint": cfg.endpoint, "concurrency": cfg.concurrency, "prompts_per_call": cfg.prompts_per_call,
            "samples": len(prompts), "server_requests": server_requests(root) - before, "wall_s": wall,
            "samples_per_s": len(prompts) / wall, "cache_hits": s.cache_hits, "teacher_calls": s.teacher_calls,
            "cost_usd": s.cost_usd, "cache_saved_usd": s.cache_saved_usd}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    import openai

    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "nproc": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "openai": openai.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.05, help="seconds the server waits before each answer")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=4.0, help="target length of each run at the ideal rate")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import openai  # noqa: F401 - import once before timing (it takes ~1.5 s)

    load_before = os.getloadavg()[0]
    proc, root = start_server(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for c in args.concurrency:
                n = max(20, int(args.seconds * c / args.latency))  # ideal rate = c / latency
                prompts = [f"Q: benchmark question {c}-{i}\nA: Let's think step by step." for i in range(n)]
                rows.append(run_once(root, tmp / f"c{c}.sqlite", prompts, concurrency=c))
                print(rows[-1], file=sys.stderr)
            c = max(args.concurrency)
            n = rows[-1]["samples"]
            prompts = [f"Q: benchmark question {c}-{i}\nA: Let's think step by step." for i in range(n)]
            cached = run_once(root, tmp / f"c{c}.sqlite", prompts, concurrency=c)
            cached["rerun"] = True
            print(cached, file=sys.stderr)
            # Fine-tune-CoT's batching: 20 prompts per completions request.
            n20 = max(20, int(args.seconds * 8 * 20 / args.latency / 4))
            prompts = [f"Q: batched question {i}\nA: Let's think step by step." for i in range(n20)]
            batched = run_once(root, tmp / "batched.sqlite", prompts, concurrency=8, endpoint="completions",
                               prompts_per_call=20)
            print(batched, file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    info = machine()
    info["loadavg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"\n{info['date']}, nproc={info['nproc']}, {info['cpu']}, Python {info['python']}, openai {info['openai']}, "
          f"server latency {args.latency * 1000:g} ms, 1-min load average before/after "
          f"{info['loadavg_1min_before_after']}\n")
    print("| run | endpoint | concurrency | prompts/request | samples | server requests | wall s | samples/s | "
          "ideal samples/s | cost USD (gpt-4o-mini price) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows + [cached, batched]:
        ideal = "-" if r.get("rerun") else f"{r['concurrency'] * r['prompts_per_call'] / args.latency:.0f}"
        name = "cached rerun" if r.get("rerun") else "fresh cache"
        print(f"| {name} | {r['endpoint']} | {r['concurrency']} | {r['prompts_per_call']} | {r['samples']} | "
              f"{r['server_requests']} | {r['wall_s']:.2f} | {r['samples_per_s']:.1f} | {ideal} | "
              f"{r['cost_usd']:.6f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "latency_s": args.latency, "rows": rows,
                                         "cached_rerun": cached, "batched": batched}, indent=2))


if __name__ == "__main__":
    main()
