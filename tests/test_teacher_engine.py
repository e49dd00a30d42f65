"""The generation engine with in-process fake backends: caching, dedup, retries, accounting, limits."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

from sgft_lab.errors import TeacherError
from sgft_lab.teachers.base import Completion, Request, SamplingParams
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import (
    RateLimiter,
    RequestPolicy,
    StageStats,
    TeacherAccounting,
    TokenBucket,
    backoff_delay,
    generate,
)
from sgft_lab.teachers.errors import GenerationError, PermanentError, TransientError
from sgft_lab.teachers.pricing import Price, lookup_price

FAST = dict(backoff_base_s=0.001, backoff_max_s=0.01, timeout_s=2.0)


def answer(r: Request) -> Completion:
    return Completion(text=f"<{r.prompt}#{r.sample_index}>", prompt_tokens=len(r.prompt), completion_tokens=3)


class SyncTeacher:
    identity = "sync-fake"

    def __init__(self):
        self.batches: list[list[Request]] = []

    def complete(self, requests):
        self.batches.append(list(requests))
        return [answer(r) for r in requests]


class AsyncTeacher:
    """Fails according to ``plan`` (prompt -> list of exceptions to raise first); counts every call."""

    identity = "async-fake"
    price = Price(1.0, 2.0)

    def __init__(self, plan=None, delay=0.0, policy=None):
        self.plan = {k: list(v) for k, v in (plan or {}).items()}
        self.delay, self.calls, self.ok = delay, [], []
        self.policy = policy or RequestPolicy(concurrency=4, **FAST)
        self._lock = threading.Lock()

    async def acomplete(self, requests):
        with self._lock:
            self.calls.append([r.prompt for r in requests])
            faults = [self.plan[r.prompt].pop(0) for r in requests if self.plan.get(r.prompt)]
        if self.delay:
            await asyncio.sleep(self.delay)
        if faults:
            f = faults[0]
            if f == "hang":
                await asyncio.sleep(3600)
            raise f
        with self._lock:
            self.ok.extend(r.prompt for r in requests)
        return [answer(r) for r in requests]


@pytest.fixture
def cache(tmp_path):
    c = TeacherCache(tmp_path / "cache.sqlite")
    yield c
    c.close()


def test_sync_path_batches_caches_and_accounts(cache):
    t = SyncTeacher()
    acc = TeacherAccounting()
    prompts = ["a", "b", "c", "a"]
    out = generate(t, cache, prompts, SamplingParams(n=2, temperature=0.7), accounting=acc, batch_size=4,
                   progress=False)
    assert [[c.text for c in cs] for cs in out] == [[f"<{p}#0>", f"<{p}#1>"] for p in prompts]
    assert [len(b) for b in t.batches] == [4, 2]  # 6 unique requests; the repeated "a" is folded
    s = acc.stage("generate")
    assert (s.samples, s.teacher_calls, s.deduplicated, s.cache_hits, s.requests_sent) == (8, 6, 2, 0, 2)
    assert len(cache) == 6
    out2 = generate(t, cache, prompts, SamplingParams(n=2, temperature=0.7), accounting=acc, stage="again",
                    progress=False)
    assert out2 == out and len(t.batches) == 2
    assert acc.stages["again"].cache_hits == 8 and acc.total().samples == 16


def test_non_cacheable_teacher_is_not_stored(cache):
    t = SyncTeacher()
    t.cacheable = False
    generate(t, cache, ["x"], SamplingParams(), progress=False)
    generate(t, cache, ["x"], SamplingParams(), progress=False)
    assert len(cache) == 0 and len(t.batches) == 2


def test_async_retries_transient_errors_and_accounts_cost(cache):
    plan = {"p1": [TransientError("429", retry_after=0.001), TransientError("5xx")],
            "p2": [TransientError("malformed"), "hang"]}
    t = AsyncTeacher(plan, policy=RequestPolicy(concurrency=3, backoff_base_s=0.001, timeout_s=0.2))
    acc = TeacherAccounting()
    prompts = [f"p{i}" for i in range(6)]
    out = generate(t, cache, prompts, SamplingParams(), accounting=acc, progress=False)
    assert [cs[0].text for cs in out] == [f"<p{i}#0>" for i in range(6)]
    s = acc.stage("generate")
    assert sorted(t.ok) == sorted(prompts)  # each answer consumed exactly once
    assert s.teacher_calls == 6 and s.requests_sent == len(t.calls) == 10 and s.requests_failed == 4
    assert s.errors == {"429": 1, "5xx": 1, "malformed": 1, "timeout": 1}
    assert s.prompt_tokens == 12 and s.completion_tokens == 18
    assert s.cost_usd == pytest.approx((12 * 1.0 + 18 * 2.0) / 1e6)
    d = acc.to_dict()
    assert d["price_per_1m"] == {"input": 1.0, "output": 2.0} and d["teacher"] == "async-fake"
    assert d["total"]["errors"]["timeout"] == 1
    assert acc.to_metrics()["teacher/generate/teacher_calls"] == 6


def test_async_request_past_max_retries_is_retried_at_the_end_of_the_stage(cache):
    """A request that fails max_retries + 1 times is set aside, the stage goes on, and the end-of-stage
    passes get it through (10 failures: main pass 3, passes 1-2 three each, pass 3 one then the answer)."""
    t = AsyncTeacher({"bad": [TransientError("5xx")] * 10},
                     policy=RequestPolicy(concurrency=1, max_retries=2, **FAST))
    acc = TeacherAccounting()
    out = generate(t, cache, ["good1", "bad", "good2"], SamplingParams(), accounting=acc, progress=False)
    assert [cs[0].text for cs in out] == ["<good1#0>", "<bad#0>", "<good2#0>"]
    assert [c[0] for c in t.calls] == ["good1", "bad", "bad", "bad", "good2"] + ["bad"] * 8
    assert sorted(t.ok) == ["bad", "good1", "good2"] and len(cache) == 3
    assert acc.stage("generate").requests_failed == 10


def test_async_gives_up_after_the_end_of_stage_passes_keeping_what_arrived(cache):
    t = AsyncTeacher({"bad": [TransientError("5xx", "boom\nsecond line")] * 100},
                     policy=RequestPolicy(concurrency=1, max_retries=2, retry_passes=3, **FAST))
    with pytest.raises(TeacherError) as e:
        generate(t, cache, ["good1", "bad", "good2"], SamplingParams(), progress=False)
    assert isinstance(e.value, GenerationError)
    msg = str(e.value)
    assert "\n" not in msg and "1 of 3 requests still failed after 4 passes of up to 3 attempts" in msg
    assert "5xx x12 (last: boom second line)" in msg and "2 answers" in msg
    assert len(t.calls) == 2 + 3 * 4  # good1, good2, and bad 3 times in each of the 4 passes
    assert len(cache) == 2  # what arrived is stored


def test_async_permanent_error_is_not_retried(cache):
    t = AsyncTeacher({"x": [PermanentError("HTTP 401: bad key")]})
    acc = TeacherAccounting()
    with pytest.raises(GenerationError, match="401"):
        generate(t, cache, ["x"], SamplingParams(), accounting=acc, progress=False)
    assert len(t.calls) == 1 and acc.stage("generate").errors == {"permanent": 1}


def test_identical_requests_in_flight_are_sent_once(tmp_path):
    """Two generate() calls in two threads ask for the same prompts at once: each is sent once."""
    t = AsyncTeacher(delay=0.05, policy=RequestPolicy(concurrency=2, **FAST))
    prompts = [f"q{i}" for i in range(8)] * 2
    results, accs = {}, {}

    def run(name):
        c = TeacherCache(tmp_path / "shared.sqlite")
        accs[name] = TeacherAccounting()
        results[name] = generate(t, c, prompts, SamplingParams(), accounting=accs[name], progress=False)
        c.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in "AB"]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(t.ok) == sorted(set(prompts)) and len(t.calls) == 8
    assert results["A"] == results["B"]
    a, b = accs["A"].stage("generate"), accs["B"].stage("generate")
    assert a.teacher_calls + b.teacher_calls == 8
    for s in (a, b):
        assert s.samples == s.cache_hits + s.teacher_calls + s.deduplicated == 16


def test_generate_works_inside_a_running_event_loop(cache):
    t = AsyncTeacher()

    async def main():
        return generate(t, cache, ["a", "b"], SamplingParams(), progress=False)

    out = asyncio.run(main())
    assert [cs[0].text for cs in out] == ["<a#0>", "<b#0>"]


def test_prompts_per_call_chunks_never_mix_sample_indices(cache):
    t = AsyncTeacher(policy=RequestPolicy(concurrency=1, prompts_per_call=3, **FAST))
    generate(t, cache, ["a", "b", "c", "d"], SamplingParams(n=2, temperature=1.0), progress=False)
    assert sorted(len(c) for c in t.calls) == [1, 1, 3, 3]
    assert len(cache) == 8


def test_backoff_is_exponential_jittered_capped_and_honours_retry_after():
    p = RequestPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(0)
    for attempt, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8), (4, 8)]):
        d = backoff_delay(attempt, p, None, rng)
        assert lo <= d <= hi
    assert backoff_delay(0, p, retry_after=30.0, rng=rng) == 30.0


def test_token_bucket_paces_and_refunds():
    now = [0.0]
    b = TokenBucket(60, clock=lambda: now[0])  # 1 per second, burst of 1
    assert b.reserve(1) == 0.0
    assert b.reserve(1) == pytest.approx(1.0)
    assert b.reserve(1) == pytest.approx(2.0)
    now[0] = 10.0
    assert b.reserve(1) == 0.0  # refilled, capped at one second's worth
    t = TokenBucket(6000, clock=lambda: now[0])  # 100 tokens/s
    assert t.reserve(300) == pytest.approx(2.0)  # a big request waits for its tokens
    t.refund(200)  # it used 100, not 300
    assert t.reserve(100) == pytest.approx(1.0)


def test_rate_limiter_pause_blocks_all_senders():
    now = [0.0]
    lim = RateLimiter(RequestPolicy(), clock=lambda: now[0])
    lim.pause(5.0)
    lim.pause(1.0)  # a shorter pause never shortens a longer one
    assert lim.paused_until == 5.0


def test_stage_stats_add_merges_errors():
    a, b = StageStats(teacher_calls=1, errors={"429": 2}), StageStats(teacher_calls=2, errors={"429": 1, "5xx": 1})
    a.add(b)
    assert a.teacher_calls == 3 and a.errors == {"429": 3, "5xx": 1}


def test_price_lookup_prefix_override_unknown():
    assert lookup_price("gpt-4o-mini-2024-07-18") == lookup_price("gpt-4o-mini")
    assert lookup_price("gpt-4o-2024-08-06") == lookup_price("gpt-4o") != lookup_price("gpt-4o-mini")
    assert lookup_price("my-llama", {"my-llama": {"input": 0.1, "output": 0.2}}) == Price(0.1, 0.2)
    assert lookup_price("my-llama") is None and lookup_price(None) is None
    with pytest.raises(ValueError, match="teacher.prices.m"):
        lookup_price("m", {"m": 3})
    assert Price(2.0, 8.0).cost(1_000_000, 500_000) == pytest.approx(6.0)


def test_progress_bar_runs(cache, capsys):
    t = AsyncTeacher()
    generate(t, cache, ["a", "b", "c"], SamplingParams(), progress=True)
    generate(SyncTeacher(), cache, ["a", "b"], SamplingParams(), progress=True)
    err_out = capsys.readouterr()
    assert "teacher generate" in err_out.out + err_out.err


def test_accounting_is_timed(cache):
    t = AsyncTeacher(delay=0.01)
    acc = TeacherAccounting()
    t0 = time.perf_counter()
    generate(t, cache, ["a"], SamplingParams(), accounting=acc, progress=False)
    assert 0 < acc.stage("generate").seconds <= time.perf_counter() - t0
