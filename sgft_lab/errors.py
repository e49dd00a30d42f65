"""The project's own error kinds: expected failures that end a run with one line and status 2.

``python -m sgft_lab`` (and the small CLIs) print ``sgft_lab: <message>`` for these and exit 2; any other
exception is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of these too.
Each kind subclasses ValueError so callers that caught ValueError before still do.
"""

from __future__ import annotations


class SgftError(ValueError):
    """An expected failure with a message that says what to change (never a bug)."""

    kind = "error"


class ConfigError(SgftError):
    """A config value or key is wrong; the message names the key and what is allowed."""

    kind = "config"


class DataError(SgftError):
    """A benchmark, split or data file is missing or malformed; the message names the file (and line)."""

    kind = "data"


class DataFileMissing(DataError, FileNotFoundError):
    """A data file (or its folder) does not exist; the message names it and how to point sgft_lab at it."""


class TeacherError(SgftError):
    """The teacher stage cannot complete (a server down, a replay file lacking prompts ...)."""

    kind = "teacher"


class FilterError(SgftError):
    """A filter kept nothing to train on; the message gives the counts and the commonest reasons."""

    kind = "filter"


class CacheError(SgftError):
    """The teacher cache cannot be read; the message names the file and the command that repairs it."""

    kind = "cache"


class CheckpointError(SgftError):
    """A checkpoint or saved stage artifact cannot be used to resume; the message says what to delete."""

    kind = "checkpoint"


class RunDirBusy(SgftError):
    """Another live process holds the run directory."""

    kind = "lock"
