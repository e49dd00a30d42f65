"""teacher=replay and the converter from Fine-tune-CoT's released teacher completions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sgft_lab.config import TeacherConfig
from sgft_lab.data.formats import zs_cot_stage1, zs_cot_stage2
from sgft_lab.io import read_jsonl, write_jsonl
from sgft_lab.teachers import SamplingParams, build_teacher
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import TeacherAccounting, generate
from sgft_lab.teachers.replay import ReplayMissingError, convert_ftcot

REPO = Path(__file__).resolve().parents[1]

QUESTIONS = {0: ("Tom has 3 apples and buys 2 more. How many apples does he have?", "5"),
             1: ("A box holds 4 pens. How many pens are in 3 boxes?", "12"),
             2: ("Sara had 10 cents and spent 7. How many cents are left?", "3")}


def ftcot_file(path: Path, *, diverse: bool) -> Path:
    """A small file in Fine-tune-CoT's CompletionDataset format (src/data/completion_dataset.py)."""
    data = {}
    for i, (q, a) in QUESTIONS.items():
        samples = []
        for j in range(2 if diverse else 1):
            rp = f"Q: {q}\nA: Let's think step by step."
            rc = f" Step {j}: compute it. The result is {a}."
            sample = {"sample_index": i, "completion_index": j, "question": q, "answer": a,
                      "reasoning_prompt": rp, "reasoning_completion": rc, "reasoning_finish_reason": "stop"}
            if i != 2:  # question 2: their run never filled in stage 2
                sample.update(prompt=f"{rp}{rc}\nTherefore, the answer is", completion=f" {a}.",
                              finish_reason="stop")
            samples.append(sample)
        data[str(i)] = samples
    md = {"dataset_key": "multiarith", "base_model": "text-davinci-002", "completion_key": "zs_cot",
          "prediction_template": "zs_cot", "reasoning_temperature": 0.7 if diverse else 0.0,
          "reasoning_max_tokens": 128}
    path.write_text(json.dumps({"metadata": md, "data": data}, indent=4))
    return path


def two_stage(teacher, cache, questions, n, temperature):
    """What fine_tune_cot.teacher_rationales does: stage 1 (n samples), then stage 2 greedy."""
    acc = TeacherAccounting()
    s1 = [zs_cot_stage1(q) for q in questions]
    rat = generate(teacher, cache, s1, SamplingParams(temperature=temperature, max_tokens=128, n=n),
                   accounting=acc, stage="rationale", progress=False)
    s2 = [zs_cot_stage2(p, c.text) for p, cs in zip(s1, rat) for c in cs]
    ans = generate(teacher, cache, s2, SamplingParams(temperature=0.0, max_tokens=128), accounting=acc,
                   stage="answer", progress=False)
    return rat, ans, acc


def test_convert_then_replay_reproduces_both_stages(tmp_path):
    out = tmp_path / "teacher.jsonl"
    rep = convert_ftcot([ftcot_file(tmp_path / "D_multiarith.json", diverse=True)], out)
    assert (rep.completion_samples, rep.stage1_rows, rep.stage2_rows) == (6, 6, 4)
    rows = read_jsonl(out)
    assert {r["sample_index"] for r in rows if r["meta"]["stage"] == 1} == {0, 1}
    assert all(r["sample_index"] == 0 for r in rows if r["meta"]["stage"] == 2)
    assert all(r["temperature"] == 0.7 for r in rows if r["meta"]["stage"] == 1)

    teacher = build_teacher(TeacherConfig(name="replay", replay_files=[str(out)]))
    cache = TeacherCache(tmp_path / "cache.sqlite")
    qs = [QUESTIONS[i][0] for i in (0, 1)]
    rat, ans, acc = two_stage(teacher, cache, qs, n=2, temperature=0.7)
    assert [[c.text for c in cs] for cs in rat] == [[" Step 0: compute it. The result is 5.",
                                                     " Step 1: compute it. The result is 5."],
                                                    [" Step 0: compute it. The result is 12.",
                                                     " Step 1: compute it. The result is 12."]]
    assert [a[0].text for a in ans] == [" 5.", " 5.", " 12.", " 12."]
    assert acc.stage("rationale").teacher_calls == 4 and acc.stage("answer").teacher_calls == 4
    assert len(cache) == 0  # replay is its own cache
    assert acc.total().requests_sent == 2 and acc.total().cost_usd == 0


