"""The one generation engine every teacher backend runs through.

``generate`` expands prompts x samples into requests, serves what the cache holds, sends the rest to the
backend, stores each answer in the cache the moment it arrives, and keeps the run's accounting per stage.

Two paths, one contract:

- **Synchronous backends** (reference, hf, vllm, replay) implement ``complete(requests)``; the engine
  sends them batches of ``batch_size`` and commits each batch in one transaction.
- **Async backends** (openai) implement ``async acomplete(requests) -> list[Completion]``; the engine runs
  them under asyncio with a concurrency limit, request and token rate limits (token buckets), a
  per-request timeout, and retries with exponential backoff and jitter on ``TransientError`` (429, which
  also pauses every sender for the server's ``Retry-After``, 5xx, timeouts, malformed answers).
  ``PermanentError`` (and anything a backend raises that is not a ``TransientError``) stops at once. A
  request is sent again only if it failed; every answer received is committed before the next is
  awaited, so after a kill -9 a rerun sends nothing already stored.

Teacher faults (async backends): a request that fails ``policy.max_retries + 1`` times in a row does not
end the stage. It is set aside, the stage goes on, and at its end the set-aside requests get
**end-of-stage passes**, each after a pause of ``backoff_delay(max_retries + idle)`` (the backoff sequence
continued, i.e. 1/2..1 x ``backoff_max_s`` at the defaults; ``idle``: passes in a row that answered nothing)
and each giving every request again up to ``max_retries + 1`` attempts with the usual backoff. Bounds:

- passes go on while the previous one answered something, and stop after ``policy.retry_passes``
  (default 3) passes in a row that answered nothing, or after ``4 * retry_passes`` passes in all;
- a pass stops early when the server looks down: ``max(8, concurrency)`` requests in a row exhausted their
  attempts and at least ``STALL_ATTEMPTS`` (32) attempts in a row failed, no answer in between. The rest of
  that pass is not sent (it waits for the next pass), so a dead server costs about one round of
  ``concurrency`` requests per pass, not one per request.

So a stage completes at any fault rate that lets requests through, and rides out an outage of about
``(1 + retry_passes)`` x one request's retry time + the pauses: at the defaults (max_retries=8, backoff
0.5 s doubling to 60 s) ~93 s + 3 x (~45 s + ~93 s) ~= 8.5 min for a server failing fast (500, refused
connections); a server that hangs adds ``(max_retries + 1) x request_timeout_s`` per pass. Only then does
it fail, with :class:`GenerationError` -- a ``sgft_lab.errors.TeacherError``, so one line and exit 2 --
naming how many requests failed and, per error kind, the count of failed attempts and the last message.
Every answer that did arrive is committed as it arrived, so a rerun sends only what is missing; a key
set aside stays claimed (see below) until the stage ends, so no other caller asks for it meanwhile.

Identical requests (same cache key) are sent once: duplicates within a call are folded, and a key in
flight in another ``generate`` of this process (another thread or task) is awaited, not sent.

A backend exposes its settings as attributes the engine reads: ``identity`` (the cache namespace),
``policy`` (:class:`RequestPolicy`), ``price`` (:class:`~.pricing.Price` or None), ``cacheable`` (False
for replay: nothing to save), ``batch_size`` (preferred batch for synchronous backends); async backends
may add ``async astart()`` (one-off setup, run before any timed request) and ``async aclose()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from .base import Completion, Request, SamplingParams, Teacher, request_key
from .cache import TeacherCache
from .errors import GenerationError, MalformedResponse, PermanentError, TransientError
from .pricing import Price
from .secrets import redact_text

log = logging.getLogger("sgft_lab.teachers")


# --------------------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------------------
@dataclass
class StageStats:
    """One stage's teacher traffic. ``samples == cache_hits + teacher_calls + deduplicated``."""

    samples: int = 0  # completions asked for (prompts x n)
    cache_hits: int = 0  # served by the cache
    teacher_calls: int = 0  # completions obtained from the backend in this run (not served by the cache)
    deduplicated: int = 0  # served by an identical request of this call or one in flight elsewhere
    requests_sent: int = 0  # backend calls attempted: HTTP requests (API) or batches (local backends)
    requests_failed: int = 0  # attempts that failed (each was retried or ended the run)
    prompt_tokens: int = 0  # tokens of the completions obtained (as the backend reports them)
    completion_tokens: int = 0
    cost_usd: float = 0.0  # what the obtained completions cost at the teacher's price
    cache_saved_usd: float = 0.0  # what the cache hits would have cost
    seconds: float = 0.0  # wall time spent in generate()
    errors: dict[str, int] = field(default_factory=dict)  # failed attempts by kind (429, 5xx, timeout, ...)

    def add(self, other: "StageStats") -> None:
        for k, v in asdict(other).items():
            if k == "errors":
                for e, n in v.items():
                    self.errors[e] = self.errors.get(e, 0) + n
            else:
                setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("cost_usd", "cache_saved_usd"):
            d[k] = round(d[k], 6)
        d["seconds"] = round(d["seconds"], 3)
        return d


