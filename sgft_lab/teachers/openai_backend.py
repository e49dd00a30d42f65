"""teacher=openai: any OpenAI-compatible server through the official async client.

Works unchanged against OpenAI, ``vllm serve``, Ollama (``/v1``) and TGI (``/v1``): set ``teacher.base_url``
and ``teacher.model``; the key comes from ``$OPENAI_API_KEY`` (or the variable named by
``teacher.api_key_env``, or ``teacher.api_key_file``). A server on 127.0.0.1 may run without a key.

- ``teacher.endpoint=chat`` sends each prompt as one user message (plus ``system_prompt``) to
  ``/chat/completions``; ``completions`` sends the raw prompt to ``/completions`` (base models, and the
  way Fine-tune-CoT queried text-davinci-002).
- Batching (our choice): one request per (prompt, sample) by default, because concurrency gives the same
  throughput, a failure then costs one answer rather than 20, and every server accepts a single prompt.
  ``teacher.prompts_per_call=20`` reproduces Fine-tune-CoT's 20 prompts per completions call (n=1) where
  a requests-per-minute limit is the bottleneck; the call's token usage is split over its prompts.
- SDK retries are off (``max_retries=0``): the engine retries, so attempts are counted exactly once.
- At temperature > 0 a ``seed`` derived from (``teacher.seed``, sample index) is sent (``send_seed``), so
  servers that honour it (vLLM, TGI, Ollama; OpenAI best-effort) make sample k reproducible.
- Credentials inside ``teacher.base_url`` (``http://user:PASS@host/v1``, ``?api_key=...``, ``?token=...``)
  work and never leak: the client gets the URL without userinfo and query, the userinfo as HTTP basic auth
  (it replaces the ``Bearer`` key header, as httpx itself would do with such a URL) and the query as
  default query parameters of every request. The identity (hence the cache's ``teacher`` column and keys),
  the repr, every error message and the httpx / openai log records carry the redacted URL
  (``http://***@host/v1``, ``?api_key=***``; ``secrets.redact_url``). A URL without credentials is
  unchanged in the identity, so existing caches still hit; one with credentials gets a new identity (its
  old cache rows, keyed on the secret, just miss), the same whatever the secret's value (rotating a key
  keeps the cache).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import time
from typing import Any, Sequence

from .base import Completion, Request
from .engine import RequestPolicy, policy_from_config
from .errors import MalformedResponse, PermanentError, TransientError
from .pricing import Price, lookup_price
from .secrets import (
    install_log_redaction,
    redact_obj,
    redact_text,
    redact_url,
    resolve_api_key,
    scrub,
    url_credentials,
    url_secrets,
)

ENDPOINTS = ("chat", "completions")
# Loggers of the client stack that may print a full request URL (with its default query parameters).
_TRANSPORT_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "openai._base_client")


class OpenAITeacher:
    """An async backend: ``await acomplete(requests)`` sends one API request for the given requests."""

    cacheable = True

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, endpoint: str = "chat",
                 system_prompt: str | None = None, seed: int = 0, send_seed: bool = True,
                 max_tokens_field: str = "max_tokens", extra_body: dict | None = None,
                 policy: RequestPolicy | None = None, price: Price | None = None,
                 cache_namespace: str | None = None, key_source: str = "the API key"):
        if endpoint not in ENDPOINTS:
            raise ValueError(f"teacher.endpoint: {endpoint!r} is not one of {ENDPOINTS}")
        if not model:
            raise ValueError("teacher.model: required for teacher=openai (the server's model name)")
        self.model, self.base_url, self.endpoint = model, base_url, endpoint
        self.system_prompt, self.seed, self.send_seed = system_prompt, seed, send_seed
        self.max_tokens_field, self.extra_body = max_tokens_field, dict(extra_body or {})
        self.policy = policy or RequestPolicy()
        if endpoint == "chat" and self.policy.prompts_per_call != 1:
            raise ValueError("teacher.prompts_per_call > 1 needs teacher.endpoint=completions "
                             "(the chat API takes one conversation per request)")
        self.price, self.key_source = price, redact_text(key_source)
        self._api_key = api_key  # only ever handed to the client; never in identity, repr or messages
        self._base_url = base_url  # the real URL (credentials included): only ever handed to the client
        self.base_url = redact_url(base_url) if base_url else base_url  # what may be printed
        self._clients: dict[int, Any] = {}  # one client per event loop (httpx pools are loop-bound)
        where = redact_url(cache_namespace or (self.base_url or "https://api.openai.com/v1").rstrip("/"))
        parts = [f"openai:{endpoint}", where, model]
        if system_prompt:
            parts.append(f"system={system_prompt}")
        if send_seed:
            parts.append(f"seed={seed}")
        if self.extra_body:
            # A secret in the body (e.g. {api_key: ...}) is masked: it cannot change the answers.
            parts.append(f"extra={json.dumps(redact_obj(self.extra_body, settings=False), sort_keys=True)}")
        self.identity = "|".join(parts)

    def __repr__(self) -> str:
        return f"OpenAITeacher({self.identity!r})"

    @property
    def _secrets(self) -> list[str]:
        """Every secret value this backend holds: scrubbed from each message it raises or logs."""
        return [self._api_key, *url_secrets(self._base_url)]

    # --- client ------------------------------------------------------------------------------------
    async def astart(self) -> None:
        """Import the SDK and build this loop's client before any request is timed (importing openai takes
        seconds; inside the first requests' timeouts it would time them all out)."""
        client = self._client()
        _ = client.chat.completions if self.endpoint == "chat" else client.completions

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            from openai import AsyncOpenAI

            for name in ("httpx", "httpx2"):  # one INFO line per request otherwise; the progress bar says it all
                if logging.getLogger(name).level == logging.NOTSET:
                    logging.getLogger(name).setLevel(logging.WARNING)

            install_log_redaction(_TRANSPORT_LOGGERS, self._secrets)
            url, auth, query = url_credentials(self._base_url)
            headers = None
            if auth is not None:  # what httpx does with userinfo in a URL, without the URL carrying it
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
                headers = {"Authorization": f"Basic {token}"}
            client = AsyncOpenAI(api_key=self._api_key, base_url=url, max_retries=0, timeout=self.policy.timeout_s,
                                 default_headers=headers, default_query=query or None)
            self._clients[id(loop)] = client
        return client

    async def aclose(self) -> None:
        """Close the client of the running loop (the engine calls this when its own loop ends)."""
        client = self._clients.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.close()

    def _seed(self, req: Request) -> int | None:
        if not self.send_seed or req.params.temperature == 0:
            return None
        return (self.seed * 1_000_003 + req.sample_index) % (2**31 - 1)

    # --- one API request ---------------------------------------------------------------------------
    async def acomplete(self, requests: Sequence[Request]) -> list[Completion]:
        if not requests:
            return []
        p = requests[0].params
        if any(r.params != p for r in requests):
            raise ValueError("one API call takes requests with identical sampling parameters")
        kw: dict[str, Any] = {"model": self.model, "temperature": p.temperature, "top_p": p.top_p, "n": 1}
        if p.stop:
            kw["stop"] = list(p.stop)
        seed = self._seed(requests[0])
        if seed is not None:
            kw["seed"] = seed
        if self.extra_body:
            kw["extra_body"] = self.extra_body
        if self.endpoint == "chat" and len(requests) != 1:
            raise ValueError("the chat endpoint takes one request per call")
        client = self._client()
        try:
            if self.endpoint == "chat":
                msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + \
                       [{"role": "user", "content": requests[0].prompt}]
                kw[self.max_tokens_field] = p.max_tokens
                resp = await client.chat.completions.create(messages=msgs, **kw)
                return [_parse_chat(resp)]
            prompts = [r.prompt for r in requests]
            resp = await client.completions.create(
                prompt=prompts[0] if len(prompts) == 1 else prompts, max_tokens=p.max_tokens, **kw)
            return _parse_completions(resp, prompts)
        except (TransientError, PermanentError):
            raise
        except json.JSONDecodeError as e:
            raise MalformedResponse(f"invalid JSON from the server ({e.msg})") from None
        except Exception as e:  # noqa: BLE001 - map the SDK's errors onto the engine's
            raise self._map_error(e) from None

    def _map_error(self, e: Exception) -> Exception:
        import openai
        import pydantic

        msg = scrub(redact_text(str(e)), self._secrets)
        if isinstance(e, openai.APITimeoutError):
            return TransientError("timeout", msg)
        if isinstance(e, openai.APIConnectionError):
            return TransientError("connection", msg)
        if isinstance(e, (openai.APIResponseValidationError, pydantic.ValidationError)):
            return MalformedResponse(msg)
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            code = (e.body or {}).get("code") if isinstance(e.body, dict) else getattr(e, "code", None)
            if status == 429 and code == "insufficient_quota":
                return PermanentError(f"HTTP 429 insufficient_quota (billing): {msg}")
            if status == 429:
                return TransientError("429", msg, retry_after=_retry_after(e.response))
            if status >= 500 or status in (408, 409, 425):
                return TransientError("5xx" if status >= 500 else str(status), msg,
                                      retry_after=_retry_after(e.response))
            hint = {401: f" (check the key in {self.key_source})", 404: " (check teacher.model and "
                    "teacher.base_url; base_url usually ends in /v1)"}.get(status, "")
            return PermanentError(f"HTTP {status}: {msg}{hint}")
        if isinstance(e, (KeyError, AttributeError, TypeError, IndexError)):
            return MalformedResponse(f"{type(e).__name__}: {msg}")
        return PermanentError(f"{type(e).__name__}: {msg}")


