"""The one-call GPU benchmark (issue 15): student_throughput.py --quick and gpu_quick.sh, on CPU.

The GPU figures themselves need a GPU; these tests check that the quick plan measures what the targets need,
that its estimate fits one short device call, that the budget guard skips instead of overrunning and still
writes bench.jsonl and bench.md, and that gpu_quick.sh installs wheels from a folder in the checkout (or says
clearly that they are missing).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

BENCH = REPO / "experiments" / "benchmarks" / "student_throughput.py"
SCRIPT = REPO / "experiments" / "benchmarks" / "gpu_quick.sh"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("student_throughput_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(r: dict) -> tuple:
    if r["part"] == "decode":
        return ("decode", r["shape"], None, None, None, None)
    return (r["part"], r["shape"], r.get("mode"), r.get("stack"), r.get("batch"), r.get("max_len"))


# ------------------------------------------------------------------------------------------------------
# The plan and its estimate (no torch work)
# ------------------------------------------------------------------------------------------------------
def test_quick_plan_measures_every_target_and_fits_one_device_call(bench):
    args = bench.parse_args(["--quick"])
    plan = bench.build_plan(args)
    keys = [_key(i) for i in plan]
    for shape in ("qwen2.5-0.5b", "llama-3.2-1b"):
        for mode in ("qlora", "lora"):
            for stack in ("plain", "sgft"):
                assert ("train", shape, mode, stack, 8, 512) in keys
        assert ("decode", shape, None, None, None, None) in keys
    assert ("train", "qwen2.5-0.5b", "qlora", "sgft", 16, 1024) in keys  # the memory target
    assert ("train", "llama-3.2-1b", "qlora", "sgft", 16, 1024) not in keys
    # the plain stack at 16x1024 (expected out of memory) goes last: the first thing the budget guard drops
    assert keys[-1] == ("train", "qwen2.5-0.5b", "qlora", "plain", 16, 1024) and plan[-1]["expected"]
    assert (args.warmup, args.steps, args.decode_new, args.decode_batch) == (2, 8, 128, 64)
    # under 8 minutes on one H100 by estimate, inside the default budget
    estimate = bench.plan_estimate_s(plan, args)
    assert estimate <= args.budget_s == bench.QUICK_BUDGET_S < 8 * 60
    # the full plan is unchanged: no budget, 30 timed steps, both batch shapes for every mode
    full = bench.parse_args([])
    assert (full.budget_s, full.steps, full.warmup, full.decode_new) == (0.0, 30, 5, 256)
    assert len(bench.build_plan(full)) == 2 * (2 * 2 * 2 + 1)
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--plan"], capture_output=True, text=True,
                       check=True, timeout=60)
    assert p.stdout.count("\n| ") == len(plan) + 2 and f"| {estimate:.1f} |" in p.stdout
    # filters still apply to the quick plan (a rerun of one part)
    only = bench.build_plan(bench.parse_args(["--quick", "--part", "decode"]))
    assert [i["part"] for i in only] == ["decode", "decode"]


def test_target_verdicts(bench):
    plan = bench.build_plan(bench.parse_args(["--quick", "--shapes", "qwen2.5-0.5b"]))
    base = {"shape": "qwen2.5-0.5b", "part": "train", "mode": "qlora"}
    rows = [
        {**base, "stack": "plain", "batch": 8, "max_len": 512, "status": "ok", "real_tok_s": 10_000.0,
         "peak_gib": 20.0},
        {**base, "stack": "sgft", "gc": "auto", "batch": 8, "max_len": 512, "status": "ok",
         "real_tok_s": 25_000.0, "peak_gib": 11.0},
        {**base, "stack": "sgft", "gc": "auto", "batch": 16, "max_len": 1024, "status": "ok",
         "real_tok_s": 30_000.0, "peak_gib": 41.0},
        {"part": "decode", "shape": "qwen2.5-0.5b", "status": "ok", "batch": 64, "eager_tok_s": 800.0,
         "static_tok_s": 16_000.0, "rows": 64, "rows_identical": 60, "fp32_rows_identical": 64,
         "fp32_new_tokens": 32},
        {**base, "stack": "plain", "batch": 16, "max_len": 1024, "status": "out of memory", "peak_gib": 79.2},
    ]
    got = {(t[:8], c): v for t, c, f, v in bench.targets(rows, plan, bench.memory_case(bench.parse_args([])),
                                                         on_gpu=True)}
    assert got[("QLoRA >=", "qwen2.5-0.5b 8x512 (gc auto)")] == "met"  # 2.5x at 0.55x
    assert got[("QLoRA >=", "qwen2.5-0.5b 16x1024 (gc auto)")].startswith("not measured (plain stack out of")
    assert got[("QLoRA 16", "qwen2.5-0.5b qlora 16x1024 sgft_lab")] == "missed"  # 41 GiB > 40
    assert got[("decoding", "qwen2.5-0.5b batch 64")] == "met"  # 20x, fp32 identical
    # missed ratio, differing fp32 outputs, a skipped measurement
    rows[1] = {**rows[1], "peak_gib": 13.0}
    rows[3] = {**rows[3], "fp32_rows_identical": 63}
    rows[2] = {k: v for k, v in rows[2].items() if k in (*base, "stack", "gc", "batch", "max_len")}
    rows[2]["status"] = "skipped: budget"
    got = {(t[:8], c): v for t, c, f, v in bench.targets(rows, plan, bench.memory_case(bench.parse_args([])),
                                                         on_gpu=True)}
    assert got[("QLoRA >=", "qwen2.5-0.5b 8x512 (gc auto)")] == "missed"  # 0.65x memory
    assert got[("QLoRA 16", "qwen2.5-0.5b qlora 16x1024 sgft_lab")] == "not measured (skipped: budget)"
    assert got[("decoding", "qwen2.5-0.5b batch 64")] == "missed"
    # nothing run yet; and a CPU run never claims a GPU target
    assert all(v.startswith("not measured") for *_, v in bench.targets([], plan, ("qwen2.5-0.5b", 16, 1024),
                                                                       on_gpu=True))
    assert all(v.startswith("not measured") for *_, v in bench.targets(rows, plan, ("qwen2.5-0.5b", 16, 1024),
                                                                       on_gpu=False))


# ------------------------------------------------------------------------------------------------------
# CPU runs
# ------------------------------------------------------------------------------------------------------
def test_quick_tiny_run_writes_jsonl_and_markdown(tmp_path, bench):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(BENCH), "--tiny", "--quick", "--out-dir", str(out)],
                       capture_output=True, text=True, check=False, timeout=300, cwd=tmp_path,
                       env={**os.environ, **OFFLINE})
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(out / "bench.jsonl")
    plan = bench.build_plan(bench.parse_args(["--tiny", "--quick"]))
    assert [_key(r) for r in rows] == [_key(i) for i in plan]  # one row per planned measurement, in order
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    train = {(r["mode"], r["stack"], r["batch"]): r for r in rows if r["part"] == "train"}
    for mode in ("qlora", "lora"):  # QLoRA (bitsandbytes nf4) runs on CPU too
        plain, sgft = train[(mode, "plain", 4)], train[(mode, "sgft", 4)]
        assert plain["real_tokens"] == sgft["real_tokens"] > 0  # the same samples on both sides
        assert sgft["chunked_loss"] and sgft["padding_fraction"] < plain["padding_fraction"]
    assert train[("qlora", "sgft", 8)]["gradient_checkpointing"]  # the memory case (tiny: 8x128)
    (dec,) = [r for r in rows if r["part"] == "decode"]
    assert dec["fp32_rows_identical"] == dec["rows_identical"] == dec["rows"] == 4
    for r in rows:  # per-measurement wall clock, and what RESULTS.md needs in every line
        assert r["elapsed_s"] > 0 and r["started_s"] > 0 and r["est_s"] > 0
    # the guard's estimates are calibrated in-run: each scaled by measured / estimated of the part's last one
    last: dict[str, float] = {}
    for r in rows:
        assert r["est_scale"] == pytest.approx(last.get(r["part"], 1.0), abs=0.011)
        assert r["est_s"] == pytest.approx(bench.EST_TINY_S * r["est_scale"], abs=0.06)
        last[r["part"]] = min(3.0, max(0.5, r["elapsed_s"] / bench.EST_TINY_S))
    for r in rows:
        assert r["date"] and "--quick" in r["command"] and r["device"] and r["torch"]
    md = (out / "bench.md").read_text()
    for needle in ("## Targets", "QLoRA >= 2.0x plain real tok/s at <= 0.6x plain peak memory",
                   "within 40 GiB", "decoding >= 10x eager generate", "not measured (CPU run",
                   "vs plain tok/s", "identical rows (fp32)", "## Phases", "- Device:", "- Command:",
                   "- Libraries:", "transformers", "Run: finished", "7 ok"):
        assert needle in md, needle
    assert "| sgft |" in p.stdout and "## Targets" in p.stdout


def _fake_wheel(folder: Path) -> None:
    name, dist = "sgft_fake_wheel", "sgft_fake_wheel-0.1.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{dist}/METADATA": "Metadata-Version: 2.1\nName: sgft-fake-wheel\nVersion: 0.1\n",
             f"{dist}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                               "Tag: py3-none-any\n")}
    files[f"{dist}/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{dist}/RECORD,,\n"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / f"{name}-0.1-py3-none-any.whl", "w") as z:
        for k, v in files.items():
            z.writestr(k, v)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is absent")
def test_gpu_quick_sh_installs_wheels_and_the_budget_guard_skips(tmp_path):
    wheels, site, out = tmp_path / "wheels", tmp_path / "site", tmp_path / "out"
    _fake_wheel(wheels)
    env = {**os.environ, "OUT": str(out), "GPU_QUICK_SITE": str(site), "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(SCRIPT), str(wheels), "--tiny", "--budget-s", "0.01"],
                       capture_output=True, text=True, check=False, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    assert (site / "sgft_fake_wheel.py").is_file()  # installed with pip --no-index --target
    assert {f.name for f in out.iterdir()} == {"bench.jsonl", "bench.md", "gpu_quick.log"}
    rows = _rows(out / "bench.jsonl")
    # the first measurement always runs; the rest would end past the budget: skipped, not overrun
    assert rows[0]["status"] == "ok" and len(rows) == 7
    assert all(r["status"] == "skipped: budget" for r in rows[1:])
    assert "--quick" in rows[0]["command"] and "--budget-s 0.01" in rows[0]["command"]
    md = (out / "bench.md").read_text()
    assert "1 ok, 6 skipped: budget" in md and "not measured (skipped: budget)" in md
    log = (out / "gpu_quick.log").read_text()
    assert "installing 1 wheels" in p.stdout and "torch" in log and "## Targets" in log


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is absent")
def test_gpu_quick_sh_says_clearly_when_the_wheels_are_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        p = subprocess.run(["bash", str(SCRIPT), str(folder)], capture_output=True, text=True, check=False,
                           timeout=60, env={**os.environ, "OUT": str(tmp_path / "out")})
        assert p.returncode == 2
        assert "no wheels in" in p.stderr and "cp -r ../shared/gpu-wheels .gpu-wheels" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing ran