@dataclass
class TeacherAccounting:
    stages: dict[str, StageStats] = field(default_factory=dict)
    teacher: str | None = None  # identity of the (last) teacher that ran
    price: Price | None = None  # its price, USD per 1M tokens (None: unknown / free)

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def total(self) -> StageStats:
        t = StageStats()
        for s in self.stages.values():
            t.add(s)
        return t

    def to_dict(self) -> dict:
        return {"total": self.total().to_dict(), "stages": {k: v.to_dict() for k, v in self.stages.items()},
                "teacher": self.teacher, "price_per_1m": self.price.to_dict() if self.price else None}

    def to_metrics(self, prefix: str = "teacher") -> dict[str, float]:
        """Flat numeric view for loggers (W&B, CSV): ``teacher/<stage>/<field>`` and ``teacher/total/...``."""
        out: dict[str, float] = {}
        for name, s in [("total", self.total()), *self.stages.items()]:
            for k, v in s.to_dict().items():
                if k == "errors":
                    out.update({f"{prefix}/{name}/errors_{e}": n for e, n in v.items()})
                else:
                    out[f"{prefix}/{name}/{k}"] = v
        return out


# --------------------------------------------------------------------------------------------------------
# Request policy: concurrency, rate limits, retries
# --------------------------------------------------------------------------------------------------------
@dataclass
class RequestPolicy:
    concurrency: int = 16  # requests in flight at once
    requests_per_minute: float | None = None  # None: unlimited
    tokens_per_minute: float | None = None  # prompt (estimated) + max_tokens per request; None: unlimited
    max_retries: int = 8  # retries per request after the first attempt
    backoff_base_s: float = 0.5  # delay before retry r is in [b*2^r/2, b*2^r] (equal jitter), capped
    backoff_max_s: float = 60.0
    timeout_s: float = 120.0  # per attempt
    prompts_per_call: int = 1  # requests sent in one backend call (completions endpoint batching)
    retry_passes: int = 3  # end-of-stage passes over requests that exhausted their retries (module doc)

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError("teacher.concurrency must be >= 1")
        if self.prompts_per_call < 1:
            raise ValueError("teacher.prompts_per_call must be >= 1")
        if self.max_retries < 0:
            raise ValueError("teacher.max_retries must be >= 0")
        if self.retry_passes < 0:
            raise ValueError("teacher.retry_passes must be >= 0")

    @property
    def stall_after(self) -> int:
        """Requests in a row that exhaust their retries, no answer between, after which a pass stops (and at
        least ``STALL_ATTEMPTS`` failed attempts in a row: with max_retries=0 eight unlucky requests are not
        an outage)."""
        return max(8, self.concurrency)


STALL_ATTEMPTS = 32  # failed attempts in a row, no answer between, before a pass may stop (module doc)


def policy_from_config(cfg: Any) -> RequestPolicy:
    """RequestPolicy from a TeacherConfig."""
    return RequestPolicy(
        concurrency=cfg.concurrency, requests_per_minute=cfg.requests_per_minute,
        tokens_per_minute=cfg.tokens_per_minute, max_retries=cfg.max_retries, backoff_base_s=cfg.backoff_base_s,
        backoff_max_s=cfg.backoff_max_s, timeout_s=cfg.request_timeout_s, prompts_per_call=cfg.prompts_per_call,
        retry_passes=getattr(cfg, "retry_passes", RequestPolicy.retry_passes))


