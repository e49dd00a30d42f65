"""teacher=openai against a loopback OpenAI-compatible server with injected faults (tests/fake_openai_server.py)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from sgft_lab.config import Config, TeacherConfig, redact
from sgft_lab.errors import TeacherError
from sgft_lab.io import write_json
from sgft_lab.teachers import SamplingParams, build_teacher
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import TeacherAccounting, generate
from sgft_lab.teachers.errors import GenerationError
from sgft_lab.teachers.secrets import resolve_api_key, scrub

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-loopback-test-Zq8XK2mN4pR7tW1y"
FAST = dict(backoff_base_s=0.005, backoff_max_s=0.05, max_retries=12)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def teacher_cfg(srv, **kw) -> TeacherConfig:
    return TeacherConfig(name="openai", base_url=srv.base_url, model=kw.pop("model", "fake-model"), **{**FAST, **kw})


def run(srv, tmp_path, prompts, params, name="cache", **kw):
    teacher = build_teacher(teacher_cfg(srv, **kw))
    cache = TeacherCache(tmp_path / f"{name}.sqlite")
    acc = TeacherAccounting()
    try:
        out = generate(teacher, cache, prompts, params, accounting=acc, stage="rationale", progress=False)
    finally:
        cache.close()
    return out, acc.stage("rationale")


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_endpoints_answer_every_sample(server, tmp_path, endpoint):
    srv = server()
    prompts = [f"Q: what is {i} + {i}?\nA: Let's think step by step." for i in range(6)]
    out, s = run(srv, tmp_path, prompts, SamplingParams(n=2, temperature=0.7, max_tokens=16), endpoint=endpoint)
    texts = [[c.text for c in cs] for cs in out]
    assert all(len(set(t)) == 2 for t in texts)  # samples differ: a per-sample seed was sent at T > 0
    assert srv.stats.requests == s.requests_sent == s.teacher_calls == 12
    assert s.prompt_tokens == 2 * sum(len(p.split()) for p in prompts)
    # The same command again: all from the cache, nothing sent.
    out2, s2 = run(srv, tmp_path, prompts, SamplingParams(n=2, temperature=0.7, max_tokens=16), endpoint=endpoint)
    assert out2 == out and s2.cache_hits == 12 and srv.stats.requests == 12


def test_completions_batching_sends_prompts_per_call(server, tmp_path):
    srv = server()
    prompts = [f"p{i} " * (i + 1) for i in range(10)]
    out, s = run(srv, tmp_path, prompts, SamplingParams(), endpoint="completions", prompts_per_call=4)
    assert srv.stats.requests == s.requests_sent == 3  # 4 + 4 + 2
    assert srv.stats.answered_prompts == s.teacher_calls == 10
    assert s.prompt_tokens == sum(len(p.split()) for p in prompts)  # the call's usage, split, sums back
    one, _ = run(srv, tmp_path, prompts, SamplingParams(), name="single", endpoint="completions")
    assert [c[0].text for c in out] == [c[0].text for c in one]


@pytest.mark.parametrize("endpoint,per_call", [("chat", 1), ("completions", 3)])
def test_thirty_percent_faults_complete_with_each_sample_once(server, tmp_path, endpoint, per_call):
    prompts = [f"question {i}" for i in range(30)]
    params = SamplingParams(n=2, temperature=0.7, max_tokens=8)
    clean = server()
    ref, ref_s = run(clean, tmp_path, prompts, params, name="clean", endpoint=endpoint, prompts_per_call=per_call)

    faulty = server(fault_rate=0.3, seed=7, retry_after_s=0.01)
    out, s = run(faulty, tmp_path, prompts, params, name="faulty", endpoint=endpoint, prompts_per_call=per_call,
                 request_timeout_s=1.5, concurrency=16)
    assert out == ref  # every sample present exactly once, in order, with the same answer
    assert s.teacher_calls == ref_s.teacher_calls == 60  # successful responses consumed = fault-free run
    assert s.requests_sent - s.requests_failed == ref_s.requests_sent == 60 // per_call
    failed = sum(v for k, v in faulty.stats.outcomes.items() if k != "ok")
    assert failed >= 3 and set(faulty.stats.outcomes) > {"ok"}
    assert s.requests_sent >= faulty.stats.requests and s.requests_failed >= failed
    # The server answered each prompt once, except where an answer came back after the client timed out
    # (a loaded machine; normally zero): every extra answer is matched by a timeout that was not a hang.
    late = s.errors.get("timeout", 0) - faulty.stats.outcomes["hang"]
    assert clean.stats.answered_prompts == 60
    assert 0 <= faulty.stats.answered_prompts - 60 <= per_call * late


def test_retry_after_is_honoured(server, tmp_path):
    srv = server(retry_after_s=0.3)
    srv.script(["429"])
    run(srv, tmp_path, ["x"], SamplingParams())
    (t0, _, o0, _), (t1, _, o1, _) = srv.stats.log
    assert (o0, o1) == ("429", "ok")
    assert t1 - t0 >= 0.3 * 0.95  # backoff alone would have waited ~0.005 s


def test_malformed_and_5xx_are_retried_then_give_up(server, tmp_path):
    srv = server()
    srv.script(["malformed", "500", "ok"])
    out, s = run(srv, tmp_path, ["a"], SamplingParams())
    assert s.errors == {"malformed": 1, "5xx": 1} and out[0][0].text
    srv.script(["500"] * 5)  # more than max_retries + 1: the end-of-stage pass gets it through
    out, s = run(srv, tmp_path, ["b"], SamplingParams(), name="other", max_retries=2)
    assert out[0][0].text and s.errors == {"5xx": 5} and s.requests_sent == 6
    srv.down("500")  # never recovers: the stage ends with a TeacherError once the passes are spent
    teacher = build_teacher(teacher_cfg(srv, max_retries=2))
    teacher.policy.retry_passes = 1
    with pytest.raises(TeacherError, match=r"1 of 1 requests still failed after 2 passes.*5xx x6"):
        generate(teacher, TeacherCache(tmp_path / "third.sqlite"), ["c"], SamplingParams(), progress=False)


def test_wrong_key_fails_fast_and_the_key_is_scrubbed(server, tmp_path):
    srv = server(api_key="the-right-key")
    with pytest.raises(GenerationError) as e:
        run(srv, tmp_path, ["a", "b"], SamplingParams(), concurrency=1)
    assert "401" in str(e.value) and "OPENAI_API_KEY" in str(e.value)
    assert KEY not in str(e.value) and KEY[-8:] not in str(e.value)
    assert srv.stats.requests == 1  # not retried, and nothing else sent


def test_kill_minus_9_then_rerun_repeats_no_stored_request(server, tmp_path):
    srv = server(latency_s=0.1)  # 60 prompts at concurrency 2: ~3 s, killed after ~0.6 s
    db = tmp_path / "cache.sqlite"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        from sgft_lab.config import TeacherConfig
        from sgft_lab.teachers import SamplingParams, build_teacher
        from sgft_lab.teachers.cache import TeacherCache
        from sgft_lab.teachers.engine import generate
        cfg = TeacherConfig(name="openai", base_url={srv.base_url!r}, model="fake-model", concurrency=2)
        generate(build_teacher(cfg), TeacherCache({str(db)!r}), [f"prompt {{i}}" for i in range(60)],
                 SamplingParams(max_tokens=8), progress=False)
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, str(child)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stored() -> int:
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(db) as con:
                return con.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0

    deadline = time.time() + 60
    while stored() < 12 and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.kill()  # SIGKILL: no cleanup of any kind
    _, err = p.communicate(timeout=30)
    assert p.returncode == -9, err.decode()[-2000:]

    srv.wait_idle()  # the killed client's last requests may still be in the server's hands
    with sqlite3.connect(db) as con:
        done = {r[0] for r in con.execute("SELECT prompt FROM completions")}
    assert 12 <= len(done) < 60
    n_before = len(srv.stats.log)
    out, s = run(srv, tmp_path, [f"prompt {i}" for i in range(60)], SamplingParams(max_tokens=8), concurrency=8)
    asked_again = [pr for _, _, _, prompts in srv.stats.log[n_before:] for pr in prompts]
    assert not set(asked_again) & done  # no request repeated for a stored answer
    assert sorted(asked_again) == sorted(f"prompt {i}" for i in range(60) if f"prompt {i}" not in done)
    assert s.cache_hits == len(done) and s.teacher_calls == 60 - len(done)
    assert all(len(cs) == 1 and cs[0].text for cs in out)


def test_no_api_key_anywhere_under_the_run_dir(server, tmp_path):
    """A run-like directory: config (redacted), results with accounting, logs at DEBUG, cache, progress."""
    srv = server(fault_rate=0.3, seed=3, fault_kinds=("429", "500", "malformed"), api_key=KEY)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    handler = logging.FileHandler(run_dir / "run.log")
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        cfg = Config(teacher=teacher_cfg(srv))
        write_json(run_dir / "config.json", redact(asdict(cfg)))
        teacher = build_teacher(cfg.teacher)
        logging.getLogger("sgft_lab").info("teacher %r", teacher)
        cache = TeacherCache(run_dir / "cache.sqlite")
        acc = TeacherAccounting()
        generate(teacher, cache, [f"q{i}" for i in range(20)], SamplingParams(), accounting=acc, progress=True)
        cache.close()
        write_json(run_dir / "results.json", redact({"teacher_accounting": acc.to_dict()}))
        bad = build_teacher(TeacherConfig(**{**asdict(cfg.teacher), "model": "other"}))
        bad._api_key = KEY + "-wrong"
        with pytest.raises(GenerationError) as e:
            generate(bad, TeacherCache(run_dir / "cache.sqlite"), ["z"], SamplingParams(), progress=False)
        logging.getLogger("sgft_lab").error("run failed: %s", e.value)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert {"config.json", "results.json", "run.log", "cache.sqlite"} <= {f.name for f in files}
    for f in files:
        data = f.read_bytes()
        assert KEY.encode() not in data and KEY[-8:].encode() not in data, f
    assert srv.stats.ok == 20


def test_key_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        resolve_api_key("OPENAI_API_KEY", None, "https://api.openai.com/v1")
    assert resolve_api_key("OPENAI_API_KEY", None, "http://127.0.0.1:8000/v1") == "EMPTY"
    monkeypatch.setenv("MY_KEY", "k-env")
    assert resolve_api_key("MY_KEY", None, None) == "k-env"
    f = tmp_path / "key.txt"
    f.write_text("k-file\n")
    assert resolve_api_key("MY_KEY", str(f), None) == "k-file"
    with pytest.raises(FileNotFoundError, match="api_key_file"):
        resolve_api_key("MY_KEY", str(tmp_path / "nope"), None)
    assert scrub(f"bad key {KEY} (...{KEY[-8:]})", [KEY]) == "bad key *** (...***)"


def test_build_teacher_from_config_alone(server):
    srv = server()
    t = build_teacher(TeacherConfig(name="openai", base_url=srv.base_url, model="gpt-4o-mini", concurrency=3,
                                    requests_per_minute=600, prices={"gpt-4o-mini": {"input": 1, "output": 1}}))
    assert t.policy.concurrency == 3 and t.policy.requests_per_minute == 600
    assert t.price.input_per_1m == 1 and KEY not in t.identity and KEY not in repr(t)
    with pytest.raises(ValueError, match="teacher.endpoint"):
        build_teacher(TeacherConfig(name="openai", base_url=srv.base_url, model="m", endpoint="responses"))
    with pytest.raises(ValueError, match="prompts_per_call"):
        build_teacher(TeacherConfig(name="openai", base_url=srv.base_url, model="m", prompts_per_call=2))
    with pytest.raises(ValueError, match="teacher.model"):
        build_teacher(TeacherConfig(name="openai", base_url=srv.base_url))


def test_results_accounting_serialises(server, tmp_path):
    srv = server()
    teacher = build_teacher(teacher_cfg(srv, model="gpt-4o"))
    acc = TeacherAccounting()
    cache = TeacherCache(tmp_path / "c.sqlite")
    generate(teacher, cache, ["a", "b"], SamplingParams(), accounting=acc, stage="rationale", progress=False)
    generate(teacher, cache, ["a"], SamplingParams(), accounting=acc, stage="answer", progress=False)
    d = json.loads(json.dumps(acc.to_dict()))
    assert d["total"]["teacher_calls"] == 2 and d["total"]["cache_hits"] == 1
    assert d["total"]["cost_usd"] > 0 and d["stages"]["answer"]["cache_saved_usd"] > 0
    assert d["price_per_1m"] == {"input": 2.5, "output": 10.0}
