"""Errors a backend raises so the engine knows whether to retry.

A backend maps its own failures onto these: ``TransientError`` (429, 5xx, timeouts, dropped connections,
malformed responses) is retried with backoff, then at the end of the stage (engine.py); ``PermanentError``
(bad request, wrong key, unknown model) stops the run at once. Anything else a backend raises stops the
run at once too, as the bug it is (its own type and traceback).

The engine ends a stage it cannot complete with :class:`GenerationError`, a ``sgft_lab.errors.TeacherError``
(``python -m sgft_lab`` prints it as one line and exits 2).
"""

from __future__ import annotations

from ..errors import TeacherError


class TransientError(Exception):
    """A failure worth retrying. ``kind`` names it in the accounting (e.g. "429", "5xx", "timeout")."""

    def __init__(self, kind: str, message: str = "", retry_after: float | None = None):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if any


class MalformedResponse(TransientError):
    def __init__(self, message: str = ""):
        super().__init__("malformed", message)


class PermanentError(Exception):
    """A failure that retrying cannot fix (HTTP 400/401/403/404, quota exhausted)."""


class GenerationError(TeacherError, RuntimeError):
    """Teacher generation stopped; every answer received before the failure is in the cache.

    A TeacherError (one line, exit 2) that is still a RuntimeError for callers that caught it as one."""
