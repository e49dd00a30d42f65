"""API keys: read from the environment or a file named in the config, never from the config itself.

The key lives only inside the client object; it is never put in a config, an identity, a cache row, a
log line or results. Error messages that a server echoes back are scrubbed with :func:`scrub`. Saved
configs go through ``sgft_lab.config.redact`` (which hides any ``*api_key*`` value someone put there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
NO_KEY = "EMPTY"  # what vLLM / Ollama expect when they run without --api-key


def resolve_api_key(api_key_env: str = "OPENAI_API_KEY", api_key_file: str | None = None,
                    base_url: str | None = None) -> str:
    """The key from ``api_key_file`` if given, else from ``$api_key_env``.

    A server on this machine (loopback base_url) may run without a key: then ``EMPTY`` is sent, as vLLM
    and Ollama expect. Anywhere else a missing key is an error naming where it was looked for.
    """
    if api_key_file:
        p = Path(api_key_file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"teacher.api_key_file: {p} does not exist")
        key = p.read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"teacher.api_key_file: {p} is empty")
        return key
    key = os.environ.get(api_key_env or "", "").strip()
    if key:
        return key
    if is_loopback(base_url):
        return NO_KEY
    raise RuntimeError(
        f"no API key: set the environment variable {api_key_env} (teacher.api_key_env names it) or point "
        f"teacher.api_key_file at a file holding the key. Keys are never read from the config itself.")


def is_loopback(base_url: str | None) -> bool:
    if not base_url:
        return False
    return (urlparse(base_url).hostname or "") in LOOPBACK_HOSTS


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret (and of its last 8+ characters) in ``text``."""
    for s in secrets:
        if not s or s == NO_KEY:
            continue
        text = text.replace(s, "***")
        if len(s) >= 16:  # servers often echo a masked key such as "sk-abc*****wxyz1234"
            text = text.replace(s[-8:], "***")
    return text
