"""A loopback OpenAI-compatible server for tests and benchmarks (standard library only).

Serves ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` and ``GET /_stats`` (the
server-side counters as JSON) on 127.0.0.1 with a deterministic answer derived from the prompt, counts
every request on the server side, and injects faults on demand:

- ``"429"``: status 429 with a ``Retry-After`` header (``retry_after_s``);
- ``"500"``: status 500;
- ``"hang"``: never answers (holds the connection until ``hang_s`` passes or the server stops, then closes it);
- ``"malformed"``: status 200 with a body that is not JSON.

Faults come from a script (``server.script(["429", "500"])``: the next requests, in arrival order) or at
random (``fault_rate``, seeded), or per prompt (``fail_prompts``), or for a while: ``down("500", 2.0)``
answers every completion request with that fault for the next 2 s (``down("500")``: until ``up()``), as a
server that is restarting or down. Requests seen carry their ``Authorization`` header and query
parameters in ``stats.auth`` / ``stats.queries``. Use it as a context manager::

    with FakeOpenAIServer(latency_s=0.05, fault_rate=0.3) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x")

From a shell (e.g. to run ``python -m sgft_lab teacher=openai`` against it)::

    python tests/fake_openai_server.py --port 8011 --latency 0.05 [--fault-rate 0.3] [--responder mod:func]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Sequence
from urllib.parse import parse_qsl, urlsplit

FAULTS = ("429", "500", "hang", "malformed")

# responder(prompt, request_body) -> completion text
Responder = Callable[[str, dict], str]


def echo_responder(prompt: str, body: dict) -> str:
    """Deterministic text from the prompt (and the seed when sampling, so samples k differ)."""
    salt = f"|seed={body.get('seed')}" if float(body.get("temperature") or 0) > 0 else ""
    h = hashlib.sha256((prompt + salt).encode("utf-8")).hexdigest()
    return f" The answer is {int(h[:6], 16) % 1000}. [{h[:12]}]"


def reference_responder(examples, **reference_kw) -> Responder:
    """Answer like sgft_lab's reference teacher for these benchmark examples (so a pipeline run against the
    server has rationales the correctness filter can keep). The sample index is read back from the seed
    that teacher=openai sends at T > 0 (``seed * 1_000_003 + k``)."""
    from sgft_lab.teachers.base import Request, SamplingParams
    from sgft_lab.teachers.reference import ReferenceTeacher

    teacher = ReferenceTeacher(examples, **reference_kw)
    lock = threading.Lock()

    def respond(prompt: str, body: dict) -> str:
        params = SamplingParams(temperature=float(body.get("temperature") or 0.0),
                                max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 128),
                                top_p=float(body.get("top_p") or 1.0))
        k = int(body.get("seed") or 0) % 1_000_003
        with lock:
            return teacher.complete([Request(prompt, params, k)])[0].text

    return respond


@dataclass
class ServerStats:
    requests: int = 0  # every request received on a completion endpoint
    outcomes: Counter = field(default_factory=Counter)  # ok | 429 | 500 | hang | malformed | 401
    ok_prompts: Counter = field(default_factory=Counter)  # prompt -> successful answers sent
    log: list = field(default_factory=list)  # (arrival time, path, outcome, prompts)
    auth: Counter = field(default_factory=Counter)  # Authorization header -> requests that carried it
    queries: list = field(default_factory=list)  # query parameters of each completion request (dicts)

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    @property
    def answered_prompts(self) -> int:
        """Prompts answered successfully (a batched completions request counts each of its prompts)."""
        return sum(self.ok_prompts.values())


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default listen backlog (5) drops connections under 64 concurrent clients
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):  # a client that went away (timeout, kill) is normal here
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    def __init__(self, *, latency_s: float = 0.0, fault_rate: float = 0.0, fault_kinds: Sequence[str] = FAULTS,
                 seed: int = 0, retry_after_s: float = 0.01, hang_s: float = 60.0, api_key: str | None = None,
                 responder: Responder = echo_responder, fail_prompts: dict[str, list[str]] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        unknown = set(fault_kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULTS}")
        self.latency_s, self.fault_rate, self.fault_kinds = latency_s, fault_rate, tuple(fault_kinds)
        self.retry_after_s, self.hang_s, self.api_key, self.responder = retry_after_s, hang_s, api_key, responder
        self.fail_prompts = {k: list(v) for k, v in (fail_prompts or {}).items()}  # prompt -> faults to inject
        self._rng = random.Random(seed)
        self._script: list[str] = []
        self._down: tuple[str, float] | None = None  # (fault, until time.monotonic()) while "down"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._active = 0  # requests being handled now
        self.stats = ServerStats()
        self._httpd = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- fault control -------------------------------------------------------------------------------
    def script(self, faults: Sequence[str]) -> None:
        """Inject these faults into the next requests, in arrival order ("ok" passes one through)."""
        with self._lock:
            self._script.extend(faults)

    def down(self, fault: str = "500", seconds: float | None = None) -> None:
        """Answer every completion request with ``fault`` for ``seconds`` from now (None: until ``up()``)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self._lock:
            self._down = (fault, float("inf") if seconds is None else time.monotonic() + seconds)

    def up(self) -> None:
        with self._lock:
            self._down = None

    def wait_idle(self, timeout: float = 10.0, settle_s: float = 0.1) -> bool:
        """Wait until no request has been in progress for ``settle_s`` (e.g. after killing a client)."""
        deadline, quiet_since = time.time() + timeout, None
        while time.time() < deadline:
            with self._lock:
                busy = self._active > 0
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.time()
            elif time.time() - quiet_since >= settle_s:
                return True
            time.sleep(0.01)
        return False

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = ServerStats()

    def _next_fault(self, prompts: list[str]) -> str | None:
        with self._lock:
            if self._down is not None:
                if time.monotonic() < self._down[1]:
                    return self._down[0]
                self._down = None
            for p in prompts:
                if self.fail_prompts.get(p):
                    return self.fail_prompts[p].pop(0)
            if self._script:
                f = self._script.pop(0)
                return None if f == "ok" else f
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _record(self, path: str, outcome: str, prompts: list[str]) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.outcomes[outcome] += 1
            self.stats.log.append((time.time(), path, outcome, prompts))
            if outcome == "ok":
                self.stats.ok_prompts.update(prompts)

    # --- HTTP ----------------------------------------------------------------------------------------
    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # else headers and body leave in two packets, ~40 ms apart

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
                self._send(status, json.dumps(obj).encode("utf-8"), headers)

            def do_GET(self):
                path = urlsplit(self.path).path.rstrip("/")
                if path.endswith("/_stats"):  # server-side counters (benchmarks)
                    with server._lock:
                        st = server.stats
                        self._json(200, {"requests": st.requests, "outcomes": dict(st.outcomes),
                                         "answered_prompts": st.answered_prompts})
                elif path.endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                with server._lock:
                    server._active += 1
                try:
                    self._post()
                finally:
                    with server._lock:
                        server._active -= 1

            def _post(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                    assert isinstance(body, dict) and ("messages" in body or "prompt" in body)
                except (ValueError, AssertionError):  # e.g. a client killed half-way through sending
                    self._json(400, {"error": {"message": "invalid request body", "type": "invalid_request"}})
                    return
                url = urlsplit(self.path)
                path = url.path.rstrip("/")
                with server._lock:
                    server.stats.auth[self.headers.get("Authorization") or ""] += 1
                    server.stats.queries.append(dict(parse_qsl(url.query, keep_blank_values=True)))
                if path.endswith("/chat/completions"):
                    msgs = body.get("messages") or []
                    users = [m for m in msgs if m.get("role") == "user"]
                    content = users[-1]["content"] if users else ""
                    if isinstance(content, list):
                        content = "".join(part.get("text", "") for part in content)
                    prompts, kind = [content], "chat"
                elif path.endswith("/completions"):
                    p = body.get("prompt", "")
                    prompts, kind = ([p] if isinstance(p, str) else list(p)), "completions"
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                if server.api_key is not None:
                    got = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    if got != server.api_key:
                        server._record(path, "401", prompts)
                        # Like real servers, echo (part of) the key back: clients must not log it raw.
                        self._json(401, {"error": {"message": f"Incorrect API key provided: {got}",
                                                   "type": "invalid_request_error", "code": "invalid_api_key"}})
                        return
                fault = server._next_fault(prompts)
                if server.latency_s:
                    time.sleep(server.latency_s)
                if fault == "429":
                    server._record(path, "429", prompts)
                    self._json(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                               "code": "rate_limit_exceeded"}},
                               {"Retry-After": f"{server.retry_after_s:g}"})
                elif fault == "500":
                    server._record(path, "500", prompts)
                    self._json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
                elif fault == "hang":
                    server._record(path, "hang", prompts)
                    server._stopping.wait(server.hang_s)
                    self.close_connection = True  # drop it without an answer
                elif fault == "malformed":
                    server._record(path, "malformed", prompts)
                    self._send(200, b'{"id": "cmpl-x", "choices": [{"text": "trunc')
                else:
                    server._record(path, "ok", prompts)
                    self._json(200, server._answer(kind, body, prompts))

        return Handler

    def _answer(self, kind: str, body: dict, prompts: list[str]) -> dict:
        n = int(body.get("n") or 1)
        choices, pt, ct = [], 0, 0
        for i, p in enumerate(prompts):
            pt += len(p.split())
            for j in range(n):
                text = self.responder(p, body)
                ct += len(text.split())
                idx = i * n + j
                if kind == "chat":
                    choices.append({"index": idx, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop", "logprobs": None})
                else:
                    choices.append({"index": idx, "text": text, "finish_reason": "stop", "logprobs": None})
        return {"id": f"fake-{kind}", "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": body.get("model", "fake-model"), "choices": choices,
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--retry-after", type=float, default=0.05)
    ap.add_argument("--hang", type=float, default=60.0)
    ap.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    ap.add_argument("--responder", default=None, help="module:function(prompt, body) -> text")
    args = ap.parse_args(argv)
    responder = echo_responder
    if args.responder:
        mod, fn = args.responder.split(":")
        responder = getattr(importlib.import_module(mod), fn)
    srv = FakeOpenAIServer(port=args.port, latency_s=args.latency, fault_rate=args.fault_rate,
                           retry_after_s=args.retry_after, hang_s=args.hang, api_key=args.api_key,
                           responder=responder).start()
    print(f"fake OpenAI server on {srv.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