def _retry_after(response: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), capped at 10 min."""
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return min(600.0, float(headers["retry-after-ms"]) / 1000)
        ra = headers.get("retry-after")
        if not ra:
            return None
        try:
            return min(600.0, max(0.0, float(ra)))
        except ValueError:
            when = email.utils.parsedate_to_datetime(ra)
            return min(600.0, max(0.0, when.timestamp() - time.time()))
    except (TypeError, ValueError):
        return None


def _usage(resp: Any) -> tuple[int, int]:
    u = getattr(resp, "usage", None)
    return (int(getattr(u, "prompt_tokens", 0) or 0), int(getattr(u, "completion_tokens", 0) or 0)) if u else (0, 0)


def _parse_chat(resp: Any) -> Completion:
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse(f"no choices in the chat answer: {str(resp)[:200]}")
    ch = choices[0]
    msg = getattr(ch, "message", None)
    if msg is None:
        raise MalformedResponse("a chat choice without a message")
    pt, ct = _usage(resp)
    return Completion(text=msg.content or "", finish_reason=getattr(ch, "finish_reason", None),
                      prompt_tokens=pt, completion_tokens=ct)


def _parse_completions(resp: Any, prompts: list[str]) -> list[Completion]:
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or len(choices) != len(prompts):
        got = len(choices) if isinstance(choices, list) else "no"
        raise MalformedResponse(f"{got} choices for {len(prompts)} prompts")
    choices = sorted(choices, key=lambda c: c.index if c.index is not None else 0)
    if [c.index for c in choices] != list(range(len(prompts))) and len(prompts) > 1:
        raise MalformedResponse(f"choice indices {[c.index for c in choices]} do not match the prompts")
    texts = [c.text if isinstance(c.text, str) else None for c in choices]
    if any(t is None for t in texts):
        raise MalformedResponse("a completions choice without text")
    pt, ct = _usage(resp)
    # Usage covers the whole call: split it over the prompts (by prompt / completion length).
    pts = _split(pt, [len(p) + 1 for p in prompts])
    cts = _split(ct, [len(t) + 1 for t in texts])
    return [Completion(text=t, finish_reason=c.finish_reason, prompt_tokens=a, completion_tokens=b)
            for t, c, a, b in zip(texts, choices, pts, cts)]


def _split(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to weights that sum to ``total``."""
    s = sum(weights)
    parts = [total * w // s for w in weights]
    for i in sorted(range(len(weights)), key=lambda i: -(total * weights[i] % s))[: total - sum(parts)]:
        parts[i] += 1
    return parts


def from_config(cfg: Any) -> OpenAITeacher:
    """Build from a TeacherConfig (plus the environment for the key)."""
    if cfg.endpoint not in ENDPOINTS:
        raise ValueError(f"teacher.endpoint: {cfg.endpoint!r} is not one of {ENDPOINTS}")
    key = resolve_api_key(cfg.api_key_env, cfg.api_key_file, cfg.base_url)
    return OpenAITeacher(
        cfg.model, api_key=key, base_url=cfg.base_url, endpoint=cfg.endpoint, system_prompt=cfg.system_prompt,
        seed=cfg.seed, send_seed=cfg.send_seed, max_tokens_field=cfg.max_tokens_field, extra_body=cfg.extra,
        policy=policy_from_config(cfg), price=lookup_price(cfg.model, cfg.prices),
        cache_namespace=cfg.cache_namespace,
        key_source=f"teacher.api_key_file={cfg.api_key_file}" if cfg.api_key_file else f"${cfg.api_key_env}")