def test_missing_prompt_errors_clearly_or_is_skipped(tmp_path):
    out = tmp_path / "teacher.jsonl"
    convert_ftcot([ftcot_file(tmp_path / "D.json", diverse=False)], out)
    cache = TeacherCache(tmp_path / "cache.sqlite")
    teacher = build_teacher(TeacherConfig(name="replay", replay_files=[str(out)]))
    with pytest.raises(ReplayMissingError, match=r"(?s)1 of 1 requests.*How many pens.*replay_missing=skip"):
        generate(teacher, cache, [zs_cot_stage1("How many pens?")], SamplingParams(), progress=False)
    # Question 2 has a rationale but no stage-2 answer: skip yields an empty, flagged completion.
    skip = build_teacher(TeacherConfig(name="replay", replay_files=[str(out)], replay_missing="skip"))
    rat, ans, _ = two_stage(skip, cache, [QUESTIONS[2][0], QUESTIONS[0][0]], n=1, temperature=0.0)
    assert rat[0][0].text.endswith("3.") and ans[0][0].finish_reason == "missing" and ans[0][0].text == ""
    assert ans[1][0].text == " 5." and skip.stats.missing == 1


def test_greedy_request_for_any_sample_and_normalized_match(tmp_path):
    f = tmp_path / "r.jsonl"
    write_jsonl(f, [{"prompt": "Q: two  spaces\nA:", "completion": " yes"}])
    t = build_teacher(TeacherConfig(name="replay", replay_files=[str(f)]))
    cache = TeacherCache(tmp_path / "c.sqlite")
    out = generate(t, cache, ["Q: two spaces A: "], SamplingParams(n=3), progress=False)  # greedy, k = 0..2
    assert [c.text for c in out[0]] == [" yes"] * 3 and t.stats.normalized == 1 and t.stats.greedy_any_sample == 2
    exact = build_teacher(TeacherConfig(name="replay", replay_files=[str(f)], replay_match="exact"))
    with pytest.raises(ReplayMissingError):
        generate(exact, cache, ["Q: two spaces A: "], SamplingParams(), progress=False)
    with pytest.raises(ReplayMissingError):  # sampled requests need their own sample index
        generate(t, cache, ["Q: two  spaces\nA:"], SamplingParams(n=2, temperature=0.7), progress=False)


def test_bad_replay_files_name_file_line_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field `completion`"):
        build_teacher(TeacherConfig(name="replay", replay_files=[str(f)]))
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "other"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*different completion at .*bad.jsonl:1"):
        build_teacher(TeacherConfig(name="replay", replay_files=[str(f)]))
    f.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        build_teacher(TeacherConfig(name="replay", replay_files=[str(f)]))
    with pytest.raises(FileNotFoundError, match="replay_files"):
        build_teacher(TeacherConfig(name="replay", replay_files=[str(tmp_path / "nope.jsonl")]))
    with pytest.raises(ValueError, match="replay_files"):
        build_teacher(TeacherConfig(name="replay"))


def test_converter_cli(tmp_path):
    src = ftcot_file(tmp_path / "D_multiarith.json", diverse=False)
    out = tmp_path / "out.jsonl"
    p = subprocess.run([sys.executable, "-m", "sgft_lab.teachers", "convert-ftcot", str(src), "-o", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["stage1_rows"] == 3 and report["stage2_rows"] == 2 and len(read_jsonl(out)) == 5
    bad = tmp_path / "bad.json"
    bad.write_text('{"metadata": {}, "data": []}')
    p = subprocess.run([sys.executable, "-m", "sgft_lab.teachers", "convert-ftcot", str(bad), "-o", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a Fine-tune-CoT completion file" in p.stderr