def backoff_delay(attempt: int, policy: RequestPolicy, retry_after: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with equal jitter, never less than
    the server's Retry-After."""
    cap = min(policy.backoff_max_s, policy.backoff_base_s * (2 ** attempt))
    delay = cap / 2 + (rng or random).uniform(0, cap / 2)
    return max(delay, retry_after or 0.0)


class TokenBucket:
    """``per_minute`` units per minute, refilled continuously; holds at most one second's worth.

    ``reserve(n)`` takes n units now (the level may go negative) and returns how long the caller must wait
    before acting, so concurrent callers queue up fairly without polling.
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError("rate limits must be > 0")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.clock = clock
        self.t = clock()

    def reserve(self, amount: float) -> float:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        self.level -= amount
        return max(0.0, -self.level / self.rate)

    def refund(self, amount: float) -> None:
        """Give back (or, if negative, take) units once the real cost of a request is known."""
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests/min and tokens/min buckets plus a shared pause (a server's Retry-After)."""

    def __init__(self, policy: RequestPolicy, clock: Callable[[], float] = time.monotonic):
        self.rpm = TokenBucket(policy.requests_per_minute, clock) if policy.requests_per_minute else None
        self.tpm = TokenBucket(policy.tokens_per_minute, clock) if policy.tokens_per_minute else None
        self.clock = clock
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    async def acquire(self, tokens: int) -> None:
        while (wait := self.paused_until - self.clock()) > 0:
            await asyncio.sleep(wait)
        wait = max(self.rpm.reserve(1) if self.rpm else 0.0, self.tpm.reserve(tokens) if self.tpm else 0.0)
        if wait > 0:
            await asyncio.sleep(wait)

    def settle(self, estimated: int, actual: int) -> None:
        if self.tpm and actual > 0:
            self.tpm.refund(estimated - actual)


def estimate_tokens(req: Request) -> int:
    """Rough token budget of a request for the tokens/min limit: ~4 characters per prompt token."""
    return len(req.prompt) // 4 + 1 + req.params.max_tokens


# --------------------------------------------------------------------------------------------------------
# Identical requests in flight across generate() calls of this process
# --------------------------------------------------------------------------------------------------------
class _InFlight:
    """key -> Future of the Completion being fetched by some generate() call (any thread, any loop)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.futures: dict[str, tuple[concurrent.futures.Future, str]] = {}

    def claim(self, keys: list[str], cache_path: str) -> tuple[list[str], dict[str, tuple]]:
        """Split keys into those this caller sends (registered now) and those another caller is sending."""
        owned, waiting = [], {}
        with self.lock:
            for k in keys:
                if k in self.futures:
                    waiting[k] = self.futures[k]
                else:
                    self.futures[k] = (concurrent.futures.Future(), cache_path)
                    owned.append(k)
        return owned, waiting

    def resolve(self, key: str, completion: Completion | None = None, error: BaseException | None = None) -> None:
        with self.lock:
            entry = self.futures.pop(key, None)
        if entry is not None and not entry[0].done():
            if error is not None:
                entry[0].set_exception(error)
            else:
                entry[0].set_result(completion)


_IN_FLIGHT = _InFlight()


# --------------------------------------------------------------------------------------------------------
# generate()
# --------------------------------------------------------------------------------------------------------
def generate(
    teacher: Teacher,
    cache: TeacherCache,
    prompts: Sequence[str],
    params: SamplingParams,
    *,
    accounting: TeacherAccounting | None = None,
    stage: str = "generate",
    batch_size: int = 64,
    progress: bool = True,
    policy: RequestPolicy | None = None,
) -> list[list[Completion]]:
    """Return ``params.n`` completions for each prompt (sample indices 0..n-1), cached.

    ``batch_size`` is the batch of synchronous backends (a backend's own ``batch_size`` attribute wins);
    ``policy`` overrides the backend's ``policy`` for async backends.
    """
    if hasattr(teacher, "acomplete"):
        return _run_coroutine(lambda: _generate_and_close(
            teacher, cache, prompts, params, accounting=accounting, stage=stage, progress=progress, policy=policy))
    return _generate_sync(teacher, cache, prompts, params, accounting=accounting, stage=stage,
                          batch_size=getattr(teacher, "batch_size", None) or batch_size, progress=progress)


def _run_coroutine(make: Callable[[], Any]) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # Called from inside a running event loop (a notebook): run on a private loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _generate_and_close(teacher, cache, prompts, params, **kw):
    try:
        return await agenerate(teacher, cache, prompts, params, **kw)
    finally:
        aclose = getattr(teacher, "aclose", None)
        if aclose is not None:  # the loop ends with this call: close the backend's client on it
            await aclose()


class _Progress:
    """A rich progress bar with rate, ETA, running cost and retries (or nothing when disabled)."""

    def __init__(self, stage: str, total: int, enabled: bool):
        self.bar = None
        if not enabled or total == 0:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task):
                s = task.finished_speed or task.speed
                return Text(f"{s:.1f}/s" if s else "-/s", style="progress.data.speed")

        self.bar = Progress(TextColumn(f"teacher {stage}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                            TextColumn("${task.fields[cost]:.4f}"), TextColumn("retries {task.fields[retries]}"))
        self.task = self.bar.add_task(stage, total=total, cost=0.0, retries=0)
        self.bar.start()

    def update(self, advance: int, stats: StageStats, cost0: float, failed0: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, cost=stats.cost_usd - cost0,
                            retries=stats.requests_failed - failed0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _prepare(teacher, cache, prompts, params, accounting, stage):
    acc = accounting if accounting is not None else TeacherAccounting()
    stats = acc.stage(stage)
    price: Price | None = getattr(teacher, "price", None)
    acc.teacher, acc.price = teacher.identity, price
    cacheable = getattr(teacher, "cacheable", True)
    requests = [Request(p, params, k) for p in prompts for k in range(params.n)]
    keys = [request_key(teacher.identity, r) for r in requests]
    found = cache.get_many(list(dict.fromkeys(keys))) if cacheable else {}
    stats.samples += len(keys)
    hits = [k for k in keys if k in found]
    stats.cache_hits += len(hits)
    if price is not None:
        stats.cache_saved_usd += sum(price.cost(found[k].prompt_tokens, found[k].completion_tokens) for k in hits)
    missing: dict[str, Request] = {}
    for k, r in zip(keys, requests):
        if k not in found and k not in missing:
            missing[k] = r
    stats.deduplicated += len(keys) - len(hits) - len(missing)
    return stats, price, cacheable, keys, found, missing


def _account(stats: StageStats, price: Price | None, c: Completion) -> None:
    stats.teacher_calls += 1
    stats.prompt_tokens += c.prompt_tokens
    stats.completion_tokens += c.completion_tokens
    if price is not None:
        stats.cost_usd += price.cost(c.prompt_tokens, c.completion_tokens)


def _assemble(keys: list[str], found: dict[str, Completion], n: int, n_prompts: int) -> list[list[Completion]]:
    flat = [found[k] for k in keys]
    return [flat[i * n : (i + 1) * n] for i in range(n_prompts)]


def _generate_sync(teacher, cache, prompts, params, *, accounting, stage, batch_size, progress):
    t0 = time.perf_counter()
    stats, price, cacheable, keys, found, missing = _prepare(teacher, cache, prompts, params, accounting, stage)
    cost0, failed0 = stats.cost_usd, stats.requests_failed
    bar = _Progress(stage, len(missing), progress)
    try:
        items = list(missing.items())
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            stats.requests_sent += 1
            try:
                outs = teacher.complete([r for _, r in chunk])
                if len(outs) != len(chunk):
                    raise GenerationError(
                        f"teacher {teacher.identity} returned {len(outs)} completions for {len(chunk)} requests")
            except BaseException:
                stats.requests_failed += 1
                raise
            if cacheable:
                cache.put_many([(k, teacher.identity, r.prompt, r.params.key_dict(), r.sample_index, c)
                                for (k, r), c in zip(chunk, outs)])
            for (k, _), c in zip(chunk, outs):
                found[k] = c
                _account(stats, price, c)
            bar.update(len(chunk), stats, cost0, failed0)
    finally:
        bar.close()
        stats.seconds += time.perf_counter() - t0
    return _assemble(keys, found, params.n, len(prompts))


async def agenerate(
    teacher: Teacher,
    cache: TeacherCache,
    prompts: Sequence[str],
    params: SamplingParams,
    *,
    accounting: TeacherAccounting | None = None,
    stage: str = "generate",
    progress: bool = True,
    policy: RequestPolicy | None = None,
) -> list[list[Completion]]:
    """``generate`` for an async backend, awaitable from a running event loop."""
    t0 = time.perf_counter()
    stats, price, cacheable, keys, found, missing = _prepare(teacher, cache, prompts, params, accounting, stage)
    policy = policy or getattr(teacher, "policy", None) or RequestPolicy()
    sender = _Sender(teacher, cache, policy, stats, price, cacheable, found, stage)
    sender.bar = _Progress(stage, len(missing), progress)
    cache_path = str(getattr(cache, "path", id(cache)))
    pending = dict(missing)
    astart = getattr(teacher, "astart", None)
    try:
        if pending and astart is not None:
            await astart()  # slow one-off setup (imports, client) outside the per-request timeout
        while pending:
            owned_keys, waiting = _IN_FLIGHT.claim(list(pending), cache_path)
            try:
                owned = {k: pending[k] for k in owned_keys}
                # A key another call stored between our cache read and the claim is a hit, not a request.
                late = cache.get_many(owned_keys) if cacheable and owned_keys else {}
                for k, c in late.items():
                    found[k] = c
                    stats.cache_hits += 1
                    _IN_FLIGHT.resolve(k, c)
                    del owned[k]
                sender.advance(len(late))
                results = await asyncio.gather(sender.run(owned), sender.await_others(waiting, pending),
                                               return_exceptions=True)
                if not isinstance(results[0], BaseException):
                    try:  # the requests that exhausted their retries: end-of-stage passes
                        await sender.finish()
                    except BaseException as e:  # noqa: BLE001 - raised below, after the claims are released
                        results[0] = e
            finally:  # never leave a claimed key unresolved (others would wait on it forever)
                for k in owned_keys:
                    if k not in found:
                        _IN_FLIGHT.resolve(k, error=GenerationError("the request was not completed"))
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            pending = results[1]  # keys whose sender elsewhere failed: send them ourselves
    finally:
        sender.bar.close()
        stats.seconds += time.perf_counter() - t0
        if stats.requests_failed > sender.failed0:
            log.info("teacher %s (%s): %d failed attempts were retried; errors so far: %s",
                     redact_text(teacher.identity), stage, stats.requests_failed - sender.failed0, stats.errors)
    return _assemble(keys, found, params.n, len(prompts))


class _Sender:
    """Sends owned requests in chunks through ``policy.concurrency`` workers, with retries; chunks that
    exhaust their retries are set aside for the end-of-stage passes (``finish``)."""

    def __init__(self, teacher, cache, policy: RequestPolicy, stats: StageStats, price, cacheable, found,
                 stage: str = "generate"):
        self.teacher, self.cache, self.policy, self.stats = teacher, cache, policy, stats
        self.price, self.cacheable, self.found, self.stage = price, cacheable, found, stage
        self.limiter = RateLimiter(policy)
        self.rng = random.Random()
        self.bar: _Progress | None = None
        self.cost0, self.failed0 = stats.cost_usd, stats.requests_failed
        self.errors0 = dict(stats.errors)
        self.deferred: list[list[tuple[str, Request]]] = []  # chunks that exhausted their retries (or unsent)
        self.unsent = 0  # of those, chunks a stalled pass did not send
        self.last_error: dict[str, str] = {}  # error kind -> its last message
        self.streak = 0  # chunks in a row that exhausted their retries, no answer between
        self.failed_streak = 0  # attempts in a row that failed, no answer between
        self.owned = 0  # requests this sender was given
        self.passes = self.idle_passes = 0  # end-of-stage passes made, and those in a row that answered nothing

    def advance(self, n: int) -> None:
        if n and self.bar is not None:
            self.bar.update(n, self.stats, self.cost0, self.failed0)

    async def run(self, owned: dict[str, Request]) -> None:
        """The main pass."""
        self.owned += len(owned)
        await self._pass(_chunks(list(owned.items()), self.policy.prompts_per_call))

    async def _pass(self, chunks: list[list[tuple[str, Request]]]) -> None:
        """Send ``chunks``; those that exhaust their retries, and those left when the pass stalls, go to
        ``deferred``. A permanent error stops the pass and is raised."""
        queue = deque(chunks)
        errors: list[BaseException] = []
        stall = self.policy.stall_after
        self.streak = self.failed_streak = 0

        def stalled() -> bool:
            return self.streak >= stall and self.failed_streak >= STALL_ATTEMPTS

        async def worker():
            while queue and not errors and not stalled():
                chunk = queue.popleft()
                try:
                    ok = await self._send(chunk)
                except BaseException as e:  # noqa: BLE001 - stop taking work; let others finish theirs
                    errors.append(e)
                    for k, _ in chunk:
                        _IN_FLIGHT.resolve(k, error=e)
                    continue
                if ok:
                    self.streak = self.failed_streak = 0
                else:
                    self.streak += 1
                    self.deferred.append(chunk)

        await asyncio.gather(*(worker() for _ in range(min(self.policy.concurrency, len(chunks)))))
        if errors:
            raise errors[0]
        if queue:
            self.unsent = len(queue)
            log.warning("teacher %s (%s): %d requests in a row failed %d times with no answer between; the "
                        "%d not yet sent wait for the end-of-stage passes (last errors: %s)",
                        redact_text(self.teacher.identity), self.stage, self.streak, self.policy.max_retries + 1,
                        sum(len(c) for c in queue), self._last_errors())
            self.deferred.extend(queue)
        else:
            self.unsent = 0

    async def finish(self) -> None:
        """End-of-stage passes over the deferred chunks: while the last pass answered some, and until
        ``retry_passes`` passes in a row answer none (at most ``4 * retry_passes`` in all); then raises
        GenerationError if some still fail."""
        p = self.policy
        self.passes = self.idle_passes = 0
        while self.deferred and self.idle_passes < p.retry_passes and self.passes < 4 * p.retry_passes:
            chunks, self.deferred = self.deferred, []
            before = sum(len(c) for c in chunks)
            self.passes += 1
            delay = backoff_delay(p.max_retries + self.idle_passes, p, None, self.rng)
            log.warning("teacher %s (%s): %d request(s) still unanswered after %d attempts each; end-of-stage "
                        "pass %d in %.1f s (last errors: %s)", redact_text(self.teacher.identity), self.stage,
                        before, p.max_retries + 1, self.passes, delay, self._last_errors())
            await asyncio.sleep(delay)
            await self._pass(chunks)
            answered = before - sum(len(c) for c in self.deferred)
            self.idle_passes = 0 if answered else self.idle_passes + 1
        if self.deferred:
            raise GenerationError(self._failure())

    def _last_errors(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.last_error.items()) or "none"

    def _failure(self) -> str:
        p = self.policy
        n_failed = sum(len(c) for c in self.deferred)
        unsent = sum(len(c) for c in self.deferred[len(self.deferred) - self.unsent:]) if self.unsent else 0
        counts = {k: v - self.errors0.get(k, 0) for k, v in self.stats.errors.items() if v > self.errors0.get(k, 0)}
        kinds = ", ".join(f"{k} x{counts.get(k, 0)} (last: {msg})" for k, msg in self.last_error.items())
        n = self.passes
        msg = (f"teacher {self.teacher.identity} ({self.stage}): {n_failed} of {self.owned} requests still failed "
               f"after {1 + n} pass{'es' if n else ''} of up to {p.max_retries + 1} attempts each (teacher.max_retries="
               f"{p.max_retries}; {n} end-of-stage pass{'es' if n != 1 else ''}, the last {self.idle_passes} "
               f"answering none)"
               + (f", {unsent} of them not sent in the last pass (every request before them failed)" if unsent else "")
               + f"; {self.owned - n_failed} answers of this stage are stored in the cache, a rerun sends "
               f"only the missing ones; failed attempts by kind: {kinds or 'none'}")
        return redact_text(" ".join(msg.split()))

    async def await_others(self, waiting: dict[str, tuple], pending: dict[str, Request]) -> dict[str, Request]:
        retry: dict[str, Request] = {}
        for k, (fut, their_cache) in waiting.items():
            try:
                c = await asyncio.wrap_future(fut)
            except Exception:  # noqa: BLE001 - the other call failed; this one sends it itself
                retry[k] = pending[k]
                continue
            self.found[k] = c
            self.stats.deduplicated += 1
            if self.cacheable and their_cache != str(getattr(self.cache, "path", id(self.cache))):
                r = pending[k]
                self.cache.put(k, self.teacher.identity, r.prompt, r.params.key_dict(), r.sample_index, c)
            self.advance(1)
        return retry

    async def _send(self, chunk: list[tuple[str, Request]]) -> bool:
        """Send one chunk with up to ``max_retries`` retries: True once its answers are stored, False if every
        attempt failed transiently; a permanent failure raises."""
        reqs = [r for _, r in chunk]
        est = sum(estimate_tokens(r) for r in reqs)
        p, ident = self.policy, self.teacher.identity
        for attempt in range(p.max_retries + 1):
            await self.limiter.acquire(est)
            self.stats.requests_sent += 1
            try:
                outs = await asyncio.wait_for(self.teacher.acomplete(reqs), p.timeout_s)
                if not isinstance(outs, list) or len(outs) != len(reqs) or \
                        not all(isinstance(c, Completion) for c in outs):
                    raise MalformedResponse(f"expected {len(reqs)} completions, got {outs!r:.200}")
            except asyncio.TimeoutError:
                err = TransientError("timeout", f"no answer within {p.timeout_s:g} s")
            except TransientError as e:
                err = e
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except BaseException as e:
                self.stats.requests_failed += 1
                kind = "permanent" if isinstance(e, PermanentError) else type(e).__name__
                self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
                if isinstance(e, PermanentError):
                    raise GenerationError(redact_text(f"teacher {ident}: {e}")) from e
                raise  # a bug in the backend keeps its type and traceback
            else:
                self._store(chunk, outs)
                self.limiter.settle(est, sum(c.prompt_tokens + c.completion_tokens for c in outs))
                return True
            self.stats.requests_failed += 1
            self.stats.errors[err.kind] = self.stats.errors.get(err.kind, 0) + 1
            text = str(err)
            self.last_error[err.kind] = _one_line(text[len(err.kind) + 2:] if text.startswith(f"{err.kind}: ")
                                                  else text)
            self.failed_streak += 1
            self.advance(0)
            if attempt == p.max_retries:
                log.debug("teacher %s: a request failed %d times (teacher.max_retries=%d); last error: %s; it is "
                          "tried again at the end of the stage", redact_text(ident), attempt + 1, p.max_retries,
                          redact_text(str(err)))
                return False
            if err.retry_after:
                self.limiter.pause(err.retry_after)
            delay = backoff_delay(attempt, p, err.retry_after, self.rng)
            log.debug("teacher %s: %s; retry %d/%d in %.2f s", redact_text(ident), redact_text(str(err)),
                      attempt + 1, p.max_retries, delay)
            await asyncio.sleep(delay)
        return False

    def _store(self, chunk: list[tuple[str, Request]], outs: list[Completion]) -> None:
        ident = self.teacher.identity
        if self.cacheable:
            self.cache.put_many([(k, ident, r.prompt, r.params.key_dict(), r.sample_index, c)
                                 for (k, r), c in zip(chunk, outs)])
        for (k, _), c in zip(chunk, outs):
            self.found[k] = c
            _account(self.stats, self.price, c)
            _IN_FLIGHT.resolve(k, c)
        self.advance(len(chunk))


def _one_line(text: str, limit: int = 160) -> str:
    """A message as one short line (servers answer with multi-line bodies), secrets in URLs masked."""
    text = redact_text(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: list[tuple[str, Request]], size: int) -> list[list[tuple[str, Request]]]:
    """Consecutive chunks of at most ``size`` requests; a chunk never mixes sample indices, so a backend
    can send one seed per call."""
    out: list[list[tuple[str, Request]]] = []
    by_index: dict[int, list[tuple[str, Request]]] = {}
    for item in items:
        by_index.setdefault(item[1].sample_index, []).append(item)
    for group in by_index.values():
        out.extend(group[i : i + size] for i in range(0, len(group), size))
    return out
