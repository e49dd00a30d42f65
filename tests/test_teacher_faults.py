"""Teacher faults: a request past teacher.max_retries is retried at the end of the stage, the stage completes
when the server lets requests through (or recovers), and fails -- in bounded time, with one TeacherError line
naming counts and error kinds -- only when it does not (engine.py, "Teacher faults")."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter

import pytest
from fake_openai_server import echo_responder

from sgft_lab.config import TeacherConfig
from sgft_lab.errors import TeacherError
from sgft_lab.teachers import SamplingParams, build_teacher
from sgft_lab.teachers.base import Completion
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import STALL_ATTEMPTS, RequestPolicy, TeacherAccounting, generate
from sgft_lab.teachers.errors import PermanentError, TransientError

TINY = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, "request_timeout_s": 5.0}


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # loopback: no key needed


def openai_teacher(base_url, **kw):
    return build_teacher(TeacherConfig(name="openai", base_url=base_url, model="fake-model", **{**TINY, **kw}))


PARAMS = SamplingParams(max_tokens=8)


def run(teacher, path, prompts, params=PARAMS):
    cache = TeacherCache(path)
    acc = TeacherAccounting()
    try:
        out = generate(teacher, cache, prompts, params, accounting=acc, stage="rationale", progress=False)
    finally:
        cache.close()
    return out, acc.stage("rationale")


def expected(prompt: str) -> str:
    return echo_responder(prompt, {"temperature": 0.0})


def test_fifty_percent_faults_complete_with_each_sample_once(server, tmp_path):
    """300 requests at a 50% fault rate (429 / 500 / malformed) and max_retries=4: about 1 in 32 requests
    exhausts its retries in a pass; the end-of-stage passes get them all through."""
    srv = server(fault_rate=0.5, seed=11, fault_kinds=("429", "500", "malformed"), retry_after_s=0.001)
    prompts = [f"question {i}" for i in range(300)]
    t0 = time.perf_counter()
    out, s = run(openai_teacher(srv.base_url, max_retries=4, concurrency=8), tmp_path / "c.sqlite", prompts)
    assert time.perf_counter() - t0 < 15
    assert [[c.text for c in cs] for cs in out] == [[expected(p)] for p in prompts]  # each present, in order
    assert srv.stats.ok == len(prompts) == s.teacher_calls  # server side: each answered exactly once ...
    assert set(srv.stats.ok_prompts.values()) == {1} and set(srv.stats.ok_prompts) == set(prompts)
    assert srv.stats.requests == s.requests_sent and s.requests_failed == srv.stats.requests - len(prompts)
    assert s.requests_failed > 100  # ... though about as many requests failed
    assert len(TeacherCache(tmp_path / "c.sqlite")) == len(prompts)


def test_max_retries_zero_at_fifty_percent_completes_deterministically(tmp_path):
    """max_retries=0 at 50% faults (decided by prompt and attempt, so the test is deterministic): half the
    requests are set aside in the main pass; passes go on while they answer some, and take them all."""

    class Flaky:
        identity = "flaky"
        policy = RequestPolicy(concurrency=4, max_retries=0, retry_passes=4, backoff_base_s=0.001,
                               backoff_max_s=0.002)

        def __init__(self):
            self.ok, self.attempts = Counter(), Counter()

        async def acomplete(self, reqs):
            p = reqs[0].prompt
            self.attempts[p] += 1
            if random.Random(f"{p}/{self.attempts[p]}").random() < 0.5:
                raise TransientError("5xx", "flaky")
            self.ok[p] += 1
            return [Completion(text=f"<{r.prompt}>") for r in reqs]

    t = Flaky()
    cache = TeacherCache(tmp_path / "c.sqlite")
    acc = TeacherAccounting()
    prompts = [f"p{i}" for i in range(200)]
    out = generate(t, cache, prompts, SamplingParams(), accounting=acc, progress=False)
    assert [cs[0].text for cs in out] == [f"<{p}>" for p in prompts]
    assert set(t.ok.values()) == {1} and len(t.ok) == 200 and len(cache) == 200  # each answered once
    s = acc.stage("generate")
    assert s.requests_failed == sum(t.attempts.values()) - 200 > 150
    assert max(t.attempts.values()) > 5  # some needed more than the main pass + 4 passes: progress continued


def test_server_down_ends_in_one_teacher_error_in_bounded_time(server, tmp_path):
    srv = server()
    srv.down("500")  # every completion request: HTTP 500
    prompts = [f"q{i}" for i in range(200)]
    teacher = openai_teacher(srv.base_url, max_retries=2, concurrency=8)
    t0 = time.perf_counter()
    with pytest.raises(TeacherError) as e:
        run(teacher, tmp_path / "c.sqlite", prompts)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "\n" not in msg
    assert "200 of 200 requests still failed after 4 passes of up to 3 attempts each" in msg
    assert "teacher.max_retries=2; 3 end-of-stage passes, the last 3 answering none" in msg
    assert "not sent in the last pass" in msg
    assert "5xx x" in msg and "(last: Error code: 500" in msg
    # A pass stops once max(8, concurrency) requests in a row exhausted their retries and STALL_ATTEMPTS
    # attempts in a row failed (+ the requests then in flight): far fewer than 200 prompts x 3 attempts x 4.
    passes, conc, attempts = 4, 8, 3
    stall = max(teacher.policy.stall_after, -(-STALL_ATTEMPTS // attempts))
    assert 0 < srv.stats.requests <= passes * (stall + conc) * attempts < 200 * attempts * passes / 8
    assert srv.stats.ok == 0


def test_unreachable_server_names_connection_errors(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = openai_teacher(f"http://127.0.0.1:{port}/v1", max_retries=1, concurrency=2)
    t0 = time.perf_counter()
    with pytest.raises(TeacherError, match=r"5 of 5 requests still failed .*connection x\d+ \(last: Connection error"):
        run(teacher, tmp_path / "c.sqlite", [f"q{i}" for i in range(5)])
    assert time.perf_counter() - t0 < 10


def test_server_that_recovers_completes_the_stage(server, tmp_path):
    """Down (500) for the first 0.6 s: the main pass and the first end-of-stage pass fail; a later pass,
    after the pause, finds the server back and completes the stage."""
    srv = server()
    srv.down("500", 0.6)
    prompts = [f"r{i}" for i in range(60)]
    teacher = openai_teacher(srv.base_url, max_retries=2, concurrency=4, backoff_base_s=0.05, backoff_max_s=0.4)
    t0 = time.perf_counter()
    out, s = run(teacher, tmp_path / "c.sqlite", prompts)
    assert 0.6 <= time.perf_counter() - t0 < 10
    assert [cs[0].text for cs in out] == [expected(p) for p in prompts]
    assert srv.stats.ok == 60 and set(srv.stats.ok_prompts.values()) == {1}
    assert s.errors.get("5xx", 0) >= 3 and s.teacher_calls == 60


def test_scripted_faults_first_then_recovery(server, tmp_path):
    srv = server()
    srv.script(["500"] * 30)  # the first 30 requests fail, whatever they are
    prompts = [f"s{i}" for i in range(20)]
    out, s = run(openai_teacher(srv.base_url, max_retries=1, concurrency=4), tmp_path / "c.sqlite", prompts)
    assert [cs[0].text for cs in out] == [expected(p) for p in prompts]
    assert srv.stats.ok == 20 and s.errors == {"5xx": 30}


def test_identical_requests_wait_during_end_of_stage_passes(server, tmp_path):
    """Two generate() calls in two threads ask for the same prompts while the server is down for a while:
    the keys stay claimed through the end-of-stage passes, so each prompt is answered once in all."""
    srv = server()
    srv.down("500", 0.3)
    prompts = [f"d{i}" for i in range(16)]
    teacher = openai_teacher(srv.base_url, max_retries=1, concurrency=4, backoff_base_s=0.05, backoff_max_s=0.3)
    results, errors = {}, []

    def go(name):
        try:
            results[name] = run(teacher, tmp_path / f"{name}.sqlite", prompts)[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(n,)) for n in "AB"]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert results["A"] == results["B"] and srv.stats.ok == 16 and set(srv.stats.ok_prompts.values()) == {1}
    for name in "AB":  # the waiting call stored what the other fetched in its own cache too
        assert len(TeacherCache(tmp_path / f"{name}.sqlite")) == 16


def test_permanent_error_in_an_end_of_stage_pass_stops_at_once(tmp_path):
    calls = Counter()

    class T:
        identity = "t"
        policy = RequestPolicy(concurrency=1, max_retries=0, retry_passes=3, backoff_base_s=0.001, backoff_max_s=0.002)

        async def acomplete(self, reqs):
            calls[reqs[0].prompt] += 1
            if reqs[0].prompt == "x":
                raise TransientError("5xx") if calls["x"] == 1 else PermanentError("HTTP 400: bad request")
            return [Completion(text="ok")]

    with pytest.raises(TeacherError, match="HTTP 400"):
        generate(T(), TeacherCache(tmp_path / "c.sqlite"), ["x", "y"], SamplingParams(), progress=False)
    assert calls == {"x": 2, "y": 1}


def test_retry_passes_zero_fails_after_the_main_pass(tmp_path):
    class T:
        identity = "t0"
        policy = RequestPolicy(concurrency=1, max_retries=1, retry_passes=0, backoff_base_s=0.001)

        async def acomplete(self, reqs):
            raise TransientError("timeout", "no answer")

    with pytest.raises(TeacherError, match=r"1 of 1 requests still failed after 1 pass of up to 2 attempts .*timeout x2"):
        generate(T(), TeacherCache(tmp_path / "c.sqlite"), ["x"], SamplingParams(), progress=False)


def test_request_policy_validates_retry_passes():
    with pytest.raises(ValueError, match="retry_passes"):
        RequestPolicy(retry_passes=-1)
    assert RequestPolicy(concurrency=32).stall_after == 32 and RequestPolicy(concurrency=2).stall_after == 8
